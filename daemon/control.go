package daemon

// The control socket: opening it (a socket file, or systemd's), who may
// use it (control_group), and its requests as a ctl.Handler, which the
// loop answers through events (events.go).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/ctl"
)

// controlHandler is the Supervisor seen as a ctl.Handler.
type controlHandler Supervisor

func (h *controlHandler) sup() *Supervisor { return (*Supervisor)(h) }

func (h *controlHandler) Status(ctx context.Context) (*ctl.Status, error) {
	return h.sup().status(ctx)
}

func (h *controlHandler) Drain(ctx context.Context, timeout time.Duration, progress func(*ctl.Status)) error {
	s := h.sup()
	var err error
	done := make(chan struct{})
	if cerr := s.request(ctx, evDrain{timeout: timeout, why: "zctl drain", err: &err, done: done}, done); cerr != nil {
		return cerr
	}
	if err != nil || progress == nil {
		return err
	}
	return s.follow(ctx, progress, s.finished, func() error {
		// s.finished is closed: the loop is over, its fields are final.
		if s.exitReason != "" {
			return errors.New(s.exitReason)
		}
		return nil
	})
}

// follow sends status snapshots to progress until done is closed.
func (s *Supervisor) follow(ctx context.Context, progress func(*ctl.Status), done <-chan struct{}, result func() error) error {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		if st, err := s.status(ctx); err == nil {
			progress(st)
		}
		select {
		case <-done:
			return result()
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (h *controlHandler) Kill(ctx context.Context) error {
	s := h.sup()
	done := make(chan struct{})
	return s.request(ctx, evKill{why: "zctl kill", done: done}, done)
}

func (h *controlHandler) Reload(ctx context.Context, wait bool, progress func(*ctl.Status)) (string, error) {
	s := h.sup()
	type result struct {
		msg string
		err error
	}
	res := make(chan result, 1)
	queued := make(chan struct{})
	reply := func(msg string, err error) { res <- result{msg, err} }
	if err := s.request(ctx, evReload{wait: wait, reply: reply, done: queued}, queued); err != nil {
		return "", err
	}
	done := make(chan struct{})
	var r result
	go func() { r = <-res; close(done) }()
	if progress == nil {
		select {
		case <-done:
			return r.msg, r.err
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	err := s.follow(ctx, progress, done, func() error { return nil })
	if err != nil {
		return "", err
	}
	return r.msg, r.err
}

// openControl opens the control socket: systemd's "control" fd if given,
// else a socket file at the configured path.
func (s *Supervisor) openControl(a activatedSockets) error {
	gid := -1
	if s.cfg.ControlGroup != "" {
		g, err := config.LookupGroup(s.cfg.ControlGroup)
		if err != nil {
			return fmt.Errorf("control_group %q: %w", s.cfg.ControlGroup, err)
		}
		gid = g
	}
	var cl ctl.Acceptor
	if a.control != nil {
		ln, err := net.FileListener(a.control)
		a.control.Close()
		if err != nil {
			return fmt.Errorf("socket-activated control fd: %w", err)
		}
		ul, ok := ln.(*net.UnixListener)
		if !ok {
			ln.Close()
			return fmt.Errorf("socket-activated control fd is %T, want a unix stream socket", ln)
		}
		cl = ul
		s.ctlPath = ul.Addr().String()
		s.log.Info("control socket (socket-activated)", "path", s.ctlPath)
	} else {
		sock, err := ctl.Listen(s.cfg.Control, gid)
		if err != nil {
			return err
		}
		if sock.TakesOver() {
			s.log.Info("a draining zfs-serve has the control socket: taking its path over once this one serves; it keeps the connections it has", "path", s.cfg.Control)
		}
		cl, s.ctlSock = sock, sock
		s.ctlPath, s.ctlOwned = s.cfg.Control, true
	}
	s.ctlGroup = s.cfg.ControlGroup
	s.ctlGID.Store(int64(gid))
	uid := os.Getuid()
	authorize := func(p ctl.Peer) error { return ctl.Allow(uid, int(s.ctlGID.Load()))(p) }
	s.ctlSrv = &ctl.Server{Handler: (*controlHandler)(s), Authorize: authorize, Log: s.log}
	go s.ctlSrv.Serve(cl)
	return nil
}

// publishControl puts the control socket at its path if it takes the path
// over from a draining zfs-serve: once this daemon serves, so that a
// start that fails leaves the draining one its path (ctl.Socket.Publish).
func (s *Supervisor) publishControl() {
	if s.ctlSock == nil || !s.ctlSock.TakesOver() {
		return
	}
	if err := s.ctlSock.Publish(); err != nil {
		s.log.Error("cannot take the control socket's path over: zctl does not reach this daemon there", "path", s.ctlPath, "err", err)
		return
	}
	s.log.Info("took the control socket's path over from a draining zfs-serve", "path", s.ctlPath)
}

// checkControlGroup is applyControlGroup's part that can fail, run when a
// reload starts so that the reload fails with nothing changed instead of
// the group being skipped once the generation is up: the group must
// exist, and the socket file must be able to get it (at start a failure
// to chown is fatal), which a daemon not run by root can only do for a
// group it is in.
func (s *Supervisor) checkControlGroup(cfg *config.Config) error {
	if cfg.ControlGroup == "" || cfg.ControlGroup == s.ctlGroup {
		return nil
	}
	gid, err := config.LookupGroup(cfg.ControlGroup)
	if err != nil {
		return fmt.Errorf("control_group %q: %w", cfg.ControlGroup, err)
	}
	if !s.ctlOwned {
		return nil
	}
	groups, _ := os.Getgroups()
	if !canChownTo(os.Geteuid(), os.Getegid(), groups, gid) {
		return fmt.Errorf("control_group %q: this daemon (uid %d) is not in group %d, so it cannot give the control socket that group", cfg.ControlGroup, os.Geteuid(), gid)
	}
	return nil
}

// canChownTo reports whether a process with these credentials may change
// a file it owns to group gid: root may, others only to a group they are in.
func canChownTo(euid, egid int, groups []int, gid int) bool {
	return euid == 0 || gid == egid || slices.Contains(groups, gid)
}

// applyControlGroup puts a reloaded control_group in force: the peers the
// control server lets in, and the group of the socket file when it is
// ours (a socket-activated one's is systemd's SocketGroup=). Removing a
// group must take its members' access away without a restart.
func (s *Supervisor) applyControlGroup(cfg *config.Config) {
	if cfg.ControlGroup == s.ctlGroup || s.ctlSrv == nil {
		return
	}
	gid := -1
	if cfg.ControlGroup != "" {
		g, err := config.LookupGroup(cfg.ControlGroup)
		if err != nil { // checked when the reload started; gone since
			s.log.Error("control_group not changed", "control_group", cfg.ControlGroup, "err", err)
			return
		}
		gid = g
	}
	if s.ctlOwned {
		fileGID := gid
		if fileGID < 0 {
			fileGID = os.Getegid()
		}
		// Lchown: never follow a symlink put in the socket's place. The
		// authoriser changes even if this fails: it is what decides.
		if err := os.Lchown(s.ctlPath, -1, fileGID); err != nil {
			s.log.Error("control socket: cannot change its group", "path", s.ctlPath, "gid", fileGID, "err", err)
		}
	} else {
		s.log.Info("control_group changed: the socket-activated control socket's file group is set by systemd (SocketGroup=)")
	}
	s.ctlGID.Store(int64(gid))
	s.log.Info("control_group changed", "from", s.ctlGroup, "to", cfg.ControlGroup)
	s.ctlGroup = cfg.ControlGroup
}
