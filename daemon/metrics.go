package daemon

import (
	"sync/atomic"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// The supervisor's metrics (docs/FLEET.md). What the supervisor does
// itself (accept, hand off, refuse, restart, reload) it counts in
// supMetrics with atomic adds, whether or not anyone scrapes; what the
// workers do (bytes, requests, responses) it asks them for at scrape time
// (tally.go); metrics_http.go serves both, with the health checks.

// supMetrics are the supervisor's own counters. The zero value is ready:
// a Supervisor built by a test counts without any setup.
type supMetrics struct {
	accepted  atomic.Uint64 // connections accept4 returned
	handedOff atomic.Uint64 // connections a worker took (sendmsg succeeded)
	refused   [numRefuseReasons]atomic.Uint64
	handoff   histogram // accept4's return to the successful sendmsg

	restarts      atomic.Uint64 // workers that died unexpectedly and were replaced
	reloadsOK     atomic.Uint64
	reloadsFailed atomic.Uint64

	tally tally // the workers' serving counters, across their lifetimes

	// (loop) the metrics listener in force, and one a reload has bound
	// but not yet put in force (metrics_http.go).
	listener, pending *metricsListener
	change            bool // a reload changes the listener: pending replaces it
}

// Why the supervisor refused connections, as the reason label says.
const (
	refusedNoWorker  = iota // no worker of the serving generation is ready
	refusedDraining         // the daemon is draining or stopping
	refusedMaxConns         // max_connections reached
	refusedHandoff          // every worker's channel refused the fds
	refusedPerClient        // max_connections_per_client reached for the client's address
	refusedNoFDs            // every worker is at its open-file limit
	numRefuseReasons
)

var refuseReasons = [numRefuseReasons]string{"busy_no_worker", "draining", "max_connections", "handoff_failed", "per_client", "no_fds"}

// noWorkerReason is the reason for a refusal with st when no worker takes
// connections.
func noWorkerReason(st wire.Status) int {
	if st == wire.StatusDraining {
		return refusedDraining
	}
	return refusedNoWorker
}

func (m *supMetrics) refuse(reason, n int) {
	m.refused[reason].Add(uint64(n))
}

// handedOff counts n connections a worker took, with their handoff
// latency when d knows when they were accepted (d.idx indexes d.at).
func (d *dispatcher) handedOff(n int) {
	m := &d.s.metrics
	m.handedOff.Add(uint64(n))
	now := time.Now()
	for _, i := range d.idx {
		if i < len(d.at) {
			m.handoff.observe(now.Sub(d.at[i]))
		}
	}
}

// handoffBuckets are the handoff histogram's upper bounds: a handoff is
// two system calls' worth of work (accept4's return to sendmsg's), so a
// few microseconds on an idle box, more when the accept thread waits for
// a CPU or a batch is large.
var handoffBuckets = [...]time.Duration{
	5 * time.Microsecond, 10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 100 * time.Millisecond, time.Second,
}

// histogram is a fixed-bucket histogram of durations: an observation is
// two atomic adds, and the zero value is ready.
type histogram struct {
	counts [len(handoffBuckets) + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sumNs  atomic.Uint64
}

func (h *histogram) observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < len(handoffBuckets) && d > handoffBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(uint64(d))
}

// snapshot returns the cumulative counts of the finite buckets by upper
// bound in seconds, the total count and the sum in seconds. The count is
// the sum of the buckets read, so the three agree even while
// observations go on.
func (h *histogram) snapshot() (buckets map[float64]uint64, count uint64, sum float64) {
	buckets = make(map[float64]uint64, len(handoffBuckets))
	for i, b := range handoffBuckets {
		count += h.counts[i].Load()
		buckets[b.Seconds()] = count
	}
	count += h.counts[len(handoffBuckets)].Load()
	return buckets, count, float64(h.sumNs.Load()) / 1e9
}
