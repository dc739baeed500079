package daemon

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
)

// Worker liveness. Every heartbeatInterval the supervisor's loop sends
// each worker that takes connections a ping down its channel, and the
// worker's channel reader answers it. The reader is the goroutine that
// receives new connections, so a pong proves what dispatch needs: that
// connections sent to this worker now will be taken up. A timer of the
// worker's own would prove only that the process runs, and a worker whose
// reader is stuck would keep beating while connections pile up unread.
// The reader never waits on a transfer (each connection has its own
// goroutine, and Go preempts a goroutine busy in a send loop), so a worker
// sending a 10 GiB file answers within milliseconds like an idle one.
//
// A ping unanswered for unresponsiveAfter makes the worker unresponsive:
// out of dispatch (the connections it holds are its own), shown so in
// status, and back in dispatch as soon as it answers. Unanswered for
// worker_timeout, it is killed and its slot refilled like after a crash
// (the log says how many connections it took down), unless it is busy:
// a worker with hundreds of connections ready to send on a loaded machine
// can leave its reader waiting for a CPU for seconds, and killing it would
// cut all of them. So before it kills, the supervisor looks at how long
// the worker's threads ran or waited for a CPU since it fell silent
// (/proc/PID/task/*/schedstat): a stopped, deadlocked or blocked worker
// does neither, a busy one does. A busy worker stays out of dispatch and
// is killed only if it stays silent for busyTimeouts worker_timeouts.
// One ping is in flight at a time, so a stopped worker's channel does not
// fill with them.
//
// The loop runs this on its own ticker, with the time passed in, so tests
// drive it with a fake clock.

const (
	heartbeatInterval = 500 * time.Millisecond
	unresponsiveAfter = 2 * time.Second
	// stallAfter is a gap between two checks that means the supervisor
	// itself did not run (stopped, or a starved machine): the workers'
	// silence over that gap is not held against them.
	stallAfter = 4 * heartbeatInterval
	// busyShare is the share of one CPU a silent worker's threads must
	// have run or waited for to be taken for busy rather than stuck.
	busyShare = 10 // percent
	// busyTimeouts bounds the silence of a busy worker, in worker_timeouts.
	busyTimeouts = 6
)

// heartbeat is a worker's liveness, owned by the loop.
type heartbeat struct {
	seq          uint64    // of the last ping
	since        time.Time // when the unanswered ping was sent; zero: none is
	sent         bool      // the ping is in the channel (else it met a full one and is sent again)
	unresponsive bool      // silent for unresponsiveAfter: no new connections
	replaced     bool      // silent for worker_timeout: killed, a new worker follows
	// markAt and markRun start the window over which a silent worker's
	// CPU use is judged: when it became unresponsive, then at each look.
	markAt  time.Time
	markRun time.Duration
	busy    bool // found busy at worker_timeout: logged once
}

// healthy reports whether the worker may get new connections.
func (b *heartbeat) healthy() bool { return !b.unresponsive && !b.replaced }

// checkHealth pings the workers that take connections and acts on those
// that have not answered.
func (s *Supervisor) checkHealth(now time.Time) {
	stalled := !s.lastHealth.IsZero() && now.Sub(s.lastHealth) > stallAfter
	if stalled {
		s.log.Warn("the supervisor did not run for a while; the workers' silence during it is not counted",
			"gap", now.Sub(s.lastHealth).Round(time.Millisecond))
	}
	s.lastHealth = now
	s.retryBudgets() // accept mode hook (acceptbudget.go)
	g := s.current
	if g == nil || g.draining || !s.state.serves() {
		return
	}
	for _, w := range g.workers() {
		if !w.ready || w.draining || w.killed || w.beat.replaced || w.isGone() {
			continue
		}
		if stalled && !w.beat.since.IsZero() {
			w.beat.since = now
		}
		s.checkWorker(w, now)
	}
}

func (s *Supervisor) checkWorker(w *workerProc, now time.Time) {
	b := &w.beat
	if b.since.IsZero() {
		b.seq++
		b.since, b.sent = now, false
	}
	if !b.sent {
		b.sent = fdpass.TrySend(w.ch, idMessage(msgPing, b.seq)) == nil
	}
	silent := now.Sub(b.since)
	timeout := w.gen.cfg.WorkerTimeout.D()
	if silent >= unresponsiveAfter && !b.unresponsive {
		b.unresponsive = true
		b.markAt, b.markRun = now, s.runTime(w.pid)
		s.log.Warn("worker unresponsive: no new connections for it until it answers", "pid", w.pid, "gen", w.gen.id,
			"slot", w.slot.index, "silent_for", silent.Round(time.Millisecond), "connections", w.active.Load(), "worker_timeout", timeout)
		s.refreshDispatch()
		s.notifyStatus()
	}
	if timeout > 0 && silent >= timeout && !s.stillBusy(w, now, silent, timeout) {
		s.replaceSilent(w, silent, timeout)
	}
}

// stillBusy reports whether a worker silent for worker_timeout is to be
// spared because its threads ran or waited for a CPU for busyShare of the
// time since the last look (a look needs unresponsiveAfter of history).
func (s *Supervisor) stillBusy(w *workerProc, now time.Time, silent, timeout time.Duration) bool {
	b := &w.beat
	if silent >= busyTimeouts*timeout {
		return false
	}
	window := now.Sub(b.markAt)
	if window < unresponsiveAfter {
		return true // too short to judge: look again later
	}
	run := s.runTime(w.pid)
	used := run - b.markRun
	if used*100 < window*busyShare {
		return false
	}
	b.markAt, b.markRun = now, run
	if !b.busy {
		b.busy = true
		s.log.Warn("worker silent for worker_timeout but busy (its threads run or wait for a CPU): not killed; no new connections for it until it answers",
			"pid", w.pid, "gen", w.gen.id, "slot", w.slot.index, "silent_for", silent.Round(time.Millisecond),
			"cpu_share", fmt.Sprintf("%d%%", used*100/window), "connections", w.active.Load(), "killed_at", busyTimeouts*timeout)
	}
	return true
}

// runTime is how long pid's threads have run and waited for a CPU, in
// total; 0 if that cannot be read (the worker is then never busy).
func (s *Supervisor) runTime(pid int) time.Duration {
	if s.env.runTime != nil {
		return s.env.runTime(pid)
	}
	return procRunTime(pid)
}

// procRunTime sums the first two fields of /proc/PID/task/*/schedstat:
// time on a CPU and time waiting on a run queue, in nanoseconds. A
// stopped or sleeping thread adds to neither.
func procRunTime(pid int) time.Duration {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		run, _ := strconv.ParseInt(f[0], 10, 64)
		wait, _ := strconv.ParseInt(f[1], 10, 64)
		total += time.Duration(run + wait)
	}
	return total
}

// onPong handles a worker's answer to ping seq.
func (s *Supervisor) onPong(w *workerProc, seq uint64) {
	b := &w.beat
	if seq != b.seq || b.since.IsZero() || b.replaced {
		return
	}
	b.since = time.Time{}
	b.busy = false
	if b.unresponsive {
		b.unresponsive = false
		s.log.Info("worker answers again: back in dispatch", "pid", w.pid, "gen", w.gen.id, "slot", w.slot.index)
		s.refreshDispatch()
		s.notifyStatus()
	}
}

// replaceSilent kills a worker that has not answered for timeout. Its exit
// is an unexpected one (onExit): its slot is refilled, with the usual
// backoff, and the restart counts.
func (s *Supervisor) replaceSilent(w *workerProc, silent, timeout time.Duration) {
	w.beat.replaced = true
	w.fatal = fmt.Sprintf("unresponsive for %v", silent.Round(time.Second))
	if w.beat.busy {
		w.fatal += " (busy)"
	}
	s.log.Error("worker unresponsive for worker_timeout: killing it and starting a new one", "pid", w.pid, "gen", w.gen.id,
		"slot", w.slot.index, "silent_for", silent.Round(time.Millisecond), "worker_timeout", timeout, "connections_cut", w.active.Load())
	kill(w.proc)
	s.refreshDispatch()
	s.notifyStatus()
}
