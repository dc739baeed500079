package daemon

// max_connections in the accept dispatch mode (acceptmode.go). In the
// handoff mode the supervisor counts every connection it hands over, so
// max_connections holds for the whole server, old generations included.
// In the accept mode the workers accept themselves, so the supervisor
// gives each worker that accepts a budget (msgLimit): the connections it
// may hold at once. The workers that accept are those of the serving
// generation that got the listening sockets and are not draining; the
// budget is max_connections less what every other live worker may hold,
// split over the serving generation's slots (slot k gets one more while
// k < the remainder, so the budgets add up to it exactly; a retired
// worker's part comes off its own slot's: budgets). What another
// worker may hold is what it reported (msgAccepted less msgDone) once it
// has said it stopped accepting (msgAcceptStopped, sent after its last
// msgAccepted), and until then the larger of that and its own budget: at
// a reload's promotion the old generation's workers have not read their
// drain yet, and may still accept up to their budgets. So during a
// reload's overlap the new generation gets what the old one leaves, and
// gets more as the old connections end.

import (
	"encoding/binary"

	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
)

// budget is the loop-owned state of the accept mode's budgets.
type budget struct {
	limits  map[*workerProc]int  // the last msgLimit sent to each worker
	stopped map[*workerProc]bool // reported msgAcceptStopped
	// dirty: a msgLimit could not be sent; the next heartbeat refreshes
	// dispatch, which sends it again and gives a new worker whose budget
	// failed its sockets. Only that refresh clears it: a recompute in
	// between (sendBudgets without that worker, no longer given) must
	// not cancel the retry.
	dirty bool
}

// evBudget: a worker outside the accepting set reported connections
// accepted or done; evAcceptStopped: w stopped accepting for good.
type (
	evBudget        struct{}
	evAcceptStopped struct{ w *workerProc }
)

func (evBudget) isEvent()        {}
func (evAcceptStopped) isEvent() {}

// budgetChanged (any goroutine) asks the loop to recompute the budgets,
// once for however many reports arrive meanwhile: w's count changed.
// Only the counts of workers outside the accepting set change the
// budgets, so it does nothing when none of them holds or may take a
// connection (the usual case, and the handoff mode).
func (s *Supervisor) budgetChanged() {
	if !s.am.overlap.Load() || !s.am.queued.CompareAndSwap(false, true) {
		return
	}
	if !s.post(evBudget{}) {
		s.am.queued.Store(false)
	}
}

// handleBudget runs evBudget and evAcceptStopped on the loop.
func (s *Supervisor) handleBudget(ev event) {
	switch e := ev.(type) {
	case evBudget:
		s.am.queued.Store(false)
	case evAcceptStopped:
		if s.am.b.stopped == nil {
			s.am.b.stopped = map[*workerProc]bool{}
		}
		s.am.b.stopped[e.w] = true
	}
	s.sendBudgets(nil)
}

// accepting reports whether w accepts, or is about to (giveListeners
// marks a worker given before it sends its budget, then its sockets): the
// loop sends it budgets.
func (s *Supervisor) accepting(w *workerProc) bool {
	return w.gen == s.current && s.am.given[w] && !w.draining && !w.killed && !w.isGone()
}

// budgets returns the budget of each accepting worker, and whether any
// other worker may hold connections (overlap). What older generations'
// workers may hold comes off max_connections before it is split over
// the slots; what a worker of the serving generation that no longer
// accepts may hold (one retired after a SIGTERM, draining) comes off its
// own slot's part only, so that one worker's replacement does not take
// room from the other slots.
func (s *Supervisor) budgets() (map[*workerProc]int, bool) {
	cur := s.current
	if cur == nil || cur.cfg == nil {
		return nil, false
	}
	older, overlap := 0, false
	inSlot := make([]int, len(cur.slots))
	for _, g := range s.gens {
		for _, w := range g.workers() {
			if s.accepting(w) || w.isGone() {
				continue
			}
			n := int(w.active.Load())
			if s.am.given[w] && !s.am.b.stopped[w] {
				n = max(n, s.budgetOf(w))
				overlap = true
			}
			if n > 0 {
				overlap = true
			}
			if g == cur && w.slot.index < len(inSlot) {
				inSlot[w.slot.index] += n
			} else {
				older += n
			}
		}
	}
	left := max(0, cur.cfg.MaxConnections-older)
	slots := max(1, len(cur.slots))
	out := map[*workerProc]int{}
	for _, w := range cur.workers() {
		if !s.accepting(w) {
			continue
		}
		k := w.slot.index
		n := left / slots
		if k < left%slots {
			n++
		}
		if k < len(inSlot) {
			n = max(0, n-inSlot[k])
		}
		out[w] = n
	}
	return out, overlap
}

// budgetOf is the budget w was last sent, or, if none, the share of
// max_connections its configuration gives it (newAcceptor's default).
func (s *Supervisor) budgetOf(w *workerProc) int {
	if n, ok := s.am.b.limits[w]; ok {
		return n
	}
	c := w.gen.cfg
	return (c.MaxConnections + c.Workers - 1) / max(c.Workers, 1)
}

// sendBudgets sends each accepting worker its budget if it changed.
// A worker in fresh (about to get its sockets) that cannot be sent its
// budget is returned, so that it does not get its sockets before it:
// it is tried again at the next heartbeat.
func (s *Supervisor) sendBudgets(fresh map[*workerProc]bool) (failed []*workerProc) {
	if !s.acceptInWorkers() {
		return nil
	}
	if s.am.b.limits == nil {
		s.am.b.limits = map[*workerProc]int{}
	}
	for w := range s.am.b.limits {
		if w.isGone() {
			delete(s.am.b.limits, w)
		}
	}
	for w := range s.am.b.stopped {
		if w.isGone() {
			delete(s.am.b.stopped, w)
		}
	}
	bs, overlap := s.budgets()
	s.am.overlap.Store(overlap)
	for w, n := range bs {
		if old, ok := s.am.b.limits[w]; ok && old == n {
			continue
		}
		if err := fdpass.TrySend(w.ch, appendLimit(nil, uint32(n))); err != nil {
			s.am.b.dirty = true
			if fresh[w] {
				failed = append(failed, w)
			}
			if !w.isGone() {
				s.log.Debug("send connection budget to worker; retrying at the next heartbeat", "pid", w.pid, "err", err)
			}
			continue
		}
		s.am.b.limits[w] = n
	}
	return failed
}

// retryBudgets (heartbeat) sends the budgets and sockets that could not
// be sent before.
func (s *Supervisor) retryBudgets() {
	if s.am.b.dirty {
		s.am.b.dirty = false
		s.refreshDispatch()
	}
}

// appendLimit is msgLimit: the worker may hold n connections from now.
func appendLimit(b []byte, n uint32) []byte {
	return binary.BigEndian.AppendUint32(append(b, msgLimit), n)
}

// parseLimit reads msgLimit's payload.
func parseLimit(p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, errShortMsg
	}
	return binary.BigEndian.Uint32(p), nil
}
