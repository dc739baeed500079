package daemon

import "golang.org/x/sys/unix"

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
