package daemon

// Generations: starting, promoting, draining and killing the workers
// of one configuration.

import (
	"fmt"
	"os"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
)

// A generation is a set of workers started with one configuration. A
// reload starts a new generation and drains the old one.
type generation struct {
	id       int
	cfg      *config.Config
	slots    []*slot
	retired  []*workerProc // replaced after a SIGTERM, draining, out of their slots
	draining bool
	killer   *loopTimer         // kills what is left of a draining generation at drain_timeout
	cut      string             // set when workers were killed with connections in flight
	waiters  []func(cut string) // run when the generation's last worker has exited
	access   *os.File           // access_log_path, for its workers (accessLogFD); nil: none
}

// A slot is a position in a generation's pool; its worker is replaced
// when it dies, and the slot keeps the history.
type slot struct {
	index     int
	w         *workerProc // nil while waiting to respawn
	restarts  int
	lastExit  string
	backoff   time.Duration
	nextStart time.Time
	timer     *loopTimer
}

// workers returns g's live workers: those in slots and the retired ones.
func (g *generation) workers() []*workerProc {
	ws := append([]*workerProc(nil), g.retired...)
	for _, sl := range g.slots {
		if sl.w != nil {
			ws = append(ws, sl.w)
		}
	}
	return ws
}

// live counts g's workers without building the list: the loop asks after
// every event whether any is left.
func (g *generation) live() int {
	n := len(g.retired)
	for _, sl := range g.slots {
		if sl.w != nil {
			n++
		}
	}
	return n
}

func (g *generation) allReady() bool {
	for _, sl := range g.slots {
		if sl.w == nil || !sl.w.ready {
			return false
		}
	}
	return true
}

// inflight is the connections g's workers hold.
func (g *generation) inflight() int {
	n := 0
	for _, w := range g.workers() {
		n += int(w.active.Load())
	}
	return n
}

// stopRespawn cancels a pending replacement of sl's worker.
func (sl *slot) stopRespawn() {
	sl.timer.stop()
	sl.timer = nil
	sl.nextStart = time.Time{}
}

func (s *Supervisor) newGeneration(cfg *config.Config) *generation {
	s.genSeq++
	g := &generation{id: s.genSeq, cfg: cfg}
	for i := range cfg.Workers {
		g.slots = append(g.slots, &slot{index: i})
	}
	s.gens = append(s.gens, g)
	return g
}

// startGeneration starts a generation of workers with cfg and access,
// its access_log_path opened (openAccessLog; nil for none), which it
// closes when done with it: the next one, serving once all its workers
// are ready (promote), or given up after startTimeout. An error is a
// worker that could not be started; the caller gives the generation up.
func (s *Supervisor) startGeneration(cfg *config.Config, access *os.File) error {
	g := s.newGeneration(cfg)
	g.access = access
	s.next = g
	s.nextTimer = s.after(startTimeout, evNextTimeout{g})
	for _, sl := range g.slots {
		if err := s.spawn(g, sl); err != nil {
			return err
		}
	}
	return nil
}

// refreshDispatch publishes the workers new connections may go to: the
// ready, non-draining workers of the current generation.
func (s *Supervisor) refreshDispatch() {
	var ws []*workerProc
	if s.current != nil && !s.current.draining && s.state.serves() {
		for _, sl := range s.current.slots {
			if sl.w != nil && sl.w.ready && !sl.w.draining && sl.w.beat.healthy() {
				ws = append(ws, sl.w)
			}
		}
		// A retiring worker serves until its replacement is ready.
		for _, w := range s.current.retired {
			if w.ready && !w.draining && !w.killed && w.beat.healthy() {
				ws = append(ws, w)
			}
		}
	}
	s.dispatch.Store(&ws)
	s.giveListeners(ws) // accept mode hook (acceptmode.go)
}

func (s *Supervisor) onReady(w *workerProc) {
	w.ready = true
	w.startTimer.stop()
	g := w.gen
	if w.draining {
		return // retired before it was ready; it has the drain message
	}
	if g == s.current {
		// A replacement in the serving generation: put it to work, and
		// drain the worker it replaces if that one retired.
		s.log.Info("worker ready", "pid", w.pid, "gen", g.id, "slot", w.slot.index)
		for _, r := range g.retired {
			if r.slot == w.slot && !r.draining && !r.killed && !r.beat.replaced {
				s.drainRetired(r)
			}
		}
		s.refreshDispatch()
		s.notifyStatus()
		return
	}
	if g == s.next && g.allReady() {
		s.promote(g)
	}
}

// promote makes the next generation the serving one and drains the old.
func (s *Supervisor) promote(g *generation) {
	s.nextTimer.stop()
	old := s.current
	s.next, s.current = nil, g
	s.cfg = g.cfg
	s.maxConns.Store(int64(g.cfg.MaxConnections))
	s.perClient.Store(int64(g.cfg.MaxConnectionsPerClient))
	s.httpOn.Store(g.cfg.HTTP)
	s.setTrusted(g.cfg)
	setLevel(&s.level, g.cfg)
	s.applyControlGroup(g.cfg)
	first := old == nil
	s.setState(stateServing)
	s.applyDeferAccept(g.cfg.DeferAccept)
	s.applySched(g.cfg.SupervisorSchedBatch)
	s.refreshDispatch()
	if first {
		s.startAccepting()
		s.publishControl()
	} else {
		s.applyListenerChanges()
		s.applyMetrics()
		s.drainGeneration(old, g.cfg.DrainTimeout.D())
	}
	pids := make([]int, 0, len(g.slots))
	for _, sl := range g.slots {
		pids = append(pids, sl.w.pid)
	}
	msg := fmt.Sprintf("generation %d serving with %d workers", g.id, len(g.slots))
	s.log.Info(msg, "pids", pids, "listeners", s.listenerAddrs())
	if !first {
		s.lastReload = "ok: " + msg
		s.metrics.reloadsOK.Add(1)
	}
	s.env.notify("READY=1\nSTATUS=" + s.statusLine())
	waiters := s.reloadWait
	s.reloadWait = nil
	for _, rw := range waiters {
		if rw.wait && old != nil && old.live() > 0 {
			reply := rw.reply
			old.waiters = append(old.waiters, func(cut string) {
				if cut != "" {
					reply(msg+"; previous generation "+cut, nil)
					return
				}
				reply(msg+"; previous generation drained", nil)
			})
			continue
		}
		rw.reply(msg, nil)
	}
	s.startFollowUp()
}

// nextTimedOut gives up on a generation that did not become ready.
func (s *Supervisor) nextTimedOut(g *generation) {
	if s.next != g {
		return
	}
	s.abortNext(fmt.Errorf("generation %d: workers not ready within %v", g.id, startTimeout))
}

// abortNext kills the next generation and fails whoever waits on it.
func (s *Supervisor) abortNext(err error) {
	s.abortRead(err)
	g := s.next
	if g == nil {
		return
	}
	s.next = nil
	s.nextTimer.stop()
	s.killGeneration(g, "aborted")
	g.draining = true
	if g.live() == 0 {
		s.forget(g) // e.g. the first spawn failed: no exit will forget it
	}
	s.closeNewListeners()
	s.abortMetrics()
	waiters := s.reloadWait
	s.reloadWait = nil
	s.reloadFailed(err, waiters)
}

// forget drops a generation whose workers are all gone, and tells
// whoever waits for that (reload --wait).
func (s *Supervisor) forget(g *generation) {
	for i, x := range s.gens {
		if x == g {
			s.gens = append(s.gens[:i], s.gens[i+1:]...)
			break
		}
	}
	g.killer.stop()
	if g.access != nil {
		g.access.Close()
		g.access = nil
	}
	if g.id > 0 && g.cfg != nil && len(g.slots) > 0 && g != s.current {
		s.log.Info("generation retired", "gen", g.id)
	}
	for _, f := range g.waiters {
		f(g.cut)
	}
	g.waiters = nil
}

// drainGeneration sends msgDrain to every worker of g and, if timeout > 0,
// arms a timer that kills what is left of g after it.
func (s *Supervisor) drainGeneration(g *generation, timeout time.Duration) {
	g.draining = true
	for _, sl := range g.slots {
		sl.stopRespawn()
	}
	for _, w := range g.workers() {
		if !w.draining && !w.killed {
			s.sendDrain(w)
		}
	}
	if g.live() == 0 {
		s.forget(g)
		return
	}
	if timeout <= 0 {
		return
	}
	s.log.Info("draining generation", "gen", g.id, "workers", g.live(), "deadline", s.env.clock.Now().Add(timeout).Format(time.RFC3339))
	g.killer = s.after(timeout, evGenerationDrainTimeout{g, timeout})
}

// generationDrainTimedOut kills what is left of an old generation at its
// drain_timeout.
func (s *Supervisor) generationDrainTimedOut(g *generation, timeout time.Duration) {
	if g.live() == 0 {
		return
	}
	why := fmt.Sprintf("killed at drain_timeout (%v)", timeout)
	s.log.Error("drain timeout: killing the generation's remaining workers", "gen", g.id, "timeout", timeout,
		"workers", g.live(), "connections_cut", g.inflight())
	s.killGeneration(g, why)
}

// killGeneration kills g's workers and records, for whoever waits on g,
// what that cut.
func (s *Supervisor) killGeneration(g *generation, why string) {
	for _, sl := range g.slots {
		sl.stopRespawn()
	}
	if n := g.inflight(); n > 0 && g.cut == "" {
		g.cut = fmt.Sprintf("%s with %s in flight", why, plural(n, "connection"))
	}
	for _, w := range g.workers() {
		w.killed = true
		kill(w.proc)
	}
}
