package daemon

import (
	"errors"
	"fmt"
	"time"
)

// drain is the graceful exit: answer new connections "draining", drain
// every generation, exit when the last worker is gone (or kill the rest
// at the deadline).
func (s *Supervisor) drain(timeout time.Duration, why string) error {
	switch s.state {
	case stateDraining:
		if timeout <= 0 {
			return nil // a second SIGUSR1, or zctl drain without --timeout
		}
		at := s.env.clock.Now().Add(timeout)
		if !at.Before(s.drainAt) {
			// Not an error: a stop script that runs twice, or a
			// drain --wait that only wants to watch, gets the drain in
			// force (and --wait its progress).
			s.log.Info("already draining: keeping the earlier deadline", "why", why, "timeout", timeout,
				"deadline_in", s.drainAt.Sub(s.env.clock.Now()).Round(time.Second))
			return nil
		}
		// An operator may shorten a drain that takes too long (e.g. a
		// systemctl stop), never lengthen it past what was promised.
		s.log.Info("drain deadline moved earlier", "why", why, "timeout", timeout)
		s.drainKill.stop()
		s.armDrainKill(at, timeout)
		return nil
	case stateStopping:
		return errors.New("already stopping")
	}
	if timeout <= 0 {
		timeout = s.cfg.DrainTimeout.D()
	}
	s.setState(stateDraining)
	s.abortNext(errors.New("a drain started"))
	s.env.notify("STOPPING=1\nSTATUS=" + s.statusLine())
	// The listeners stay open until the exit: new connections get
	// "draining" (a refusal clients retry, not "connection refused"), or
	// go to a new instance that takes the port over (takeover.go).
	s.refreshDispatch()
	s.steerListeners()
	s.acceptOnStop() // accept mode hook (acceptmode.go)
	s.drainAt = s.env.clock.Now().Add(timeout)
	s.log.Info("draining: no new connections; waiting for transfers in flight", "why", why,
		"in_flight", s.inflight.Load(), "timeout", timeout)
	// One deadline for everyone: the drain's own timer replaces those of
	// generations that were already draining after a reload.
	for _, g := range append([]*generation(nil), s.gens...) {
		g.killer.stop()
		for _, w := range g.retired {
			w.killer.stop()
		}
		s.drainGeneration(g, 0)
	}
	s.armDrainKill(s.drainAt, timeout)
	return nil
}

// armDrainKill sets the drain's deadline: at it, the workers still
// draining are killed and the exit status says what that cut. timeout is
// how it was asked for, for the log.
func (s *Supervisor) armDrainKill(at time.Time, timeout time.Duration) {
	s.drainAt = at
	s.drainKill = s.after(at.Sub(s.env.clock.Now()), evDrainTimeout{timeout})
}

// drainTimedOut kills the workers still draining at the drain's deadline.
func (s *Supervisor) drainTimedOut(timeout time.Duration) {
	if s.liveWorkers() == 0 || s.state != stateDraining {
		return
	}
	n := int(s.inflight.Load())
	msg := fmt.Sprintf("drain timeout (%v) expired: killed %s with %s in flight", timeout, plural(s.liveWorkers(), "worker"), plural(n, "connection"))
	if n > 0 && s.exitReason == "" {
		s.exitCode = ExitDrainTimeout
		s.exitReason = msg
	}
	s.log.Error(msg)
	s.killAll(fmt.Sprintf("killed at drain_timeout (%v)", timeout))
}

// kill is the immediate exit. escalated is true for a second SIGTERM or
// SIGINT during a drain: transfers it cuts make the exit status say so,
// as a drain timeout does. A kill on request (zctl kill) exits 0.
func (s *Supervisor) kill(why string, escalated bool) {
	if s.state == stateStopping {
		return
	}
	s.setState(stateStopping)
	s.abortNext(errors.New("killed"))
	s.env.notify("STOPPING=1\nSTATUS=" + s.statusLine())
	s.refreshDispatch()
	s.steerListeners()
	s.acceptOnStop() // accept mode hook (acceptmode.go)
	n := s.inflight.Load()
	s.log.Warn("killing all workers", "why", why, "workers", s.liveWorkers(), "connections_cut", n)
	switch {
	case s.exitReason != "":
		// A drain timeout got there first; its reason stands.
	case n > 0:
		s.exitReason = fmt.Sprintf("killed (%s) with %s in flight", why, plural(int(n), "connection"))
		if escalated {
			s.exitCode = ExitDrainTimeout
		}
	default:
		s.exitReason = fmt.Sprintf("killed (%s) with no connection in flight", why)
	}
	s.killAll("killed (" + why + ")")
}

func (s *Supervisor) killAll(why string) {
	for _, g := range s.gens {
		s.killGeneration(g, why)
	}
}
