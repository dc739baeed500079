// Package fdpass sends and receives file descriptors with SCM_RIGHTS over a
// unix socket, one message at a time, through Go's netpoller.
//
// The rules it keeps, because fd passing fails in quiet ways:
//   - received fds are close-on-exec from the start (MSG_CMSG_CLOEXEC), so a
//     concurrent fork+exec never inherits them;
//   - a truncated control message (MSG_CTRUNC: the receiver ran out of fds,
//     or its buffer was too small) is an error, and every fd that did
//     arrive is closed before returning it; the payload is still returned,
//     so the receiver can tell the sender what it lost;
//   - on any error after fds arrived, they are all closed: the caller owns
//     fds only when the error is nil.
//
// Send, TrySend and Recv are for a message now and then. A channel used
// for every batch of connections has a Sender or a Receiver, which keep
// their state between messages and allocate nothing per message.
package fdpass

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// MaxFDs is the most fds one message may carry (the kernel's SCM_MAX_FD).
const MaxFDs = 253

// ErrTruncated means the kernel dropped part of the control message: the
// fds are gone, the payload is intact.
var ErrTruncated = errors.New("fdpass: control message truncated (MSG_CTRUNC)")

// ErrTooLong means a message was larger than the receive buffer; the rest
// of it was discarded (a SOCK_SEQPACKET stream stays in step).
var ErrTooLong = errors.New("fdpass: message larger than the receive buffer (MSG_TRUNC)")

// Send writes msg with fds attached in one sendmsg, waiting (in the
// netpoller) while the peer's queue is full. It does not close fds: after
// a successful Send the receiver holds its own copies and the caller
// closes its copies when it is done with them. (A Sender does the same
// without allocating, for a channel written often.)
func Send(c *net.UnixConn, msg []byte, fds ...int) error {
	return NewSender(c).Send(msg, fds...)
}

// TrySend is Send without waiting: if the peer's queue is full it returns
// an error wrapping unix.EAGAIN at once, so a wedged peer cannot stall the
// caller (the supervisor's accept loop). Like Send, it does not close fds,
// whether it succeeds or not.
func TrySend(c *net.UnixConn, msg []byte, fds ...int) error {
	return NewSender(c).TrySend(msg, fds...)
}

// Recv reads one message into buf and returns its length and the fds that
// came with it (oob must have room for CmsgSpace(MaxFDs*4) to receive a full
// batch). A zero length with no error means the peer closed its end. With
// ErrTruncated, n and buf still hold the payload (and no fds are returned).
// (A Receiver does the same without allocating, for a channel read often.)
func Recv(c *net.UnixConn, buf, oob []byte) (n int, fds []int, err error) {
	n, fds, err = NewReceiver(c, buf, oob).Recv()
	return n, slices.Clone(fds), err
}

// pointMsg points msg at p (through iov) and at the control buffer oob,
// either of which may be empty.
func pointMsg(msg *unix.Msghdr, iov *unix.Iovec, p, oob []byte) {
	*msg = unix.Msghdr{}
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
		msg.Iov = iov
		msg.SetIovlen(1)
	}
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
}

// OOBSpace is the size of an oob buffer that can hold MaxFDs descriptors.
var OOBSpace = unix.CmsgSpace(MaxFDs * 4)

func closeAll(fds []int) {
	for _, fd := range fds {
		closeFD(fd)
	}
}

// closeFD is unix.Close; the decoder's fuzz test replaces it, since the
// descriptors it decodes from random bytes are not its to close.
var closeFD = unix.Close

// Socketpair returns a connected SOCK_SEQPACKET pair, close-on-exec. The
// first is wrapped for this process; the second is a raw *os.File-able fd
// meant for a child's ExtraFiles.
func Socketpair() (local *net.UnixConn, remote int, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, -1, fmt.Errorf("fdpass: socketpair: %w", err)
	}
	c, err := FileConn(fds[0], "channel")
	if err != nil {
		unix.Close(fds[1])
		return nil, -1, err
	}
	return c, fds[1], nil
}

// FileConn wraps a unix socket fd as a *net.UnixConn and takes ownership
// of fd (it is closed, the returned conn holds a dup).
func FileConn(fd int, name string) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("fdpass: %s: %w", name, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("fdpass: %s is %T, not a unix socket", name, c)
	}
	return uc, nil
}
