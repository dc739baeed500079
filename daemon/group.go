package daemon

import (
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"
)

// Leaving the SO_REUSEPORT group (see takeover.go for the group itself).
//
// steerAway's program picks the group's second socket. The kernel keeps a
// group's sockets in an array: a socket that joins is appended, one that
// leaves is replaced by the last. With one draining instance and a new one
// that is right: [old, new]. With two draining instances (a restart during
// the drain of the one before) it is not: [old1, old2, new] sends every
// new connection to old2, which answers "draining" while the new instance
// gets nothing, until both old ones have exited; and once old1 has gone,
// [new, old2] still does.
//
// So a draining instance that goes on getting connections while a socket
// that joined its group after its drain started listens there is the one
// the program picks, wrongly: it leaves the group (closeListener: what is
// queued is answered first), which puts the last socket in its place.
// The steered instance at index 0 gets nothing and stays: if the new
// instance fails to start, it answers "draining" again. A draining
// instance looks at its group (sock_diag) only when it gets a
// connection, at most every groupCheckEvery, and leaves only when a
// second look finds the newer socket still there while connections keep
// coming: those that reached it by the kernel's hash just before the
// newer socket joined (while it was alone) do not make it leave.
//
// The same holds for a newer socket at the wildcard address of the port
// (a new instance configured with 0.0.0.0 where the old one had
// 127.0.0.1): it is in a group of its own, and the kernel prefers the
// exact address, so the old socket gets every connection to it until it
// closes.

// groupCheckEvery spaces a draining listener's looks at its group. A
// variable only so that tests can change it.
var groupCheckEvery = 250 * time.Millisecond

// groupWatch follows the SO_REUSEPORT group of one steered listener. It
// is used by the goroutine that accepts on the listener, and only by it.
type groupWatch struct {
	ap      netip.AddrPort
	own     uint64          // the listener's socket cookie
	before  map[uint64]bool // the sockets listening for ap when the drain started (listeningCookies)
	next    time.Time       // no look before
	suspect bool            // the last look found a newer socket
	left    bool            // accepted said to leave
}

// watchGroup starts following the group of the listening socket c,
// bound to addr, as it is now.
func watchGroup(c syscall.Conn, addr string) (*groupWatch, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	own, err := socketCookie(c)
	if err != nil {
		return nil, err
	}
	cs, err := listeningCookies(ap)
	if err != nil {
		return nil, err
	}
	g := &groupWatch{ap: ap, own: own, before: map[uint64]bool{}}
	for _, c := range cs {
		g.before[c] = true
	}
	return g, nil
}

// accepted is called after the listener accepted connections at now. It
// reports, once, that the listener should leave its group.
func (g *groupWatch) accepted(now time.Time) bool {
	if g.left || now.Before(g.next) {
		return false
	}
	g.next = now.Add(groupCheckEvery)
	if !g.newer() {
		g.suspect = false
		return false
	}
	if !g.suspect {
		g.suspect = true
		return false
	}
	g.left = true
	return true
}

// newer reports whether a socket that was not there when the watch
// started listens in the group, or at the port's wildcard address, now.
func (g *groupWatch) newer() bool {
	cs, err := listeningCookies(g.ap)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(cs, func(c uint64) bool { return c != g.own && !g.before[c] })
}

// leaveGroup closes a draining instance's file listener that a newer
// instance's socket should have taken the place of (on the loop).
func (s *Supervisor) leaveGroup(l *listener) {
	i := slices.Index(s.listeners, l)
	if i < 0 {
		return
	}
	s.log.Info("a newer instance listens on this address, yet new connections still come here: closing this draining instance's socket so that they go to the newer one", "addr", l.addr)
	s.listeners = slices.Delete(s.listeners, i, i+1)
	s.closeListener(l)
}

// leaveMetrics is leaveGroup for the metrics listener.
func (s *Supervisor) leaveMetrics(ml *metricsListener) {
	if s.metrics.listener != ml || ml.left.Load() {
		return
	}
	s.log.Info("a newer instance listens on the metrics address, yet new connections still come here: closing this draining instance's metrics socket so that they go to the newer one", "addr", ml.addr)
	ml.left.Store(true)
	ml.ln.Close()
}

// watchedListener tells onAccept of every connection it accepts.
type watchedListener struct {
	net.Listener
	onAccept func()
}

func (l watchedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.onAccept()
	}
	return c, err
}
