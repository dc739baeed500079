package daemon

// A slot's worker: the start timeout, its exit, its replacement (with a
// backoff after a crash), and its retirement when it got SIGTERM.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
)

// startTimedOut kills a worker that did not report ready within limit.
func (s *Supervisor) startTimedOut(w *workerProc, limit time.Duration) {
	if !w.ready && !w.killed && !w.isGone() {
		w.fatal = fmt.Sprintf("not ready within %v", limit)
		s.log.Error("worker did not report ready; killing it", "pid", w.pid, "gen", w.gen.id, "slot", w.slot.index, "timeout", limit)
		kill(w.proc)
	}
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
	case g == s.next && !expected:
		s.abortNext(fmt.Errorf("worker %d of generation %d failed to start: %s", w.pid, g.id, how))
	case g == s.current && !expected && sl.w == nil:
		sl.restarts++
		s.metrics.restarts.Add(1)
		sl.lastExit = how
		s.scheduleRespawn(g, sl, s.env.clock.Now().Sub(w.started))
	}
	if g.live() == 0 && g != s.current && g != s.next {
		s.forget(g)
	}
	s.notifyStatus()
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
	// One restart pending per slot: a retiring worker whose replacement
	// could not start has one pending when it crashes itself.
	sl.timer.stop()
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

// spawnOrRetry starts sl's worker; if that fails, it tries again after a
// backoff.
func (s *Supervisor) spawnOrRetry(g *generation, sl *slot) {
	if err := s.spawn(g, sl); err != nil {
		sl.lastExit = "respawn failed: " + err.Error()
		s.log.Error("respawn failed", "gen", g.id, "slot", sl.index, "err", err)
		s.scheduleRespawn(g, sl, 0)
	}
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
	if !serving && g != s.next {
		return // an old or stopping generation: no replacement
	}
	if g == s.next {
		// A starting generation is not respawned (respawn serves the
		// current one only): without its replacement it would never be
		// ready, and the reload would fail at startTimeout saying "not
		// ready" instead of why.
		if err := s.spawn(g, sl); err != nil {
			s.abortNext(fmt.Errorf("generation %d: worker %d got SIGTERM and its replacement could not start: %w", g.id, w.pid, err))
		}
		return
	}
	s.spawnOrRetry(g, sl)
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
	if w.killed || w.isGone() {
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
			if err := fdpass.Send(w.ch, []byte{msgDrain}); err != nil && !w.isGone() {
				s.log.Error("send drain to worker", "pid", w.pid, "err", err)
			}
		}()
		return
	}
	if err != nil && !w.isGone() {
		s.log.Error("send drain to worker; killing it", "pid", w.pid, "err", err)
		w.killed = true
		kill(w.proc)
	}
}
