package daemon

// Reloads: a new generation with the configuration read again, the old
// one drained once the new one is ready.

import "fmt"

// maxDrainingGenerations bounds old generations still finishing transfers
// after reloads; a reload beyond it is refused rather than pile them up.
const maxDrainingGenerations = 3

type reloadWaiter struct {
	wait  bool
	reply func(string, error)
}

// reload re-reads the configuration and starts a new generation with it.
// reply (may be nil) gets the outcome once known. A request made while a
// reload is in progress is answered by a second reload started right after
// it (that one read the configuration before this request came, so it may
// miss the change being asked for); requests made meanwhile share it.
func (s *Supervisor) reload(wait bool, reply func(string, error)) {
	if reply == nil {
		reply = func(string, error) {}
	}
	rw := reloadWaiter{wait: wait, reply: reply}
	switch s.state {
	case stateServing:
		s.startReload([]reloadWaiter{rw})
	case stateReloading:
		s.followUp = append(s.followUp, rw)
	default:
		reply("", fmt.Errorf("cannot reload while %s", s.state))
	}
}

// startReload runs a reload for waiters (state serving).
func (s *Supervisor) startReload(waiters []reloadWaiter) {
	s.setState(stateReloading)
	s.env.notify("RELOADING=1")
	fail := func(err error) { s.reloadFailed(err, waiters) }
	cfg, err := s.opts.Source.Load()
	if err != nil {
		fail(fmt.Errorf("invalid configuration, nothing changed: %w", err))
		return
	}
	draining := 0
	for _, g := range s.gens {
		if g.draining {
			draining++
		}
	}
	if draining >= maxDrainingGenerations {
		fail(fmt.Errorf("%d older generations are still draining; wait for them (zctl status) before reloading again", draining))
		return
	}
	if err := s.checkControlGroup(cfg); err != nil {
		fail(fmt.Errorf("invalid configuration, nothing changed: %w", err))
		return
	}
	if cfg.LogFormat != s.logFormat {
		s.log.Warn("log_format changes only at restart; keeping the format in use", "configured", cfg.LogFormat, "in_use", s.logFormat)
		cfg.LogFormat = s.logFormat
	}
	if err := s.keepDispatch(cfg); err != nil { // accept mode hook (acceptmode.go)
		fail(fmt.Errorf("invalid configuration, nothing changed: %w", err))
		return
	}
	if s.ctlOwned && cfg.Control != s.ctlPath {
		s.log.Warn("the control socket path changes only at restart", "configured", cfg.Control, "in_use", s.ctlPath)
	}
	if err := s.prepareListeners(cfg); err != nil {
		fail(err)
		return
	}
	if err := s.prepareMetrics(cfg); err != nil {
		s.closeNewListeners()
		fail(err)
		return
	}
	s.reloadWait = append(s.reloadWait, waiters...)
	s.log.Info("reloading: starting a new generation", "gen", s.genSeq+1, "config", s.opts.Source.String(), "root", cfg.Root, "workers", cfg.Workers)
	if err := s.startGeneration(cfg); err != nil {
		s.abortNext(err)
	}
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
