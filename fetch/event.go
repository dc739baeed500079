package fetch

import "time"

// EventKind says what happened to a file.
type EventKind uint8

// Event kinds, in the order a file sees them: Start once, then Progress
// every Options.ProgressEvery while it downloads (interleaved with Retry
// and Restart), then Done or Error once.
const (
	EventStart    EventKind = iota + 1 // the server's size is known; Done is what a resumed .part already had
	EventProgress                      // Done has moved (or time has passed)
	EventRetry                         // an attempt failed with Err; the next one starts after Delay
	EventRestart                       // the file changed on the server (Err says how): Done is back to 0
	EventDone                          // complete and verified; Done == Total
	EventError                         // given up with Err
	EventSource                        // a mirror (Mirror) is no longer used for this file: Err says why
)

var eventNames = [...]string{
	EventStart:    "start",
	EventProgress: "progress",
	EventRetry:    "retry",
	EventRestart:  "restart",
	EventDone:     "done",
	EventError:    "error",
	EventSource:   "source",
}

func (k EventKind) String() string {
	if int(k) < len(eventNames) && eventNames[k] != "" {
		return eventNames[k]
	}
	return "unknown"
}

// Event reports a file's progress to a renderer. Events of one Client are
// delivered one at a time (never concurrently), in order for each file.
type Event struct {
	Kind EventKind
	Time time.Time // from Options.Now

	File   int    // Job.ID
	Name   string // Job.Name: the local path, or "-" for stdout
	Source string // the URL

	Done  int64 // bytes of the file that are in place
	Total int64 // the file's size; -1 before Start
	// Resumed is, from Start on, how many bytes a .part already had when
	// this run started (they were not downloaded again).
	Resumed int64
	// Conns is the progress of each connection when a file is fetched
	// over several (Options.Conns > 1); nil otherwise.
	Conns []ConnProgress

	Attempt int           // Retry: the failed attempts in a row so far
	Delay   time.Duration // Retry: wait before the next attempt
	Err     error         // Retry, Restart, Error
	// Skipped is set on Done when the file was already complete (-c on a
	// finished download): nothing was transferred.
	Skipped bool
	// SHA256 is set on Done when the content was checked against a digest.
	SHA256 string

	// With mirrors (Job.Mirrors): Sources is how many URLs the file has,
	// SourcesLive how many are still in use; Mirror is the URL a Retry or
	// Source event is about.
	Sources, SourcesLive int
	Mirror               string
}

// ConnProgress is one connection's share of a ranged download: the range
// it is working on and how far into it it is.
type ConnProgress struct {
	Start, Pos, End int64 // Pos == End when idle
}
