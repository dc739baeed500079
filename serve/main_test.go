package serve

import (
	"os"
	"testing"
	"time"
)

// TestMain runs the tests, or, started by slowListener, its fanotify
// listener (rawopen_slow_test.go).
func TestMain(m *testing.M) {
	if dir := os.Getenv(fanotifyDirEnv); dir != "" {
		wait, _ := time.ParseDuration(os.Getenv(fanotifyWaitEnv))
		fanotifyListener(dir, wait)
		os.Exit(0)
	}
	os.Exit(m.Run())
}
