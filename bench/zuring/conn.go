package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	recvBuf  = 16 << 10 // per connection; a head longer than maxHead is a 400, so a read always has room
	maxBatch = 64       // responses per send; pipelined requests beyond wait for the send to finish
)

// conn is one connection's state: the bytes received and not yet parsed,
// and the responses not yet sent, as iovecs over immutable heads and
// bodies. At most one operation (a receive or a send) is in flight on it.
type conn struct {
	fd      int // -1 once closed
	buf     []byte
	have    int
	iov     []unix.Iovec // the unsent part, a window of iovArr
	iovArr  [2 * maxBatch]unix.Iovec
	msg     unix.Msghdr // for SENDMSG: stays put while the kernel may read it
	left    int         // bytes unsent
	closing bool        // close once the output is sent
	busy    bool        // uring modes: a send SQE queued or in flight
	out     bool        // waiting for EPOLLOUT (EPOLLIN off)
	seq     uint32      // uring-poll: this connection's number in its polls' user_data
	queued  bool        // uring-poll: in this batch's readable or writable list
	outPoll bool        // uring-poll: its one-shot POLLOUT poll is armed
	hup     bool        // uring-poll: a poll saw the peer's FIN, a reset or an error
}

func newConn(fd int) *conn {
	return &conn{fd: fd, buf: make([]byte, recvBuf)}
}

// process answers the complete requests buffered, up to maxBatch of them,
// into c's output. It must only be called with no output pending.
func (c *conn) process(files map[string]*file) {
	c.iov = c.iovArr[:0]
	c.left = 0
	off := 0
	for len(c.iov)+2 <= len(c.iovArr) && !c.closing {
		req, n, ok := parse(c.buf[off:c.have])
		if !ok {
			c.add(badRequest, nil)
			c.closing = true
			break
		}
		if n == 0 {
			break
		}
		off += n
		c.add(respond(files, req))
		c.closing = req.close
	}
	if c.closing {
		c.have = 0
		return
	}
	c.have = copy(c.buf, c.buf[off:c.have])
}

func (c *conn) add(head, body []byte) {
	for _, b := range [2][]byte{head, body} {
		if len(b) > 0 {
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			c.iov = append(c.iov, v)
			c.left += len(b)
		}
	}
}

// advance drops the first n bytes of the output, which the kernel took.
func (c *conn) advance(n int) {
	c.left -= n
	for n > 0 {
		l := int(c.iov[0].Len)
		if n < l {
			c.iov[0].Base = (*byte)(unsafe.Add(unsafe.Pointer(c.iov[0].Base), n))
			c.iov[0].SetLen(l - n)
			return
		}
		n -= l
		c.iov = c.iov[1:]
	}
}

// msghdr points c.msg at the unsent output.
func (c *conn) msghdr() *unix.Msghdr {
	c.msg = unix.Msghdr{Iov: &c.iov[0]}
	c.msg.SetIovlen(len(c.iov))
	return &c.msg
}
