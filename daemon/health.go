package daemon

import (
	"fmt"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
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
// (the log says how many connections it took down). One ping is in flight
// at a time, so a stopped worker's channel does not fill with them.
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
)

// heartbeat is a worker's liveness, owned by the loop.
type heartbeat struct {
	seq          uint64    // of the last ping
	since        time.Time // when the unanswered ping was sent; zero: none is
	sent         bool      // the ping is in the channel (else it met a full one and is sent again)
	unresponsive bool      // silent for unresponsiveAfter: no new connections
	replaced     bool      // silent for worker_timeout: killed, a new worker follows
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
	g := s.current
	if g == nil || g.draining || (s.state != ctl.StateServing && s.state != ctl.StateReloading) {
		return
	}
	for _, w := range g.workers() {
		if !w.ready || w.draining || w.killed || w.beat.replaced || w.dead() {
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
		b.sent = fdpass.TrySend(w.ch, appendID(nil, msgPing, b.seq)) == nil
	}
	silent := now.Sub(b.since)
	timeout := w.gen.cfg.WorkerTimeout.D()
	if timeout > 0 && silent >= timeout {
		s.replaceSilent(w, silent, timeout)
		return
	}
	if silent >= unresponsiveAfter && !b.unresponsive {
		b.unresponsive = true
		s.log.Warn("worker unresponsive: no new connections for it until it answers", "pid", w.pid, "gen", w.gen.id,
			"slot", w.slot.index, "silent_for", silent.Round(time.Millisecond), "connections", w.active.Load(), "worker_timeout", timeout)
		s.refreshDispatch()
		s.notifyStatus()
	}
}

// onPong handles a worker's answer to ping seq.
func (s *Supervisor) onPong(w *workerProc, seq uint64) {
	b := &w.beat
	if seq != b.seq || b.since.IsZero() || b.replaced {
		return
	}
	b.since = time.Time{}
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
	s.log.Error("worker unresponsive for worker_timeout: killing it and starting a new one", "pid", w.pid, "gen", w.gen.id,
		"slot", w.slot.index, "silent_for", silent.Round(time.Millisecond), "worker_timeout", timeout, "connections_cut", w.active.Load())
	if w.cmd != nil && w.cmd.Process != nil {
		w.cmd.Process.Kill()
	}
	s.refreshDispatch()
	s.notifyStatus()
}
