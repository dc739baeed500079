package fdpass

import (
	"fmt"
	"net"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/internal/rawcall"
)

// A Receiver reads one channel's messages into the buffers it was given,
// keeping what a read needs (the socket's RawConn, the message header, the
// poller's callback, the slice of fds) from one message to the next, so
// that a read allocates nothing. It is not safe for concurrent use.
type Receiver struct {
	c    *net.UnixConn
	rc   syscall.RawConn // c's, from the first read
	buf  []byte
	oob  []byte
	iov  unix.Iovec
	msg  unix.Msghdr
	n    int
	err  error
	read func(uintptr) bool // r.recvmsg, bound once
	fds  []int
}

// NewReceiver returns a Receiver of c's messages into buf, with their
// control messages in oob (see Recv for its size).
func NewReceiver(c *net.UnixConn, buf, oob []byte) *Receiver {
	r := &Receiver{c: c, buf: buf, oob: oob}
	r.read = r.recvmsg
	return r
}

// Recv reads one message into the Receiver's buffer, as the package's Recv
// does. The fds it returns are the caller's to close, but the slice is
// the Receiver's: it is reused by the next Recv.
func (r *Receiver) Recv() (n int, fds []int, err error) {
	if r.rc == nil {
		if r.rc, err = r.c.SyscallConn(); err != nil {
			return 0, nil, err
		}
	}
	r.n, r.err = 0, nil
	err = r.rc.Read(r.read)
	if err == nil {
		err = r.err
	}
	if err != nil {
		return 0, nil, fmt.Errorf("fdpass: recvmsg: %w", err)
	}
	n, flags := r.n, int(r.msg.Flags)
	r.fds = r.fds[:0]
	if oobn := int(r.msg.Controllen); oobn > 0 {
		r.fds, err = parseRights(r.oob[:oobn], r.fds)
	}
	switch {
	case err != nil:
	case flags&unix.MSG_TRUNC != 0:
		err = fmt.Errorf("%w: %d-byte buffer", ErrTooLong, len(r.buf))
	case flags&unix.MSG_CTRUNC != 0:
		closeAll(r.fds)
		return n, nil, ErrTruncated
	}
	if err != nil {
		closeAll(r.fds)
		return 0, nil, err
	}
	runtime.KeepAlive(r.c)
	if len(r.fds) == 0 {
		return n, nil, nil
	}
	return n, r.fds, nil
}

// recvmsg is one recvmsg into r's buffers; it returns false to wait for
// the socket to become readable.
func (r *Receiver) recvmsg(fd uintptr) bool {
	for {
		pointMsg(&r.msg, &r.iov, r.buf, r.oob) // again: the kernel wrote Controllen
		r.n, r.err = rawcall.RecvmsgHdr(int(fd), &r.msg, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
		if r.err == unix.EINTR {
			continue
		}
		return r.err != unix.EAGAIN
	}
}
