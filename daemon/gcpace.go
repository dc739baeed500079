package daemon

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// A worker's heap goal and its copies of small files. Go's collector lets
// the heap grow to twice what was live after the last collection
// (GOGC=100), at least 4 MiB, before it collects again. The copies of
// small files a worker keeps (serve/inline.go, up to 4 MiB) are live as
// long as they are cached and hold no pointers, so the collector gains
// nothing from growing the heap by their size again: it would only add
// their size to the worker's RSS a second time. So a worker sets its GC
// percent to give the goal GOGC=100 would give without the copies, plus
// the copies: max(4 MiB, twice the rest of the live heap) + the copies.
// Without copies that is GOGC=100. An explicit GOGC in the environment
// wins (the worker then leaves the percent alone).

const (
	gcPaceEvery   = time.Second
	gcMinGoal     = 4 << 20 // the runtime's own least goal at GOGC=100
	gcPercentLow  = 10      // never collect more often than this
	gcPercentStep = 5       // leave the percent alone for smaller changes
)

// gcPercent is the GC percent that makes the heap goal
// max(gcMinGoal, 2*(live-copies)) + copies for a live heap of live bytes,
// copies of which are small files' bytes.
func gcPercent(live, copies int64) int {
	if live <= 0 {
		return 100
	}
	copies = min(max(copies, 0), live)
	rest := live - copies
	goal := max(gcMinGoal, 2*rest) + copies
	return int(min(max((goal-live)*100/live, gcPercentLow), 100))
}

// paceGC keeps the worker's GC percent at gcPercent of its live heap and
// of copies() (the bytes of small files it keeps), looked at every
// gcPaceEvery, until the process exits.
func paceGC(copies func() int64) {
	if os.Getenv("GOGC") != "" {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	cur := 100
	t := time.NewTicker(gcPaceEvery)
	for range t.C {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return // not this runtime: leave GOGC as it is
		}
		p := gcPercent(int64(sample[0].Value.Uint64()), copies())
		if p != cur && (p == 100 || abs(p-cur) >= gcPercentStep) {
			debug.SetGCPercent(p)
			cur = p
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
