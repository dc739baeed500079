package serve

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/internal/rawcall"
	"github.com/zfs-serve/zfs-serve/wire"
)

var errDrained = errors.New("drained")

// A connection's state as a drain sees it: only an idle one (waiting
// between requests) is woken and closed.
const (
	connBusy int32 = iota
	connIdle
	connKicked
	connParking // woken by the sweep to park (park.go)
	connParked  // waiting without a goroutine (park.go)
)

// readRequest waits for the next request. While a kept-alive connection
// waits it is "idle": a drain may interrupt it, and then it is closed
// unless a request had already arrived. A new connection is never idle: it
// was accepted for a request, so a drain that starts meanwhile still
// answers that one (the client would otherwise see a close with no
// response, e.g. across a reload). Requests are read into a small
// per-connection buffer, so header and path (sent together by every
// client) cost one read, and pipelined requests none.
//
// One header_timeout covers the whole request (from the connection's start
// for the first request, from its first byte for the others), not each
// read: a client that trickles a byte at a time cannot hold the connection
// longer than that.
func (c *conn) readRequest(first bool) (wire.Request, error) {
	s := c.s
	if c.rpos == c.rend {
		c.rpos, c.rend = 0, 0
	}
	armed := first && c.headArmed // header_timeout set for this request
	if c.rend == c.rpos {
		var err error
		if armed, err = c.readIdle(first); err != nil {
			return wire.Request{}, err
		}
	}
	arm := func() {
		if !armed {
			c.setReadDeadline(time.Now().Add(s.opts.HeaderTimeout))
			armed = true
		}
	}
	for c.rend-c.rpos < wire.RequestHeaderLen {
		arm()
		if err := c.fill(); err != nil {
			return wire.Request{}, truncated(err)
		}
	}
	q, plen, err := wire.DecodeRequestHeader((*[wire.RequestHeaderLen]byte)(c.buf[c.rpos:]))
	if err != nil {
		return q, err
	}
	c.rpos += wire.RequestHeaderLen
	if plen <= c.rend-c.rpos {
		err = q.SetPath(c.buf[c.rpos : c.rpos+plen])
		c.rpos += plen
		return q, err
	}
	// A path longer than what arrived with the header (rare: long paths).
	p := make([]byte, plen)
	n := copy(p, c.buf[c.rpos:c.rend])
	c.rpos = c.rend
	arm()
	c.attach()
	c.unlead() // the read below waits for the rest (leader.go)
	if _, err := io.ReadFull(c.f, p[n:]); err != nil {
		return q, truncated(err)
	}
	return q, q.SetPath(p)
}

// readIdle waits for the first bytes of a request: on a new connection
// with header_timeout, on a kept-alive one with idle_timeout, and only the
// latter may be cut short by a drain. armed reports that header_timeout
// now runs for this request. In waitEpoll mode (wait.go) a kept-alive
// connection goes to waitEdge instead, which parks it.
func (c *conn) readIdle(first bool) (armed bool, err error) {
	s := c.s
	if !first && s.opts.keepAliveWait == waitEpoll {
		return false, c.waitEdge()
	}
	if first || c.resumed {
		// A parked connection resumes because bytes (or the client's
		// close) arrived: its request has started.
		c.resumed = false
		c.setReadDeadline(time.Now().Add(s.opts.HeaderTimeout))
		return true, c.fill()
	}
	timeout := s.opts.IdleTimeout
	now := time.Now()
	if idleStale(c.rdl.Sub(now), timeout) {
		c.setReadDeadline(now.Add(timeout))
	}
	// Order matters against Drain, which sets draining and then, under
	// s.mu, moves each idle connection to kicked and its deadline to the
	// past: idle first, then the check.
	if c.rc == nil {
		// Not attached (attach.go): the next request, or the client's
		// close, may be here already.
		if ok, err := c.fillNow(); ok {
			return false, err
		}
		// Waiting for it needs the poller, attached first so that Drain
		// and the sweep can wake an idle connection.
		c.attach()
	}
	c.idleTick.Store(s.park.tick.Load())
	c.state.Store(connIdle)
	if s.draining.Load() && !c.pending() {
		c.state.Store(connBusy)
		return false, errDrained
	}
	err = c.fill()
	if c.state.CompareAndSwap(connIdle, connBusy) {
		if err != nil && s.draining.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
			err = errDrained
		}
		return false, err
	}
	// Kicked by a drain or by the sweep (to park), which may still be
	// setting the past deadline. A kick (idle to kicked, then the
	// deadline) happens under s.mu, so leaving the kicked state under
	// s.mu waits for the kick to be whole, and the header_timeout set
	// below cannot be overwritten by it. Then decide what the wake-up
	// meant.
	s.mu.Lock()
	kick := c.state.Swap(connBusy)
	s.mu.Unlock()
	if err == nil || (errors.Is(err, os.ErrDeadlineExceeded) && c.pending()) {
		// A request had arrived: serve it, under header_timeout, which
		// also replaces the drain's past deadline.
		c.setReadDeadline(time.Now().Add(s.opts.HeaderTimeout))
		if err != nil {
			err = c.fill()
		}
		return true, err
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = errDrained
		if kick == connParking {
			err = errPark
		}
	}
	return false, err
}

// readOp is fill's read, run by c.runRead (bound once per connection, so
// reading allocates nothing).
type readOp struct {
	n   int
	err error
}

// fill reads more bytes into the request buffer. (It cannot skip the read
// that finds the socket empty and wait for readability first: RawConn.Read
// resets the poller's readiness before its first call, so an event that
// arrived just before would be lost. Between requests waitEdge skips it,
// waiting in the server's own epoll set: wait.go.)
func (c *conn) fill() error {
	if c.rc == nil {
		if ok, err := c.fillNow(); ok {
			return err
		}
		// Nothing to read yet: wait in the poller (which reads once
		// more first).
		c.attach()
	} else {
		c.compact()
		c.rd = readOp{}
	}
	c.unlead() // the read below waits if the socket is empty (leader.go)
	if err := c.rc.Read(c.runRead); err != nil {
		return err
	}
	return c.filled()
}

// fillNow is fill for a connection not attached (attach.go): one read,
// and ok false if it found the socket empty.
func (c *conn) fillNow() (ok bool, err error) {
	c.compact()
	c.rd = readOp{}
	if !c.doRead(uintptr(c.fd)) {
		return false, nil
	}
	return true, c.filled()
}

func (c *conn) compact() {
	if c.rpos > 0 {
		c.rend = copy(c.buf, c.buf[c.rpos:c.rend])
		c.rpos = 0
	}
}

// filled takes the result of the read in c.rd.
func (c *conn) filled() error {
	n, err := c.rd.n, c.rd.err
	c.rend += n
	switch {
	case n > 0:
		return nil
	case err == nil:
		return io.EOF
	}
	return err
}

func (c *conn) doRead(fd uintptr) bool {
	for {
		want := len(c.buf) - c.rend
		c.rd.n, c.rd.err = rawcall.Recv(int(fd), c.buf[c.rend:])
		if c.rd.err == unix.EINTR {
			continue
		}
		// A short read of a TCP socket empties its receive queue.
		c.drained = c.rd.n >= 0 && c.rd.n < want
		if c.rd.n < 0 {
			c.rd.n = 0
		}
		if c.rd.err == unix.EAGAIN {
			c.s.emptyReads.Add(1)
			return false
		}
		return true
	}
}

func truncated(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("connection closed inside a request: %w", wire.ErrTruncated)
	}
	return err
}

// pending reports whether request bytes are buffered or waiting in the socket.
func (c *conn) pending() bool {
	if c.rend > c.rpos {
		return true
	}
	c.s.peeks.Add(1)
	return rawcall.Peek(c.fd)
}

func (c *conn) readFailed(err error) Outcome {
	if err == io.EOF { // before we, which escapes (errors.As): most ends are this
		return OutcomeClosed
	}
	var we *wire.Error
	switch {
	case errors.Is(err, errDrained):
		return OutcomeDrained
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.s.log.Debug("closing idle connection", "client", c.client, "requests", c.res.Requests)
		return OutcomeIdle
	case errors.As(err, &we):
		// A framing error cannot be resynchronised: answer, then close,
		// lingering (http.go): bytes the client sent after the bad frame
		// would otherwise reset the connection and drop what is still
		// queued of earlier responses.
		c.s.log.Info("bad request", "client", c.client, "err", we.Msg)
		if c.writeHeader(&wire.Response{Status: we.Status, Message: "bad request: " + we.Msg}, false) == nil {
			c.lingerClose()
		}
		return OutcomeBadRequest
	case errors.Is(err, wire.ErrTruncated):
		c.s.log.Info("truncated request", "client", c.client, "err", err)
		return OutcomeBadRequest
	}
	c.s.log.Debug("read failed", "client", c.client, "err", err)
	return OutcomeClientGone
}

// sniff reads a new connection's first bytes and tells its protocol: a
// native request starts with wire.RequestMagic, anything else is HTTP.
// The bytes stay buffered for the request reader, and header_timeout,
// armed here, bounds the whole first request. After a PROXY header
// (readProxy) it is armed already, and bytes of the request may be
// buffered.
func (c *conn) sniff() (native bool, err error) {
	if !c.headArmed {
		if _, err := c.readIdle(true); err != nil {
			return false, err
		}
		c.headArmed = true
	} else if c.rend == c.rpos {
		if err := c.fill(); err != nil {
			return false, err
		}
	}
	magic := wire.RequestMagic
	for c.rend-c.rpos < len(magic) && c.buf[c.rpos] == magic[0] {
		if err := c.fill(); err != nil {
			return false, truncated(err)
		}
	}
	return string(c.buf[c.rpos:c.rpos+len(magic)]) == magic, nil
}
