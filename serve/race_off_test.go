//go:build !race

package serve

// raceEnabled: built with -race, whose stack guard is larger.
const raceEnabled = false
