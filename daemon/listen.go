package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
)

// Socket names under systemd (FileDescriptorName= in the .socket units).
// A file socket whose name starts with FDNameProxy ("proxy",
// "proxy-haproxy") is a PROXY protocol listener (docs/PROXY.md).
const (
	FDNameFiles   = "zfs"
	FDNameControl = "control"
	FDNameProxy   = "proxy"
	FDNameMetrics = "metrics" // the metrics and health listener (metrics_http.go)
)

// listener is one listening socket for file connections.
type listener struct {
	name       string
	configured string   // the address as configured; "" when socket-activated
	f          *os.File // non-blocking, in the runtime poller: accept4 via SyscallConn().Read
	addr       string
	activated  bool
	accepting  bool        // its accept loop runs
	closed     atomic.Bool // set before f is closed, so the accept loop knows why it ended
	added      bool        // bound by a reload not yet promoted
	removed    bool        // to be closed when a reload is promoted
	steered    bool        // steerAway done (a drain started)
	// proxy: every connection starts with a PROXY header (proxy:ADDR or
	// a socket named proxy*). A reload may change it (nextProxy, applied
	// with the other listener changes); accept loops read it.
	proxy     atomic.Bool
	nextProxy bool
	// watch follows the SO_REUSEPORT group once steered (group.go): set
	// on the loop, used by the accept loop.
	watch atomic.Pointer[groupWatch]
}

// activatedSockets are the sockets systemd passed, sorted by name.
type activatedSockets struct {
	files   []*os.File // FDNameFiles or FDNameProxy*: listeners for file connections
	control *os.File   // FDNameControl: the control socket, or nil
	metrics *os.File   // FDNameMetrics: the metrics listener, or nil
	unknown []*os.File // any other name: logged as errors and closed by the caller
}

// inheritedSockets takes the sockets systemd passed (LISTEN_FDS), by name,
// never by position: systemd's fd order is not stable across boots. It
// calls activation.Files once, which unsets LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES and marks the fds close-on-exec, so workers inherit
// neither. Without LISTEN_FDS it returns nothing and the configured
// addresses are bound instead.
func inheritedSockets(log *slog.Logger) activatedSockets {
	if os.Getenv("LISTEN_FDS") == "" {
		return activatedSockets{}
	}
	pid, n, names := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	files := activation.Files(true)
	if len(files) == 0 {
		// sd_listen_fds(3): the variables are for another process (a
		// parent that did not unset them) or malformed; they are ignored.
		log.Warn("LISTEN_FDS is set but passes no socket to this process; ignoring it and binding the configured addresses",
			"LISTEN_PID", pid, "pid", os.Getpid(), "LISTEN_FDS", n)
		return activatedSockets{}
	}
	if names == "" {
		log.Error("systemd passed sockets without names (no LISTEN_FDNAMES): zfs-serve picks them by name, so give each .socket unit FileDescriptorName=" +
			FDNameFiles + " (" + FDNameProxy + "... for a PROXY protocol listener) or FileDescriptorName=" + FDNameControl)
	}
	return sortSockets(files, log)
}

// sortSockets sorts activated sockets by name. A second socket named
// FDNameControl is an error: it is logged and closed here.
func sortSockets(files []*os.File, log *slog.Logger) activatedSockets {
	var a activatedSockets
	for _, f := range files {
		switch name := f.Name(); {
		case name == FDNameFiles || strings.HasPrefix(name, FDNameProxy):
			a.files = append(a.files, f)
		case name == FDNameControl:
			if a.control != nil {
				log.Error("systemd passed more than one socket named " + FDNameControl + "; using the first, closing the others")
				f.Close()
				continue
			}
			a.control = f
		case name == FDNameMetrics:
			if a.metrics != nil {
				log.Error("systemd passed more than one socket named " + FDNameMetrics + "; using the first, closing the others")
				f.Close()
				continue
			}
			a.metrics = f
		default:
			a.unknown = append(a.unknown, f)
		}
	}
	return a
}

func (s *Supervisor) openListeners(a activatedSockets) error {
	if len(a.files) > 0 {
		for _, f := range a.files {
			name := f.Name()
			ln, err := net.FileListener(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("socket-activated fd %q is not a listening stream socket: %w", name, err)
			}
			setNoDelay(ln)
			pf, err := pollable(ln)
			if err != nil {
				return err
			}
			l := &listener{name: name, f: pf, addr: ln.Addr().String(), activated: true}
			l.proxy.Store(strings.HasPrefix(name, FDNameProxy))
			s.listeners = append(s.listeners, l)
			s.log.Info("listening (socket-activated)", "name", l.name, "addr", l.addr, "proxy", l.proxy.Load())
		}
		if len(s.cfg.Listen) > 0 && !slices.Equal(s.cfg.Listen, []string{config.DefaultListen}) {
			s.log.Info("socket-activated: the configured listen addresses are not used", "listen", s.cfg.Listen)
		}
		return nil
	}
	for _, addr := range s.cfg.Listen {
		l, err := s.bind(addr)
		if err != nil {
			s.closeListeners()
			return err
		}
		s.listeners = append(s.listeners, l)
		s.log.Info("listening", "name", l.name, "addr", l.addr, "proxy", l.proxy.Load())
	}
	return nil
}

// bind listens on a configured address (a listen entry, proxy:ADDR
// included), with SO_REUSEPORT so that a new instance can take it over
// while this one drains, after checkTakeover (takeover.go) made sure that
// no instance serves on it.
func (s *Supervisor) bind(entry string) (*listener, error) {
	addr, proxy := config.SplitListen(entry)
	unlock := s.lockPort(addr)
	defer unlock()
	var own []string
	for _, l := range s.listeners {
		if !l.closed.Load() {
			own = append(own, l.addr)
		}
	}
	draining := false
	if !probesOwn(addr, own) {
		var err error
		if draining, err = checkTakeover(addr, proxy); err != nil {
			return nil, err
		}
	}
	if draining {
		s.log.Info("a draining zfs-serve answers on this address: taking the port over; it finishes its transfers, new connections come here", "addr", addr)
	}
	beforeBind()
	l, err := listenTCP(addr)
	if err != nil {
		return nil, err
	}
	l.proxy.Store(proxy)
	l.nextProxy = proxy
	return l, nil
}

// listenTCP binds addr (plain TCP) with SO_REUSEPORT and TCP_NODELAY.
func listenTCP(addr string) (*listener, error) {
	ln, err := listenReusePort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	f, err := pollable(ln)
	if err != nil {
		return nil, err
	}
	return &listener{name: FDNameFiles, configured: addr, f: f, addr: ln.Addr().String()}, nil
}

// listenReusePort listens on addr (plain TCP) with SO_REUSEPORT, so that a
// new instance can take the address over while this one drains, and
// TCP_NODELAY.
func listenReusePort(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) {
			// Accepted sockets inherit TCP_NODELAY: headers are sent with
			// MSG_MORE and bodies end with a push, so Nagle only adds delay.
			// SO_REUSEADDR is Go's default for listeners.
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
		})
		return serr
	}}
	// Plain TCP, not Go's default MPTCP: systemd's sockets are TCP too,
	// and an MPTCP socket refuses SO_ATTACH_REUSEPORT_CBPF (steerAway).
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), "tcp", addr)
}

// pollable turns a net.Listener into a non-blocking *os.File registered
// with the runtime poller, and closes ln. A net.Listener's RawConn cannot
// wait for readability (Read returns EINVAL); an *os.File's can, which
// lets the accept loop call accept4 itself.
func pollable(ln net.Listener) (*os.File, error) {
	defer ln.Close()
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("listener %s has no file descriptor", ln.Addr())
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup listener: %w", derr)
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, err
	}
	return os.NewFile(uintptr(nfd), "listener "+ln.Addr().String()), nil
}

func setNoDelay(ln net.Listener) {
	if tl, ok := ln.(*net.TCPListener); ok {
		if rc, err := tl.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) })
		}
	}
}

func (s *Supervisor) startAccepting() {
	if !s.supervisorAccepts() { // accept mode hook (acceptmode.go): the workers accept
		return
	}
	for _, l := range s.listeners {
		if !l.accepting {
			l.accepting = true
			go s.acceptLoop(l)
		}
	}
}

func (s *Supervisor) closeListeners() {
	for _, l := range s.listeners {
		s.closeListener(l)
	}
	s.listeners = nil
}

// prepareListeners binds the addresses a new configuration adds and marks
// those it drops; nothing changes for clients until applyListenerChanges.
// A listener whose configured address is unchanged is kept as it is, so an
// ephemeral ":0" listener keeps its port; adding or removing "proxy:" in
// front of it only changes whether its new connections need a header.
func (s *Supervisor) prepareListeners(cfg *config.Config) error {
	for _, l := range s.listeners {
		if l.activated {
			return nil // systemd owns the listeners; the config's listen is not used
		}
	}
	entry := func(l *listener) (proxy, found bool) {
		for _, e := range cfg.Listen {
			if addr, proxy := config.SplitListen(e); addr == l.configured {
				return proxy, true
			}
		}
		return false, false
	}
	for _, l := range s.listeners {
		var found bool
		l.nextProxy, found = entry(l)
		l.removed = !found
	}
	for _, e := range cfg.Listen {
		addr, _ := config.SplitListen(e)
		if slices.ContainsFunc(s.listeners, func(l *listener) bool { return l.configured == addr }) {
			continue
		}
		l, err := s.bind(e)
		if err != nil {
			s.closeNewListeners()
			return err
		}
		l.added = true
		s.listeners = append(s.listeners, l)
	}
	return nil
}

func (s *Supervisor) applyListenerChanges() {
	kept := s.listeners[:0]
	for _, l := range s.listeners {
		if l.removed {
			s.log.Info("listener closed by reload", "addr", l.addr)
			s.closeListener(l)
			continue
		}
		if l.added {
			s.log.Info("listening", "name", l.name, "addr", l.addr, "proxy", l.proxy.Load())
		} else if l.nextProxy != l.proxy.Load() {
			l.proxy.Store(l.nextProxy)
			s.log.Info("listener changed by reload: new connections start with a PROXY header, or not", "addr", l.addr, "proxy", l.nextProxy)
		}
		l.added = false
		kept = append(kept, l)
	}
	s.listeners = kept
	s.startAccepting()
}

// closeNewListeners undoes prepareListeners.
func (s *Supervisor) closeNewListeners() {
	kept := s.listeners[:0]
	for _, l := range s.listeners {
		l.removed = false
		if l.added {
			s.closeListener(l)
			continue
		}
		kept = append(kept, l)
	}
	s.listeners = kept
}

func (s *Supervisor) listenerAddrs() []string {
	var out []string
	for _, l := range s.listeners {
		out = append(out, l.addr)
	}
	return out
}
