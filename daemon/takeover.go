package daemon

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/proxyproto"
	"github.com/zfs-serve/zfs-serve/wire"
)

// Taking over a port from a draining instance, without systemd.
//
// Every listener zfs-serve binds itself has SO_REUSEPORT (and
// SO_REUSEADDR), so a new instance can bind the same address while the old
// one drains. A drain never closes the listeners: the draining instance
// goes on accepting and answers every new connection "draining" in the
// client's protocol (refuse.go), which clients retry, until it exits.
//
// Two things make the hand-over lose nothing:
//
//   - steerAway: at the start of a drain, the old instance attaches a
//     classic BPF program to its SO_REUSEPORT group that picks the
//     group's second socket (index 1). While the old socket is alone the
//     index is out of range and the kernel falls back to its hash, so it
//     keeps answering "draining"; from the moment a new instance's socket
//     joins, every new connection goes to the new one, and the old
//     socket's accept queue stops filling. With two instances draining
//     the second socket is not the newest: group.go makes the one in its
//     place leave.
//   - closeListener: closing a socket of a SO_REUSEPORT group resets the
//     connections still in its accept queue (unless the sysctl
//     net.ipv4.tcp_migrate_req is 1). So before it closes a socket it
//     owns alone, the supervisor accepts what is queued and answers it
//     (hands it to a worker, or refuses it "draining"). A connection that
//     completes its handshake in the instant between that last accept
//     and the close can still be reset: a client retries that too.
//
// SO_REUSEPORT would also let a second instance share a port with one
// that is serving, by mistake. checkTakeover prevents it: before binding
// an address with a fixed port, the new instance asks whatever answers
// there, in the native protocol, and binds only if nothing answers or a
// draining zfs-serve does; otherwise it fails with "address already in
// use" as before. On a proxy: address the question starts with a PROXY v2
// LOCAL header, as the balancer's own health checks do. The kernel itself only lets sockets of the same
// effective uid share a port.

// probeTimeout bounds checkTakeover's connection and its answer. A
// variable only so that tests can shorten it.
var probeTimeout = 2 * time.Second

// The check and the bind are not one step: two instances started at the
// same moment could both find nothing there and both bind, and serve on
// one port. So each holds a lock for the port across both: a listening
// abstract unix socket named after the port, which the kernel releases
// when its process dies, however it dies. The second then finds the
// first's socket (which answers nothing until its workers are ready, or
// answers that it serves) and fails with "address already in use".
// Anyone on the machine can bind an abstract name, but only a process of
// our own user can share our port (SO_REUSEPORT): a lock held by another
// user (its SO_PEERCRED says so, or it does not listen) is not waited
// for, and one of ours only for portLockWait.

// portLockWait bounds the wait for another instance's port lock: longer
// than its check and bind can take (a probe of up to four tries).
var portLockWait = 5*probeTimeout + time.Second

// beforeBind runs between the check and the bind; tests use it to make
// two starts race.
var beforeBind = func() {}

// portLockName is the abstract unix socket that locks a port.
func portLockName(port string) *unix.SockaddrUnix {
	return &unix.SockaddrUnix{Name: "@zfs-serve/port/" + port}
}

// lockPort takes the lock of addr's port (a fixed port: port 0 needs
// none) and returns its release.
func (s *Supervisor) lockPort(addr string) (unlock func()) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "0" {
		return func() {}
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return func() {}
	}
	name := portLockName(port)
	deadline := time.Now().Add(portLockWait)
	checked := false
	for {
		err := unix.Bind(fd, name)
		if err == nil {
			if err := unix.Listen(fd, 8); err == nil { // for lockHolderUID
				return func() { unix.Close(fd) }
			}
		}
		why := ""
		switch {
		case err != nil && err != unix.EADDRINUSE:
			why = err.Error()
		case err == nil:
			why = "listen failed"
		case !checked:
			checked = true
			if uid, ok := lockHolderUID(name); !ok || uid != os.Geteuid() {
				s.log.Debug("the port's lock is held by another user's process: not waiting for it", "addr", addr, "lock", name.Name, "uid", uid)
				unix.Close(fd)
				return func() {}
			}
		case time.Now().After(deadline):
			why = "held too long by another process of this user"
		}
		if why != "" {
			unix.Close(fd)
			s.log.Warn("cannot take the lock of the port; binding without it", "addr", addr, "lock", name.Name, "why", why)
			return func() {}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lockHolderUID is the uid of the process that listens on the abstract
// socket name (SO_PEERCRED of a connection to it); ok is false if nothing
// listens there.
func lockHolderUID(name *unix.SockaddrUnix) (uid int, ok bool) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, false
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, name); err != nil {
		return -1, false
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return -1, false
	}
	return int(cred.Uid), true
}

// checkTakeover reports whether addr may be bound: nothing answers there
// (bind then decides), or a draining zfs-serve does (draining is then
// true: this instance takes the port over). proxy: addr is a proxy:
// listener.
func checkTakeover(addr string, proxy bool) (draining bool, err error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "0" {
		return false, nil // bind reports a bad address; port 0 is always a new one
	}
	if err := notLocal(addr); err != nil {
		return false, err
	}
	for try := 0; ; try++ {
		st, err := probe(addr, proxy)
		switch {
		case errors.Is(err, unix.ECONNREFUSED):
			return false, nil // nobody listens: bind decides
		case err == nil && st == wire.StatusDraining:
			return true, nil
		case (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, unix.ECONNRESET)) && try < 3:
			// Closed without an answer: most likely an instance exiting
			// right now. Ask again.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		what := "it does not answer"
		if err == nil {
			what = "it answers " + st.String()
		}
		return false, fmt.Errorf("listen %s: address already in use: %s, unlike a draining zfs-serve (a new instance takes a port over only from a draining one)", addr, what)
	}
}

// probeDest is where a takeover probe of addr connects: its address, or
// 127.0.0.1 for an unspecified host ("", 0.0.0.0, ::), as Go dials a
// wildcard over "tcp". ok is false for a host name ("localhost").
func probeDest(addr string) (dest netip.AddrPort, ok bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return dest, false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return dest, false
	}
	ip := netip.IPv4Unspecified()
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil {
			return dest, false
		}
	}
	if ip = ip.Unmap().WithZone(""); ip.IsUnspecified() {
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	return netip.AddrPortFrom(ip, uint16(p)), true
}

// probesOwn reports whether a takeover probe of addr would connect where
// one of own, the addresses this daemon listens on (with their actual
// ports), would: for a reload that turns 127.0.0.1:PORT into
// 0.0.0.0:PORT, say. This daemon, which serves, would answer it, and say
// nothing of anyone else (nothing else serves there: this daemon's own
// check of that address, when it bound it, would have found it, and any
// zfs-serve started since asked there and found this one). Such an
// address is bound without the probe.
func probesOwn(addr string, own []string) bool {
	d, ok := probeDest(addr)
	if !ok {
		return false
	}
	for _, o := range own {
		if od, ok := probeDest(o); ok && od == d {
			return true
		}
	}
	return false
}

// notLocal returns the error bind would give for addr if its host is not
// an address of this machine (EADDRNOTAVAIL: a typo, or an interface not
// up yet at boot), found by binding a UDP socket to the host alone, which
// neither listens nor sends; else nil, and bind decides. The takeover
// checks ask it before they connect to addr: for an address that is not
// ours, that connection would go out to whichever host has it, and its
// answer, or its silence, would be reported as "address already in use".
func notLocal(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(host) == nil {
		return nil // "" (every address) or "localhost": local
	}
	c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err == nil {
		c.Close()
		return nil
	}
	if !errors.Is(err, syscall.EADDRNOTAVAIL) {
		return nil
	}
	return fmt.Errorf("listen %s: bind: %w (%s is not an address of this machine)", addr, syscall.EADDRNOTAVAIL, host)
}

// probe asks the server at addr for STAT / and returns the answer's
// status; with proxy, after a PROXY v2 LOCAL header.
func probe(addr string, proxy bool) (wire.Status, error) {
	c, err := net.DialTimeout("tcp", addr, probeTimeout)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(probeTimeout))
	var b bytes.Buffer
	if proxy {
		b.Write(proxyproto.AppendV2(nil, proxyproto.Header{Local: true}))
	}
	wire.WriteRequest(&b, &wire.Request{Op: wire.OpStat, Path: "/"})
	if _, err := c.Write(b.Bytes()); err != nil {
		return 0, err
	}
	r, err := wire.ReadResponse(bufio.NewReader(c))
	return r.Status, err
}

// steerProg is the classic BPF program of steerAway: "return 1".
var steerProg = []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 1}}

// steerAway sends the new connections of l's SO_REUSEPORT group to the
// socket that joined it after l's, if one has: see the comment at the top.
func steerAway(l syscall.Conn) error {
	rc, err := l.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
			&unix.SockFprog{Len: uint16(len(steerProg)), Filter: &steerProg[0]})
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("SO_ATTACH_REUSEPORT_CBPF: %w", err)
	}
	return nil
}

// steerListeners is steerAway for every listener this instance bound
// (systemd's stay with systemd: it keeps them for the next start).
func (s *Supervisor) steerListeners() {
	for _, l := range s.listeners {
		if l.activated || l.steered {
			continue
		}
		l.steered = true
		if err := steerAway(l.f); err != nil {
			s.log.Warn("cannot steer new connections to a new instance; they get \"draining\" until it is seen", "addr", l.addr, "err", err)
			continue
		}
		if w, err := watchGroup(l.f, l.addr); err != nil {
			s.log.Debug("cannot follow the listener's SO_REUSEPORT group (sock_diag)", "addr", l.addr, "err", err)
		} else {
			l.watch.Store(w)
		}
	}
	s.steerMetrics()
}

// maxQueued bounds the connections closeListener accepts from a queue:
// the kernel's own bound on it (somaxconn) is 4096 by default.
const maxQueued = 8192

// closeListener closes l. If this process is the only holder of the
// socket (not systemd's), what is in its accept queue is first accepted
// and dispatched, so that it is answered rather than reset by the close;
// so are the connections TCP_DEFER_ACCEPT holds in the kernel
// (acceptDeferred). It runs on the loop goroutine; l's accept loop may be accepting at the
// same time, which the kernel allows.
func (s *Supervisor) closeListener(l *listener) {
	l.closed.Store(true)
	if !l.activated {
		held := stopDeferring(l.f)
		n := s.acceptQueued(l)
		if held {
			n += s.acceptDeferred(l)
		}
		if n > 0 {
			s.log.Debug("answered the connections queued on a listener before closing it", "addr", l.addr, "connections", n)
		}
	}
	l.f.Close()
}

// acceptQueued accepts and dispatches what is queued on l, and reports
// how many connections that was.
func (s *Supervisor) acceptQueued(l *listener) int {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return 0
	}
	d := &dispatcher{s: s}
	d.from(l)
	n := 0
	for n < maxQueued {
		var aerr error
		if err := rc.Control(func(fd uintptr) { aerr = d.accept(int(fd)) }); err != nil {
			d.fds = d.fds[:0]
		}
		if len(d.fds) == 0 {
			return n
		}
		n += len(d.fds)
		d.distribute()
		if aerr != nil {
			return n
		}
	}
	return n
}
