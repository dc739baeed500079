package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// user_data of an SQE: the connection's fd in the low 32 bits, the
// operation above.
const (
	tagRecv = 1 << 32
	tagSend = 2 << 32
)

// Every receive and send carries MSG_DONTWAIT, so the kernel completes it
// inline during io_uring_enter (with -EAGAIN where the socket is not
// ready) instead of arming a poll: epoll stays the only readiness
// mechanism, and waiting for every completion never blocks the loop.
const (
	recvFlags = unix.MSG_DONTWAIT
	sendFlags = unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL
)

// uringBatch is -mode uring and -mode uring-lazy for one epoll_wait's
// worth of ready connections: one RECV SQE per readable connection and
// one io_uring_enter for all of them, then one SENDMSG SQE per connection
// with responses and, in -mode uring, one more io_uring_enter for those.
// In -mode uring-lazy the sends stay queued: run's next epoll_wait does
// not block while SQEs are queued, and they are submitted (and their
// completions reaped) by the next batch's receive enter, or alone if
// there is no next batch.
func (s *server) uringBatch() error {
	for _, c := range s.readable {
		if c.busy {
			continue // its send is not back yet: epoll reports it again
		}
		if err := s.queue(c, opRecv); err != nil {
			return err
		}
	}
	for _, c := range s.writable {
		switch {
		case c.busy:
		case c.left == 0: // not expected: out is only set with output left
			s.setOut(c, false)
		default:
			if err := s.queue(c, opSendmsg); err != nil {
				return err
			}
		}
	}
	for s.ring.pending() > 0 {
		if err := s.complete(); err != nil {
			return err
		}
		if s.mode == "uring-lazy" && len(s.readable)+len(s.writable) > 0 {
			break
		}
	}
	return nil
}

// queue gets an SQE for c's next operation: a receive into its buffer or
// a send of its output.
func (s *server) queue(c *conn, op uint8) error {
	e, err := s.ring.get()
	if err == errRingFull {
		if err := s.ring.enter(0); err != nil { // frees every slot
			return err
		}
		e, err = s.ring.get()
	}
	if err != nil {
		return err
	}
	e.opcode = op
	e.fd = int32(c.fd)
	switch op {
	case opRecv:
		e.addr = uint64(uintptr(unsafe.Pointer(&c.buf[c.have])))
		e.len = uint32(len(c.buf) - c.have)
		e.opFlags = recvFlags
		e.userData = tagRecv | uint64(c.fd)
	case opSendmsg:
		e.addr = uint64(uintptr(unsafe.Pointer(c.msghdr())))
		e.len = 1
		e.opFlags = sendFlags
		e.userData = tagSend | uint64(c.fd)
		c.busy = true
	}
	s.inflight++
	return nil
}

// complete submits what is queued with one io_uring_enter that waits for
// every operation in flight (each completes inline, see recvFlags), reaps
// the completions, and queues what follows from them: the responses to
// what was received, the rest of a short send.
func (s *server) complete() error {
	if err := s.ring.enter(s.inflight); err != nil {
		return err
	}
	s.next = s.next[:0]
	s.ring.reap(s.reaped)
	for _, c := range s.next {
		if c.fd < 0 {
			continue
		}
		if c.left == 0 {
			if c.closing {
				s.close(c)
				continue
			}
			c.process(s.files)
			if c.left == 0 {
				s.setOut(c, false)
				continue
			}
		}
		if err := s.queue(c, opSendmsg); err != nil {
			return err
		}
	}
	return nil
}

func (s *server) reaped(e cqe) {
	s.inflight--
	fd := int(uint32(e.userData))
	if fd >= len(s.conns) || s.conns[fd] == nil {
		return
	}
	c := s.conns[fd]
	switch e.userData &^ (1<<32 - 1) {
	case tagRecv:
		switch {
		case e.res == -int32(unix.EAGAIN) || e.res == -int32(unix.EINTR):
		case e.res <= 0:
			s.close(c)
		default:
			c.have += int(e.res)
			s.next = append(s.next, c)
		}
	case tagSend:
		c.busy = false
		switch {
		case e.res == -int32(unix.EAGAIN) || e.res == -int32(unix.EINTR):
			s.setOut(c, true)
		case e.res < 0:
			s.close(c)
		default:
			c.advance(int(e.res))
			s.next = append(s.next, c)
		}
	}
}
