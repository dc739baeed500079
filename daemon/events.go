package daemon

import (
	"context"
	"os"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/ctl"
)

// The supervisor's loop (Supervisor.loop) owns the lifecycle: generations,
// slots, timers and the state. Everything else talks to it with events,
// handled one at a time, in order. These are all of them.
type event interface{ isEvent() }

// Events from a worker's channel reader (reader.go).
type (
	// evReady: the worker reported ready (msgReady).
	evReady struct{ w *workerProc }
	// evPong: the worker answered ping seq (msgPong, health.go).
	evPong struct {
		w   *workerProc
		seq uint64
	}
	// evFatal: the worker says why it is about to fail (msgFatal).
	evFatal struct {
		w   *workerProc
		msg string
	}
	// evRetire: the worker got SIGTERM and asks to be replaced (msgRetire).
	evRetire struct{ w *workerProc }
	// evExit: the worker's channel closed and the process was reaped; how
	// it ended, and the connections it still held (cut with it).
	evExit struct {
		w   *workerProc
		how string
		cut int64
	}
)

// Events from an accept loop (accept.go, metrics_http.go): a newer
// instance now takes a draining one's connections, so its listener may
// close (group.go).
type (
	evLeaveGroup   struct{ l *listener }
	evLeaveMetrics struct{ ml *metricsListener }
)

// Events from the control socket (control.go). Each closes done once
// handled.
type (
	// evReload: zctl reload. reply gets the outcome once known.
	evReload struct {
		wait  bool
		reply func(string, error)
		done  chan struct{}
	}
	// evDrain: zctl drain; err is set to the drain's refusal, if any.
	evDrain struct {
		timeout time.Duration
		why     string
		err     *error
		done    chan struct{}
	}
	// evKill: zctl kill.
	evKill struct {
		why  string
		done chan struct{}
	}
	// evCall runs f on the loop, to read its state (status, scrapes).
	evCall struct {
		f    func()
		done chan struct{}
	}
)

// evReloadReadDone: reload seq's configuration was read, and its
// access_log_path opened, off the loop (reload.go).
type evReloadReadDone struct {
	seq    uint64
	cfg    *config.Config
	access *os.File
	err    error
}

// Timer events: each comes in an evTimer when its timer fires, and is
// dropped if the timer was stopped meanwhile.
type (
	// evStartTimeout: w did not report ready within startTimeout.
	evStartTimeout struct {
		w     *workerProc
		limit time.Duration
	}
	// evNextTimeout: generation g, started by a reload or the start, did
	// not become ready within startTimeout.
	evNextTimeout struct{ g *generation }
	// evRespawn: sl's backoff is over: start its worker again.
	evRespawn struct {
		g  *generation
		sl *slot
	}
	// evWorkerDrainTimeout: a retired worker's drain_timeout expired.
	evWorkerDrainTimeout struct {
		w       *workerProc
		timeout time.Duration
	}
	// evGenerationDrainTimeout: an old generation's drain_timeout expired.
	evGenerationDrainTimeout struct {
		g       *generation
		timeout time.Duration
	}
	// evDrainTimeout: the daemon's drain deadline passed.
	evDrainTimeout struct{ timeout time.Duration }
	// evReloadReadTimeout: reload seq's read took reloadReadTimeout.
	evReloadReadTimeout struct{ seq uint64 }

	evTimer struct{ t *loopTimer }
)

func (evReady) isEvent()                  {}
func (evPong) isEvent()                   {}
func (evFatal) isEvent()                  {}
func (evRetire) isEvent()                 {}
func (evExit) isEvent()                   {}
func (evLeaveGroup) isEvent()             {}
func (evLeaveMetrics) isEvent()           {}
func (evReload) isEvent()                 {}
func (evDrain) isEvent()                  {}
func (evKill) isEvent()                   {}
func (evCall) isEvent()                   {}
func (evStartTimeout) isEvent()           {}
func (evNextTimeout) isEvent()            {}
func (evRespawn) isEvent()                {}
func (evWorkerDrainTimeout) isEvent()     {}
func (evGenerationDrainTimeout) isEvent() {}
func (evDrainTimeout) isEvent()           {}
func (evTimer) isEvent()                  {}
func (evReloadReadDone) isEvent()         {}
func (evReloadReadTimeout) isEvent()      {}

// handle runs one event on the loop.
func (s *Supervisor) handle(ev event) {
	switch e := ev.(type) {
	case evReady:
		s.onReady(e.w)
	case evPong:
		s.onPong(e.w, e.seq)
	case evFatal:
		e.w.fatal = e.msg
	case evRetire:
		s.onRetire(e.w)
	case evExit:
		s.onExit(e.w, e.how, e.cut)
	case evLeaveGroup:
		s.leaveGroup(e.l)
	case evLeaveMetrics:
		s.leaveMetrics(e.ml)
	case evReload:
		s.reload(e.wait, e.reply)
		close(e.done)
	case evDrain:
		*e.err = s.drain(e.timeout, e.why)
		close(e.done)
	case evKill:
		s.kill(e.why, false)
		close(e.done)
	case evCall:
		e.f()
		close(e.done)
	case evTimer:
		if !e.t.stopped {
			e.t.stopped = true
			s.handle(e.t.ev)
		}
	case evStartTimeout:
		s.startTimedOut(e.w, e.limit)
	case evNextTimeout:
		s.nextTimedOut(e.g)
	case evRespawn:
		s.respawn(e.g, e.sl)
	case evWorkerDrainTimeout:
		s.workerDrainTimedOut(e.w, e.timeout)
	case evGenerationDrainTimeout:
		s.generationDrainTimedOut(e.g, e.timeout)
	case evDrainTimeout:
		s.drainTimedOut(e.timeout)
	case evReloadReadDone:
		s.reloadReadDone(e)
	case evReloadReadTimeout:
		s.reloadReadTimedOut(e.seq)
	case evBudget, evAcceptStopped: // accept mode hook (acceptbudget.go)
		s.handleBudget(ev)
	}
}

// post queues ev for the loop. After the loop has ended it does nothing
// and reports false.
func (s *Supervisor) post(ev event) bool {
	select {
	case s.events <- ev:
		return true
	case <-s.finished:
		return false
	}
}

// request posts ev, whose handler closes done, and waits for that.
func (s *Supervisor) request(ctx context.Context, ev event, done <-chan struct{}) error {
	if !s.post(ev) {
		return ctl.ErrExiting
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.finished:
		// The loop may have handled ev and then ended (a drain with
		// nothing in flight, a kill): it closes done before finished,
		// so done says whether ev was handled, whichever case select
		// picked when both were ready.
		select {
		case <-done:
			return nil
		default:
			return ctl.ErrExiting
		}
	}
}

// call runs f on the loop and waits for it.
func (s *Supervisor) call(ctx context.Context, f func()) error {
	done := make(chan struct{})
	return s.request(ctx, evCall{f: f, done: done}, done)
}

// A loopTimer is a timer of the loop: when it fires, its event is handled
// on the loop, unless the loop stopped it first (also when it had fired
// already and its event waited in the queue).
type loopTimer struct {
	t       stopper
	ev      event
	stopped bool
}

// after arms a timer that posts ev once d has passed, on the clock seam.
func (s *Supervisor) after(d time.Duration, ev event) *loopTimer {
	t := &loopTimer{ev: ev}
	t.t = s.env.clock.AfterFunc(d, func() { s.post(evTimer{t}) })
	return t
}

// stop cancels t; a nil t is a timer never armed.
func (t *loopTimer) stop() {
	if t != nil && !t.stopped {
		t.stopped = true
		t.t.Stop()
	}
}
