package daemon

import "time"

// clock is the supervisor's time: production uses the system's, tests a
// fake one they advance by hand, so that timeouts, backoffs and drain
// deadlines are tested in milliseconds.
type clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed, unless
	// the returned timer is stopped first.
	AfterFunc(d time.Duration, f func()) stopper
}

// stopper is a timer as the supervisor uses one: it only ever stops it.
type stopper interface {
	Stop() bool
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }
