package main

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// server is one process's event loop: one epoll set, level-triggered, on
// the thread that runs it.
type server struct {
	files    map[string]*file
	mode     string
	rawWait  bool // -rawwait: the loop's blocking wait is a raw system call
	epfd     int
	lfd      int
	conns    []*conn // by fd
	events   []unix.EpollEvent
	readable []*conn
	writable []*conn

	// uring modes
	ring     *ring
	inflight uint32  // SQEs got and not yet reaped
	next     []*conn // connections whose receive or send completed

	seq         uint32  // uring-poll: the last connection's number
	rearmListen bool    // uring-poll: the listener's multishot poll ended
	again       []*conn // uring-poll: receives that filled the buffer, to try again
	listenAgain bool    // uring-poll: the last accepts stopped at 64, not at EAGAIN
}

func newServer(lfd int, mode string, rawWait bool, files map[string]*file) (*server, error) {
	s := &server{files: files, mode: mode, rawWait: rawWait, lfd: lfd, events: make([]unix.EpollEvent, 512)}
	var err error
	if s.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := s.ctl(unix.EPOLL_CTL_ADD, lfd, unix.EPOLLIN); err != nil {
		unix.Close(s.epfd)
		return nil, err
	}
	if mode != "epoll" {
		var flags uint32
		if mode == "uring-poll" {
			flags = pollRingFlags
		}
		if s.ring, err = newRing(4096, flags); err != nil {
			unix.Close(s.epfd)
			return nil, err
		}
		s.ring.rawWait = rawWait
	}
	return s, nil
}

func (s *server) ctl(op, fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(s.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl %d fd %d: %w", op, fd, err)
	}
	return nil
}

// run serves until a fatal error.
func (s *server) run() error {
	if s.mode == "uring-poll" {
		return s.runPoll()
	}
	for {
		timeout := -1
		if s.ring != nil && s.ring.pending() > 0 {
			timeout = 0 // uring-lazy: sends are queued to ride along with the next receives
		}
		n, err := s.epollWait(timeout)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		s.readable, s.writable = s.readable[:0], s.writable[:0]
		for _, ev := range s.events[:n] {
			fd := int(ev.Fd)
			if fd == s.lfd {
				s.accept()
				continue
			}
			c := s.conns[fd]
			switch {
			case c == nil:
			case c.out:
				s.writable = append(s.writable, c)
			default:
				s.readable = append(s.readable, c)
			}
		}
		if s.ring == nil {
			s.epollBatch()
			continue
		}
		if err := s.uringBatch(); err != nil {
			return err
		}
	}
}

// accept takes up to 64 connections from the listener. It reports whether
// it stopped at 64, or at an error such as EMFILE, rather than at EAGAIN:
// more may be waiting, which level-triggered epoll reports again by itself
// and uring-poll's multishot poll (an edge) does not.
func (s *server) accept() bool {
	for range 64 {
		fd, _, err := unix.Accept4(s.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			// Out of descriptors or memory: the queue is still there
			// and epoll reports it again (the loop spins until
			// descriptors are free); uring-poll must try again itself.
			return err != unix.EAGAIN
		}
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		if s.mode == "uring-poll" {
			s.acceptPoll(fd)
			continue
		}
		if s.ctl(unix.EPOLL_CTL_ADD, fd, unix.EPOLLIN) != nil {
			unix.Close(fd)
			continue
		}
		for fd >= len(s.conns) {
			s.conns = append(s.conns, nil)
		}
		s.conns[fd] = newConn(fd)
	}
	return true // more may be waiting
}

func (s *server) close(c *conn) {
	if s.mode == "uring-poll" {
		s.unpoll(c)
	}
	s.conns[c.fd] = nil
	unix.Close(c.fd)
	c.fd = -1
}

// setOut switches c between waiting to read and waiting to write.
func (s *server) setOut(c *conn, out bool) {
	if s.mode == "uring-poll" {
		s.setOutPoll(c, out) // also when c.out is already set: its POLLOUT poll is one-shot
		return
	}
	if c.out == out {
		return
	}
	ev := uint32(unix.EPOLLIN)
	if out {
		ev = unix.EPOLLOUT
	}
	if s.ctl(unix.EPOLL_CTL_MOD, c.fd, ev) != nil {
		s.close(c)
		return
	}
	c.out = out
}

// epollBatch is -mode epoll: one recvfrom per readable connection, one
// sendmsg for all the responses it makes.
func (s *server) epollBatch() {
	for _, c := range s.readable {
		if _, ok := s.recv(c); ok {
			s.epollSend(c)
		}
	}
	for _, c := range s.writable {
		s.epollSend(c)
	}
}

// epollSend sends c's output and answers the requests still buffered,
// until it is all sent or the socket is full (then it waits for EPOLLOUT).
func (s *server) epollSend(c *conn) {
	for {
		if c.left == 0 {
			if c.closing {
				s.close(c)
				return
			}
			c.process(s.files)
			if c.left == 0 {
				break
			}
		}
		n, _, errno := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(c.fd), uintptr(unsafe.Pointer(c.msghdr())), unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.EAGAIN:
			s.setOut(c, true)
			return
		case errno != 0:
			s.close(c)
			return
		}
		c.advance(int(n))
	}
	s.setOut(c, false)
}

// epollWait is epoll_wait on the set; with -rawwait a raw system call
// (see ring.block).
func (s *server) epollWait(timeout int) (int, error) {
	if !s.rawWait {
		return unix.EpollWait(s.epfd, s.events, timeout)
	}
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(s.epfd), uintptr(unsafe.Pointer(&s.events[0])), uintptr(len(s.events)), uintptr(timeout), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// recv reads what c's socket holds into its buffer's room, once. It
// reports whether bytes came (false: none yet, or c closed at the peer's
// end or on an error) and whether they filled the room.
func (s *server) recv(c *conn) (full, ok bool) {
	room := len(c.buf) - c.have
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(c.fd), uintptr(unsafe.Pointer(&c.buf[c.have])), uintptr(room), 0, 0, 0)
	switch {
	case errno == unix.EAGAIN || errno == unix.EINTR:
		return false, false
	case errno != 0 || n == 0:
		s.close(c)
		return false, false
	}
	c.have += int(n)
	return int(n) == room, true
}
