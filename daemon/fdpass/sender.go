package fdpass

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/internal/rawcall"
)

// A Sender writes messages with fds to one channel, keeping what a send
// needs (the socket's RawConn, the control buffer, the message header and
// the poller's callback) from one message to the next, so that a send
// allocates nothing. It is not safe for concurrent use.
type Sender struct {
	c     *net.UnixConn
	rc    syscall.RawConn // c's, from the first send
	oob   []byte
	iov   unix.Iovec
	msg   unix.Msghdr
	err   error
	write func(uintptr) bool // s.sendmsg, bound once
	try   func(uintptr)      // s.sendmsgOnce, bound once
}

// NewSender returns a Sender for c.
func NewSender(c *net.UnixConn) *Sender {
	s := &Sender{c: c}
	s.write = s.sendmsg
	s.try = s.sendmsgOnce
	return s
}

// Send writes msg with fds attached in one sendmsg, waiting (in the
// netpoller) while the peer's queue is full. It does not close fds.
func (s *Sender) Send(msg []byte, fds ...int) error {
	return s.send(msg, fds, true)
}

// TrySend is Send without waiting: if the peer's queue is full it returns
// an error wrapping unix.EAGAIN at once. It does not close fds.
func (s *Sender) TrySend(msg []byte, fds ...int) error {
	return s.send(msg, fds, false)
}

func (s *Sender) send(msg []byte, fds []int, wait bool) error {
	if len(fds) > MaxFDs {
		return fmt.Errorf("fdpass: %d fds in one message, the limit is %d", len(fds), MaxFDs)
	}
	if s.rc == nil {
		rc, err := s.c.SyscallConn()
		if err != nil {
			return fmt.Errorf("fdpass: %w", err)
		}
		s.rc = rc
	}
	s.oob = s.oob[:0]
	if len(fds) > 0 {
		s.oob = appendRights(s.oob, fds)
	}
	pointMsg(&s.msg, &s.iov, msg, s.oob)
	s.err = nil
	var err error
	if wait {
		err = s.rc.Write(s.write) // called again when writable, until done
	} else {
		err = s.rc.Control(s.try)
	}
	// Let go of msg: the Sender outlives it.
	s.iov.Base, s.msg = nil, unix.Msghdr{}
	if err == nil {
		err = s.err
	}
	if err != nil {
		return fmt.Errorf("fdpass: sendmsg: %w", err)
	}
	return nil
}

// sendmsg is one sendmsg of s.msg; it returns false to wait for the
// socket to become writable.
func (s *Sender) sendmsg(fd uintptr) (done bool) {
	for {
		_, s.err = rawcall.Sendmsg(int(fd), &s.msg, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		if s.err != unix.EINTR {
			return s.err != unix.EAGAIN
		}
	}
}

func (s *Sender) sendmsgOnce(fd uintptr) { s.sendmsg(fd) }
