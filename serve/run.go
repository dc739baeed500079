package serve

import (
	"os"
	"time"
)

// How a worker hands the server a connection, and how the connection ends
// (park.go: how it waits in between without a goroutine).

// ServeConn serves the socket f (non-blocking, already registered with the
// runtime poller, e.g. by os.NewFile) until the client closes, a timeout,
// an error, or a drain. It closes f. A socket outside the poller (a
// blocking one) is closed unserved, with OutcomeError.
func (s *Server) ServeConn(f *os.File, client string) Result {
	return s.Serve(f, ConnInfo{Client: client})
}

// Serve is ServeConn for a connection described by ci (proxy.go).
func (s *Server) Serve(f *os.File, ci ConnInfo) Result {
	res := make(chan Result, 1)
	s.Run(f, ci, func(r Result) { res <- r })
	return <-res
}

// Run serves the connection f as Serve does, but returns as soon as it
// waits for a request without a goroutine (parked, park.go) or has ended:
// done is called exactly once, with the result, when it has ended, from
// whichever goroutine ended it (never with a lock of the server's held).
func (s *Server) Run(f *os.File, ci ConnInfo, done func(Result)) {
	c := &conn{s: s, f: f, client: ci.Client, proxy: ci.Proxy, admitAsk: ci.Admit, id: ci.ID, done: done}
	c.buf = c.rbuf[:]
	s.wg.Add(1)
	c.seq = s.totalConns.Add(1)
	s.startSweep()
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	rc, err := f.SyscallConn()
	if err == nil {
		// Only a socket in the runtime poller (os.NewFile found it
		// non-blocking) takes deadlines. A blocking one would hold the
		// worker's only P in a raw read (raw.go), stopping every other
		// connection and the garbage collector until its client spoke.
		err = f.SetReadDeadline(time.Time{})
	}
	if err != nil {
		s.log.Error("cannot serve connection", "client", ci.Client, "err", err)
		c.res.Outcome = OutcomeError
		c.finish()
		return
	}
	c.rc = rc
	c.runOp, c.runRead = c.doOp, c.doRead
	rc.Control(func(fd uintptr) { c.fd = int(fd) })
	c.parkOrFinish(c.serve())
}

// finish ends the connection: it closes the socket and reports the result.
func (c *conn) finish() {
	s := c.s
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.f.Close()
	c.putHTTP()
	s.wg.Done()
	c.done(c.res)
}
