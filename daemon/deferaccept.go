package daemon

import (
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// applyDeferAccept sets TCP_DEFER_ACCEPT on every TCP listener when on
// (defer_accept, the default), as nginx's "deferred" does: the kernel
// completes the handshake but queues the connection for accept only once
// its first bytes have arrived (every client of zfs-serve speaks first).
// Whoever accepts (the supervisor in the handoff mode, a worker in the
// accept mode) then finds the request already there, and the worker's
// first read returns it: without it, a connection accepted at the
// handshake is read before its request arrives, and that read fails with
// EAGAIN and costs one more wait in the poller, wake-up and context
// switch (bench/findings.md). A connection that sends nothing is queued
// only after about a second (or once it sends its FIN).
//
// It runs at the start and at every reload, on every listener: a socket
// that has a value already keeps it (DeferAcceptSec= in a systemd .socket
// unit: the operator's). When off it clears the value this function sets
// (1 s), which would otherwise outlive the process on a socket systemd
// keeps across restarts, and leaves a longer one alone. Best effort: a
// socket that is not TCP has no such option, and an error only costs
// the saving.
func (s *Supervisor) applyDeferAccept(on bool) {
	for _, l := range s.listeners {
		if l.f == nil {
			continue
		}
		rc, err := l.f.SyscallConn()
		if err != nil {
			continue
		}
		rc.Control(func(fd uintptr) {
			v, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT)
			switch {
			case err != nil:
				return
			case on && v == 0:
				if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, ownDeferAccept); err != nil {
					s.log.Warn("set TCP_DEFER_ACCEPT (defer_accept)", "addr", l.addr, "err", err)
				}
			case !on && v == ownDeferAccept:
				if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 0); err != nil {
					s.log.Warn("clear TCP_DEFER_ACCEPT (defer_accept = false)", "addr", l.addr, "err", err)
					return
				}
				if l.activated {
					s.log.Info("cleared TCP_DEFER_ACCEPT on a socket systemd passed (defer_accept = false)", "addr", l.addr)
				}
			}
		})
	}
}

// ownDeferAccept is the TCP_DEFER_ACCEPT (seconds) applyDeferAccept sets;
// the kernel reads it back as 1.
const ownDeferAccept = 1

// deferGrace bounds how long closeListener waits for the connections that
// TCP_DEFER_ACCEPT held when it cleared it: each is queued at its client's
// first bytes, or at the kernel's next SYN-ACK, one second after its SYN.
const deferGrace = 1500 * time.Millisecond

// stopDeferring clears TCP_DEFER_ACCEPT on the listening socket f before
// it is closed, and reports whether it was set. A connection it holds has
// finished its handshake, so its client may send its request at any time,
// but it is not in the accept queue that closeListener answers: closing
// the socket would drop it, and its request would be answered with a
// reset. Cleared, the kernel queues it at its next segment.
func stopDeferring(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	held := false
	rc.Control(func(fd uintptr) {
		if v, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT); err == nil && v > 0 {
			held = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 0) == nil
		}
	})
	return held
}

// acceptDeferred accepts and dispatches, after stopDeferring, the
// connections to l that are not queued yet, as they are queued, until
// sock_diag finds none left or deferGrace has passed (a handshake that
// never completes, e.g. of a SYN flood, looks the same), and reports how
// many it accepted. It waits only when such connections exist, which is
// rare: a client sends its request right after its handshake.
func (s *Supervisor) acceptDeferred(l *listener) int {
	ap, err := netip.ParseAddrPort(l.addr)
	if err != nil {
		return 0
	}
	n := 0
	for deadline := time.Now().Add(deferGrace); ; {
		waiting, err := handshakesWaiting(ap)
		if err != nil || waiting == 0 || time.Now().After(deadline) {
			return n + s.acceptQueued(l)
		}
		time.Sleep(10 * time.Millisecond)
		n += s.acceptQueued(l)
	}
}
