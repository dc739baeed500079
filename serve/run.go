package serve

import "github.com/zfs-serve/zfs-serve/internal/rawcall"

// How a worker hands the server a connection, and how the connection ends
// (park.go: how it waits in between without a goroutine).

// Run serves the connection on the socket fd, which must be non-blocking
// (checked unless ci.Nonblocking vouches for it), until the client closes, a timeout, an error or a drain, and closes fd.
// It returns as soon as the connection waits for a request without a
// goroutine (parked, park.go) or has ended: done is called exactly once,
// with the result, when it has ended, from whichever goroutine ended it
// (never with a lock of the server's held). The socket joins the runtime
// poller only when the connection first has to wait (attach.go).
func (s *Server) Run(fd int, ci ConnInfo, done func(Result)) {
	c := &conn{s: s, fd: fd, client: ci.Client, proxy: ci.Proxy, admitAsk: ci.Admit, id: ci.ID, done: done}
	c.buf = c.rbuf[:]
	s.wg.Add(1)
	c.seq = s.totalConns.Add(1)
	s.startSweep()
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	if !ci.Nonblocking && !rawcall.Nonblocking(fd) {
		// A blocking socket would hold the worker's only P in a raw
		// read (internal/rawcall), stopping every other connection and the garbage
		// collector until its client spoke.
		s.log.Error("cannot serve connection: its socket is blocking, or not a descriptor", "client", ci.Client)
		c.res.Outcome = OutcomeError
		c.finish()
		return
	}
	if c.parkOrFinish(c.serve()) {
		c.resume()
	}
}

// finish ends the connection: it closes the socket and reports the result.
func (c *conn) finish() {
	s := c.s
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	if c.polled {
		s.park.remove(c.seq)
	}
	c.close()
	c.putHTTP()
	s.wg.Done()
	c.done(c.res)
}
