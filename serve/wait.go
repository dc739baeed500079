package serve

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/internal/rawcall"
)

// How a kept-alive connection waits for its next request.
//
// In the default mode (waitEpoll) a kept-alive connection whose last read
// was short (conn.drained: the socket's receive queue was empty then) and
// whose buffer holds no request bytes does not read again: it parks at
// once in the server's own epoll set (park.go), its goroutine ends, and
// the set's goroutine starts a new one when the socket becomes readable.
// nginx does the same: after a short read it waits for epoll's next edge.
// The alternative, a read that fails with EAGAIN and a wait in the Go
// runtime's poller, costs a system call per request, and cannot be
// skipped there (RawConn.Read resets the poller's readiness before its
// first call: see fill). A connection whose last read filled the buffer
// reads once more first, and parks only if that read finds nothing.
//
// The socket joins the set once per connection, edge-triggered and
// persistent (EPOLLIN|EPOLLRDHUP|EPOLLET, no EPOLLONESHOT): no epoll_ctl
// per request. It is not attached to the runtime's poller for this (no
// os.File): a connection that never has to wait otherwise closes with one
// raw close, which also takes it out of the set. One that does have to
// wait in the middle of a request or a response attaches as before
// (attach.go); a socket may be in both sets.
//
// Lost wake-ups. An edge-triggered set reports a socket when bytes (or
// the client's close, or an error) arrive, whatever state the connection
// is in, so an event may come while its goroutine is busy: a pipelined
// request, or the next request sent the moment the response arrived,
// before the goroutine has parked. The set's goroutine (dispatch) handles
// an event in two steps: it sets conn.ready, then moves the state from
// connParked to connBusy (and then starts a goroutine to serve it). A
// connection parks in two steps in the opposite order (publish): it
// stores connParked, then loads ready (and s.draining, for Drain); if
// either is set it tries to move back to connBusy itself and, if it wins,
// reads instead of parking. Whoever wins that compare-and-swap owns the
// connection; the loser leaves it alone. Go's atomics are sequentially
// consistent, so of the two pairs (store then load) at least one sees the
// other's store: either dispatch finds connParked, or publish finds ready.
// And every byte that arrives after the last short read produces an event
// after that read, which dispatch handles (sets ready) after that too:
// the epoll set queues a socket whenever the socket wakes its waiters,
// and a socket already queued is reported by an epoll_wait that comes
// after. ready is cleared only by the connection's own goroutine, right
// before a read (resume), never between that read and the next
// publish, so a ready set after the last short read is still set when
// publish looks. So a byte that arrives after the last short read is
// either seen by publish or wakes the parked connection: none is lost. The
// cost is a spurious read now and then (ready set by the event of bytes
// a read had taken already): that read finds EAGAIN and the connection
// parks again, its idle_timeout unchanged (waitEdge). One thing a short
// read does not take is the client's close (or an error): one that came
// with the bytes of the event that woke the connection (a client that
// half-closes after its last request) is still to be read after them, and
// no later event reports it. dispatch notes it (conn.hup, never cleared:
// a close stays), and waitEdge reads once more instead of parking, which
// finds the end. The sweep, which takes a parked connection to check its
// idle_timeout, and Drain put it back or end it through the same publish
// (repark, park.go).
//
// What parking gives holds for these connections too: the sweep closes
// those parked past idle_timeout (conn.idleUntil), Drain closes them but
// answers a request that has reached one, header_timeout runs from a
// request's first bytes (armed before any read that has to wait), and the
// HTTP buffer goes back to its pool.

// waitMode is how a kept-alive connection waits for its next request.
type waitMode uint8

const (
	waitDefault waitMode = iota // the environment's (ZFS_SERVE_KEEPALIVE_WAIT), else waitEpoll
	waitEpoll                   // parked at once, in the server's epoll set, edge-triggered (this file)
	waitPoller                  // a read, then the runtime's poller; parked after a sweep period idle (park.go)
)

func (m waitMode) String() string {
	switch m {
	case waitEpoll:
		return "epoll"
	case waitPoller:
		return "poller"
	}
	return "default"
}

// keepAliveWaitEnv names the environment variable that picks the mode:
// "epoll" (the default) or "poller". It is an experiment switch for A/B
// measurements (bench/findings.md), read once per process, not a
// configuration key.
const keepAliveWaitEnv = "ZFS_SERVE_KEEPALIVE_WAIT"

var envWait, envWaitErr = parseWait(os.Getenv(keepAliveWaitEnv))

func parseWait(v string) (waitMode, error) {
	switch v {
	case "", "epoll":
		return waitEpoll, nil
	case "poller":
		return waitPoller, nil
	}
	return waitEpoll, fmt.Errorf("%s=%q: want epoll or poller", keepAliveWaitEnv, v)
}

// waitEdge is readIdle for a kept-alive connection in waitEpoll mode. It
// returns errPark when the connection should park: nothing to read.
func (c *conn) waitEdge() error {
	if c.resumed {
		// Woken by an event (resume cleared ready just before).
		c.resumed = false
		if ok, err := c.fillNow(); ok {
			// header_timeout is armed by the caller before any read that
			// has to wait for the rest of the request.
			return err
		}
		// Spurious: the event was for bytes an earlier read took. Park
		// again, under the same idle_timeout.
		return errPark
	}
	c.idleFrom(time.Now())
	if !c.drained || c.hup.Load() {
		// The last read filled the buffer: more may be waiting. Or the
		// client's close (or an error) came with the last bytes, in the
		// event that woke the connection: the short read left it in the
		// socket, and no later event would report it.
		if ok, err := c.fillNow(); ok {
			return err
		}
	}
	return errPark
}

// idleFrom starts a kept-alive connection's idle_timeout at now, coarsely
// (idleStale), as readIdle does.
func (c *conn) idleFrom(now time.Time) {
	timeout := c.s.opts.IdleTimeout
	n := now.UnixNano()
	if idleStale(time.Duration(c.idleUntil.Load()-n), timeout) {
		c.idleUntil.Store(n + int64(timeout))
	}
}

// idleStale reports whether a kept-alive connection's idle deadline, left
// from now, must move to a whole idle_timeout from now. Coarse: it moves
// at most about once a second (or per tenth of the timeout), not per
// request. One further away than the timeout is another's
// (header_timeout's, from the request's read).
func idleStale(left, timeout time.Duration) bool {
	return left < timeout-min(time.Second, timeout/10) || left > timeout
}

// parkEdge parks c in waitEpoll mode: registered in the set (once), its
// HTTP buffer handed back, published as parked. It reports whether the
// caller's goroutine still owns c and must read (an event came while it
// was busy); otherwise the goroutine may end.
func (c *conn) parkEdge() (again bool) {
	s := c.s
	if !c.polled {
		if err := s.register(c); err != nil {
			c.unlead()
			s.log.Error("cannot park an idle connection; closing it", "client", c.client, "err", err)
			c.res.Outcome = OutcomeError
			c.finish()
			return false
		}
	}
	c.putHTTP()
	c.idleTick.Store(s.park.tick.Load())
	if !c.publish() {
		return false
	}
	if s.draining.Load() {
		c.drainOrResume()
		return false
	}
	return true
}

// publish makes c parked, then looks for an event that came while it was
// not (ready) and for a drain: if there is one and it takes c back before
// anyone else does, it returns true and the caller owns c again. After
// it returns false the caller must not touch c. (The argument that no
// wake-up is lost is at the top of this file.)
func (c *conn) publish() (mine bool) {
	t := c.lead
	c.lead = nil // others may own c from the store on (leader.go)
	c.state.Store(connParked)
	if !c.ready.Load() && !c.s.draining.Load() {
		return false
	}
	if !c.state.CompareAndSwap(connParked, connBusy) {
		return false
	}
	c.lead = t
	return true
}

// register adds c's socket to the epoll set for good: edge-triggered,
// without EPOLLONESHOT, so it is never re-armed. The close of the socket
// takes it out.
func (s *Server) register(c *conn) error {
	ep, err := s.epoll()
	if err != nil {
		return err
	}
	s.park.add(c)
	c.polled = true // finish takes it out of the registry
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(uint32(c.seq)), Pad: int32(uint32(c.seq >> 32))}
	if err := rawcall.EpollCtl(ep, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}
