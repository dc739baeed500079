package daemon

// Generations: starting, promoting, retiring, respawning, draining and
// killing the workers of one configuration.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
)

func (s *Supervisor) newGeneration(cfg *config.Config) *generation {
	s.genSeq++
	g := &generation{id: s.genSeq, cfg: cfg}
	for i := range cfg.Workers {
		g.slots = append(g.slots, &slot{index: i})
	}
	s.gens = append(s.gens, g)
	return g
}

// startGeneration starts a generation of workers with cfg: the next one,
// serving once all its workers are ready (promote), or given up after
// startTimeout. An error is a worker that could not be started; the
// caller gives the generation up.
func (s *Supervisor) startGeneration(cfg *config.Config) error {
	g := s.newGeneration(cfg)
	s.pending = g
	s.pendingTimer = s.after(startTimeout, evNextTimeout{g})
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
	if g == s.pending && g.allReady() {
		s.promote(g)
	}
}

// promote makes the pending generation the serving one and drains the old.
func (s *Supervisor) promote(g *generation) {
	s.pendingTimer.stop()
	old := s.current
	s.pending, s.current = nil, g
	s.cfg = g.cfg
	s.maxConns.Store(int64(g.cfg.MaxConnections))
	s.perClient.Store(int64(g.cfg.MaxConnectionsPerClient))
	s.httpOn.Store(g.cfg.HTTP)
	s.setTrusted(g.cfg)
	setLevel(&s.level, g.cfg)
	s.applyControlGroup(g.cfg)
	first := old == nil
	s.setState(stateServing)
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

// startFollowUp starts the reload asked for while another was in
// progress: that one read the configuration before the request came, so
// it may not have the change the requester made.
func (s *Supervisor) startFollowUp() {
	ws := s.followUp
	s.followUp = nil
	if len(ws) == 0 {
		return
	}
	if s.state != stateServing {
		// A drain or kill started meanwhile: nothing to reload into.
		for _, rw := range ws {
			rw.reply("", fmt.Errorf("cannot reload while %s", s.state))
		}
		return
	}
	s.log.Info("reloading again: asked while the previous reload was in progress", "requests", len(ws))
	s.startReload(ws)
}

// nextTimedOut gives up on a generation that did not become ready.
func (s *Supervisor) nextTimedOut(g *generation) {
	if s.pending != g {
		return
	}
	s.abortPending(fmt.Errorf("generation %d: workers not ready within %v", g.id, startTimeout))
}

// abortPending kills the pending generation and fails whoever waits on it.
func (s *Supervisor) abortPending(err error) {
	g := s.pending
	if g == nil {
		return
	}
	s.pending = nil
	s.pendingTimer.stop()
	s.killGeneration(g, "aborted")
	g.draining = true
	if g.live() == 0 {
		s.retire(g) // e.g. the first spawn failed: no exit will retire it
	}
	s.closeNewListeners()
	s.abortMetrics()
	waiters := s.reloadWait
	s.reloadWait = nil
	s.reloadFailed(err, waiters)
}

// reloadFailed ends a reload that failed with err: the previous
// generation goes on serving (if a reload was in progress: the start,
// a drain or a kill have their own state), and waiters get err.
func (s *Supervisor) reloadFailed(err error, waiters []reloadWaiter) {
	if s.current != nil && s.state == stateReloading {
		s.lastReload = "failed: " + err.Error()
		s.metrics.reloadsFailed.Add(1)
		s.log.Error("reload failed; still serving the previous configuration", "err", err)
		s.setState(stateServing)
		s.env.notify("READY=1\nSTATUS=" + s.statusLine())
	}
	for _, rw := range waiters {
		rw.reply("", err)
	}
	s.startFollowUp()
}

// onExit handles w's exit; cut is the connections it still held (handed
// over and not reported done), which went down with it.
func (s *Supervisor) onExit(w *workerProc, how string, cut int64) {
	g, sl := w.gen, w.slot
	if w.fatal != "" {
		how += ": " + w.fatal
	}
	w.startTimer.stop()
	w.killer.stop()
	if sl.w == w {
		sl.w = nil
	}
	for i, r := range g.retired {
		if r == w {
			g.retired = append(g.retired[:i], g.retired[i+1:]...)
			break
		}
	}
	s.refreshDispatch()
	expected := w.killed || w.draining || g.draining || s.state.exiting()
	lvl := slog.LevelInfo
	if !expected {
		lvl = slog.LevelError
	}
	s.log.Log(context.Background(), lvl, "worker exited", "pid", w.pid, "gen", g.id, "slot", sl.index,
		"status", how, "uptime", s.env.clock.Now().Sub(w.started).Round(time.Millisecond), "expected", expected, "connections_cut", cut)

	switch {
	case g == s.pending && !expected:
		s.abortPending(fmt.Errorf("worker %d of generation %d failed to start: %s", w.pid, g.id, how))
	case g == s.current && !expected && sl.w == nil:
		sl.restarts++
		s.metrics.restarts.Add(1)
		sl.lastExit = how
		s.scheduleRespawn(g, sl, s.env.clock.Now().Sub(w.started))
	}
	if g.live() == 0 && g != s.current && g != s.pending {
		s.retire(g)
	}
	s.notifyStatus()
}

// retire forgets a generation whose workers are all gone.
func (s *Supervisor) retire(g *generation) {
	for i, x := range s.gens {
		if x == g {
			s.gens = append(s.gens[:i], s.gens[i+1:]...)
			break
		}
	}
	g.killer.stop()
	if g.id > 0 && g.cfg != nil && len(g.slots) > 0 && g != s.current {
		s.log.Info("generation retired", "gen", g.id)
	}
	for _, f := range g.waiters {
		f(g.cut)
	}
	g.waiters = nil
}

// onRetire handles a worker's request to be replaced (it got SIGTERM): a
// replacement starts in its slot, and the worker keeps serving until that
// one is ready, then drains (its connections finish, no new ones come).
// If the replacement cannot start, the old worker goes on serving.
func (s *Supervisor) onRetire(w *workerProc) {
	g, sl := w.gen, w.slot
	if w.draining || w.killed || sl.w != w {
		return
	}
	s.log.Info("worker got SIGTERM: starting a replacement, then draining it", "pid", w.pid, "gen", g.id, "slot", sl.index,
		"connections", w.active.Load())
	sl.w = nil
	g.retired = append(g.retired, w)
	serving := g == s.current && !g.draining && !s.state.exiting()
	if !serving || !w.ready {
		// It takes no connections anyway: nothing to hand over.
		s.drainRetired(w)
		s.refreshDispatch()
	}
	if !serving && g != s.pending {
		return // an old or stopping generation: no replacement
	}
	s.spawnOrRetry(g, sl)
}

// spawnOrRetry starts sl's worker; if that fails, it tries again after a
// backoff.
func (s *Supervisor) spawnOrRetry(g *generation, sl *slot) {
	if err := s.spawn(g, sl); err != nil {
		sl.lastExit = "respawn failed: " + err.Error()
		s.log.Error("respawn failed", "gen", g.id, "slot", sl.index, "err", err)
		s.scheduleRespawn(g, sl, 0)
	}
}

// drainRetired drains a retired worker, bounded by its generation's
// drain_timeout: past it, the worker is killed and the log says what that
// cut.
func (s *Supervisor) drainRetired(w *workerProc) {
	s.sendDrain(w)
	timeout := w.gen.cfg.DrainTimeout.D()
	if timeout <= 0 {
		return
	}
	w.killer = s.after(timeout, evWorkerDrainTimeout{w, timeout})
}

// workerDrainTimedOut kills a retired worker still draining at its
// drain_timeout.
func (s *Supervisor) workerDrainTimedOut(w *workerProc, timeout time.Duration) {
	if w.killed || w.dead() {
		return
	}
	s.log.Error("drain timeout: killing a retired worker", "pid", w.pid, "gen", w.gen.id, "timeout", timeout,
		"connections_cut", w.active.Load())
	w.killed = true
	kill(w.proc)
}

// sendDrain sends msgDrain to w. The channel is never blocked for long,
// but if it is full right now the message goes from a goroutine that
// waits for room: a drain must not be lost, nor the worker killed for it.
func (s *Supervisor) sendDrain(w *workerProc) {
	w.draining = true
	err := fdpass.TrySend(w.ch, []byte{msgDrain})
	if errors.Is(err, unix.EAGAIN) {
		go func() {
			if err := fdpass.Send(w.ch, []byte{msgDrain}); err != nil && !w.dead() {
				s.log.Error("send drain to worker", "pid", w.pid, "err", err)
			}
		}()
		return
	}
	if err != nil && !w.dead() {
		s.log.Error("send drain to worker; killing it", "pid", w.pid, "err", err)
		w.killed = true
		kill(w.proc)
	}
}

// Respawn backoff: a worker that lived at least healthyAfter is replaced at
// once; one that keeps dying young waits twice as long each time, up to
// maxBackoff, so a crash loop costs little CPU and is visible in status.
const (
	healthyAfter = 10 * time.Second
	minBackoff   = 100 * time.Millisecond
	maxBackoff   = 10 * time.Second
)

func (s *Supervisor) scheduleRespawn(g *generation, sl *slot, lived time.Duration) {
	if lived >= healthyAfter {
		sl.backoff = 0
	} else {
		sl.backoff = min(max(2*sl.backoff, minBackoff), maxBackoff)
	}
	sl.nextStart = s.env.clock.Now().Add(sl.backoff)
	s.log.Info("replacing worker", "gen", g.id, "slot", sl.index, "in", sl.backoff, "restarts", sl.restarts)
	sl.timer = s.after(sl.backoff, evRespawn{g, sl})
}

// respawn starts sl's worker again after its backoff.
func (s *Supervisor) respawn(g *generation, sl *slot) {
	sl.timer = nil
	if g != s.current || g.draining || sl.w != nil || s.state.exiting() {
		return
	}
	s.spawnOrRetry(g, sl)
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
		s.retire(g)
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

// inflight is the connections g's workers hold.
func (g *generation) inflight() int {
	n := 0
	for _, w := range g.workers() {
		n += int(w.active.Load())
	}
	return n
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
