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
package fdpass

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/internal/rawcall"
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
// closes its copies when it is done with them.
func Send(c *net.UnixConn, msg []byte, fds ...int) error {
	return send(c, msg, fds, true)
}

// TrySend is Send without waiting: if the peer's queue is full it returns
// an error wrapping unix.EAGAIN at once, so a wedged peer cannot stall the
// caller (the supervisor's accept loop). Like Send, it does not close fds,
// whether it succeeds or not.
func TrySend(c *net.UnixConn, msg []byte, fds ...int) error {
	return send(c, msg, fds, false)
}

// send is Send (wait) and TrySend (!wait).
func send(c *net.UnixConn, msg []byte, fds []int, wait bool) error {
	if len(fds) > MaxFDs {
		return fmt.Errorf("fdpass: %d fds in one message, the limit is %d", len(fds), MaxFDs)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("fdpass: %w", err)
	}
	var serr error
	sendmsg := func(fd uintptr) (done bool) {
		for {
			_, serr = rawcall.SendmsgOOB(int(fd), msg, oob, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
			if serr != unix.EINTR {
				return serr != unix.EAGAIN
			}
		}
	}
	if wait {
		err = rc.Write(sendmsg) // called again when writable, until done
	} else {
		err = rc.Control(func(fd uintptr) { sendmsg(fd) })
	}
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("fdpass: sendmsg: %w", err)
	}
	return nil
}

// Recv reads one message into buf and returns its length and the fds that
// came with it (oob must have room for CmsgSpace(MaxFDs*4) to receive a full
// batch). A zero length with no error means the peer closed its end. With
// ErrTruncated, n and buf still hold the payload (and no fds are returned).
func Recv(c *net.UnixConn, buf, oob []byte) (n int, fds []int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, nil, err
	}
	var oobn, flags int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, oobn, flags, rerr = rawcall.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
			if rerr == unix.EINTR {
				continue
			}
			return rerr != unix.EAGAIN
		}
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, nil, fmt.Errorf("fdpass: recvmsg: %w", err)
	}
	if oobn > 0 {
		fds, err = parseRights(oob[:oobn])
	}
	switch {
	case err != nil:
	case flags&unix.MSG_TRUNC != 0:
		err = fmt.Errorf("%w: %d-byte buffer", ErrTooLong, len(buf))
	case flags&unix.MSG_CTRUNC != 0:
		closeAll(fds)
		return n, nil, ErrTruncated
	}
	if err != nil {
		closeAll(fds)
		return 0, nil, err
	}
	runtime.KeepAlive(c)
	return n, fds, nil
}

// OOBSpace is the size of an oob buffer that can hold MaxFDs descriptors.
var OOBSpace = unix.CmsgSpace(MaxFDs * 4)

// parseRights extracts fds from every SCM_RIGHTS message in oob. Fds from
// messages it cannot parse are impossible to know, which is why callers
// size oob for the worst case.
func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("fdpass: parse control message: %w", err)
	}
	var fds []int
	var perr error
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			perr = fmt.Errorf("fdpass: unexpected control message level %d type %d", msgs[i].Header.Level, msgs[i].Header.Type)
			continue
		}
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			perr = fmt.Errorf("fdpass: parse rights: %w", err)
			continue
		}
		fds = append(fds, got...)
	}
	if perr != nil {
		closeAll(fds)
		return nil, perr
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

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
