package daemon

// Reloads: a new generation with the configuration read again, the old
// one drained once the new one is ready.

import (
	"fmt"
	"os"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
)

// maxDrainingGenerations bounds old generations still finishing transfers
// after reloads; a reload beyond it is refused rather than pile them up.
const maxDrainingGenerations = 3

// reloadReadTimeout bounds a reload's reading of its configuration and
// opening of access_log_path (readReload): milliseconds, unless a file
// system does not answer (a hung NFS mount).
const reloadReadTimeout = 10 * time.Second

// maxStuckReloadReads bounds the reads of reloads that timed out and
// have not returned (startReload).
const maxStuckReloadReads = 3

// reloadRead is a reload whose configuration is being read off the loop.
type reloadRead struct {
	seq     uint64
	waiters []reloadWaiter
	timer   *loopTimer
}

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

// startReload runs a reload for waiters (state serving). Its first step,
// reading the configuration (which looks at the root) and opening
// access_log_path, touches file systems that may not answer, so it runs
// off the loop (readReload), which goes on accepting, answering zctl and
// telling systemd's watchdog it is alive; the rest follows in
// reloadReadDone, or the reload fails after reloadReadTimeout.
//
// A read that timed out may never return (a hard NFS mount), and holds a
// thread meanwhile. A few such reads may wait (the next reload may not
// need that file system: the operator moved access_log_path off it);
// beyond maxStuckReloadReads a reload fails at once instead of starting
// another read, so that reloads retried meanwhile (a script, SIGHUPs) do
// not pile up threads until the runtime's limit kills the supervisor.
func (s *Supervisor) startReload(waiters []reloadWaiter) {
	s.setState(stateReloading)
	s.env.notify("RELOADING=1")
	if s.readsOut >= maxStuckReloadReads {
		s.reloadFailed(fmt.Errorf("the reads of the configuration %s and access_log_path by %d earlier reloads, which took over %v, have not returned (a file system that does not answer?); nothing changed",
			s.opts.Source, s.readsOut, reloadReadTimeout), waiters)
		return
	}
	s.readSeq++
	s.readsOut++
	seq := s.readSeq
	s.reading = &reloadRead{seq: seq, waiters: waiters, timer: s.after(reloadReadTimeout, evReloadReadTimeout{seq})}
	go func() {
		cfg, access, err := readReload(s.opts.Source)
		if !s.post(evReloadReadDone{seq: seq, cfg: cfg, access: access, err: err}) && access != nil {
			access.Close() // the loop has ended
		}
	}()
}

// readReload reads the configuration from src and opens its
// access_log_path, off the loop.
func readReload(src config.Source) (*config.Config, *os.File, error) {
	cfg, err := src.Load()
	if err != nil {
		return nil, nil, fmt.Errorf("invalid configuration, nothing changed: %w", err)
	}
	access, err := openAccessLog(cfg)
	if err != nil {
		return nil, nil, err
	}
	return cfg, access, nil
}

// reloadReadDone goes on with the reload whose configuration e read. A
// read that comes after its reload ended (it timed out, or a drain or a
// kill aborted it) is dropped.
func (s *Supervisor) reloadReadDone(e evReloadReadDone) {
	s.readsOut--
	r := s.reading
	if r == nil || r.seq != e.seq {
		if e.access != nil {
			e.access.Close()
		}
		return
	}
	s.reading = nil
	r.timer.stop()
	if e.err != nil {
		s.reloadFailed(e.err, r.waiters)
		return
	}
	s.continueReload(e.cfg, e.access, r.waiters)
}

// reloadReadTimedOut fails the reload whose read has taken
// reloadReadTimeout. The read goes on; what it gets is dropped.
func (s *Supervisor) reloadReadTimedOut(seq uint64) {
	if s.reading == nil || s.reading.seq != seq {
		return
	}
	s.abortRead(fmt.Errorf("reading the configuration %s and opening access_log_path took over %v (a file system that does not answer?); nothing changed",
		s.opts.Source, reloadReadTimeout))
}

// abortRead fails the reload whose configuration is being read, if any
// (it timed out, or a drain or a kill started).
func (s *Supervisor) abortRead(err error) {
	r := s.reading
	if r == nil {
		return
	}
	s.reading = nil
	r.timer.stop()
	s.reloadFailed(err, r.waiters)
}

// continueReload is the rest of a reload, with cfg read and its
// access_log_path opened (access, nil for none), which it hands to the
// new generation or closes.
func (s *Supervisor) continueReload(cfg *config.Config, access *os.File, waiters []reloadWaiter) {
	fail := func(err error) {
		if access != nil {
			access.Close()
		}
		s.reloadFailed(err, waiters)
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
	if err := s.startGeneration(cfg, access); err != nil {
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
