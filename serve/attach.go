package serve

import (
	"os"
	"time"

	"github.com/zfs-serve/zfs-serve/internal/rawcall"
)

// A connection starts as a bare descriptor, outside the runtime poller.
// Its reads and sends are non-blocking system calls (internal/rawcall), and as long
// as each of them makes progress nothing needs the poller: a client that
// opens a connection, sends one request that arrives whole, reads a
// response that fits in the socket buffer and asks for the close (HTTP's
// "Connection: close", or a native client whose close has arrived by the
// time the response is out) is served and closed without it. The first
// call that would have to wait attaches the socket: os.NewFile (an fcntl
// to check O_NONBLOCK and the poller's epoll_ctl), from then on reads and
// sends wait in the poller under their deadlines as before, and the close
// is the os.File's (the poller's epoll_ctl, then close). Attaching saves a
// short connection three system calls and the wait in the poller that
// lingering or reading the client's close costs. A kept-alive connection
// waits for its next request in the server's own epoll set (wait.go),
// attached or not; in waitPoller mode it attaches before its first wait
// for a next request (readIdle), so that a drain or the sweep can wake an
// idle one through its deadline.

// attach registers the socket with the runtime poller and applies the
// deadlines set while it was not. Only the connection's own goroutine calls
// it; Drain and the sweep touch c.f only of connections in connIdle, which
// readIdle sets after attaching (the state's atomic store publishes c.f).
func (c *conn) attach() {
	if c.f != nil {
		return
	}
	c.s.attaches.Add(1)
	f := os.NewFile(uintptr(c.fd), c.client)
	rc, err := f.SyscallConn()
	if err != nil {
		// Not possible for an *os.File made from a valid descriptor; keep
		// the contract (c.rc usable) with an error on every call.
		rc = brokenConn{err}
	}
	c.f, c.rc = f, rc
	// Bound here, not at Run: most connections never wait in the
	// poller, and each binding is an allocation.
	c.runOp, c.runRead = c.doOp, c.doRead
	if !c.rdl.IsZero() {
		f.SetReadDeadline(c.rdl)
	}
	if !c.wdl.IsZero() {
		f.SetWriteDeadline(c.wdl)
	}
}

// close closes the socket: through its os.File once attached, else raw
// (internal/rawcall: closing a socket without SO_LINGER does not wait).
func (c *conn) close() {
	if c.f != nil {
		c.f.Close()
		return
	}
	rawcall.Close(c.fd)
}

// setReadDeadline records t and, once attached, applies it.
func (c *conn) setReadDeadline(t time.Time) {
	c.rdl = t
	if c.f != nil {
		c.f.SetReadDeadline(t)
	}
}

type brokenConn struct{ err error }

func (b brokenConn) Control(func(uintptr)) error    { return b.err }
func (b brokenConn) Read(func(uintptr) bool) error  { return b.err }
func (b brokenConn) Write(func(uintptr) bool) error { return b.err }
