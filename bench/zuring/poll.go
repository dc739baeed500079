package main

import (
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// -mode uring-poll: readiness comes from the ring, not from epoll_wait.
// Each connection (and the listener) has one multishot POLL_ADD for
// POLLIN; the kernel posts a completion each time the socket is woken for
// input, and the loop reads the completion queue from memory, without a
// system call. The reads and sends stay recvfrom and sendmsg, as in -mode
// epoll. With IORING_SETUP_COOP_TASKRUN the kernel posts those completions
// when the loop's thread next leaves a system call (its recvfrom and
// sendmsg), and IORING_SQ_TASKRUN says when some are still to be posted;
// only an empty queue with nothing pending costs an io_uring_enter that
// waits. The question this mode answers: what a server's wake-ups cost
// when finding out which connections are ready is not a system call.

const (
	opPollAdd    = 6      // IORING_OP_POLL_ADD
	opPollRemove = 7      // IORING_OP_POLL_REMOVE
	pollAddMulti = 1 << 0 // IORING_POLL_ADD_MULTI, in the SQE's len
	cqeFMore     = 1 << 1 // IORING_CQE_F_MORE: the multishot poll stays armed

	setupCoopTaskrun  = 1 << 8  // IORING_SETUP_COOP_TASKRUN
	setupTaskrunFlag  = 1 << 9  // IORING_SETUP_TASKRUN_FLAG
	setupSingleIssuer = 1 << 12 // IORING_SETUP_SINGLE_ISSUER
	sqTaskrun         = 1 << 2  // IORING_SQ_TASKRUN, in the SQ ring's flags

	pollRingFlags = setupCoopTaskrun | setupTaskrunFlag | setupSingleIssuer

	// user_data: kind in the top byte, a connection's seq in the next
	// three, its fd in the low four.
	kindIn     = 1 << 56
	kindOut    = 2 << 56
	kindListen = 3 << 56
	kindRemove = 4 << 56

	// A connection's input poll: POLLRDHUP too, so that a FIN that came
	// with data (one wake-up, which the receive of the data consumes) is
	// known and read.
	pollInEvents = unix.POLLIN | unix.POLLRDHUP
)

func pollData(kind uint64, c *conn) uint64 {
	return kind | uint64(c.seq&(1<<24-1))<<32 | uint64(uint32(c.fd))
}

// poll queues a POLL_ADD of fd for events with user_data data.
func (s *server) poll(fd int, events uint32, data uint64, multi bool) error {
	e, err := s.ring.get()
	if err == errRingFull {
		if err := s.ring.enterFlags(0, 0); err != nil {
			return err
		}
		e, err = s.ring.get()
	}
	if err != nil {
		return err
	}
	e.opcode = opPollAdd
	e.fd = int32(fd)
	e.opFlags = events // poll32_events
	if multi {
		e.len = pollAddMulti
	}
	e.userData = data
	return nil
}

func (s *server) acceptPoll(fd int) {
	for fd >= len(s.conns) {
		s.conns = append(s.conns, nil)
	}
	c := newConn(fd)
	s.seq++
	c.seq = s.seq
	if s.poll(fd, pollInEvents, pollData(kindIn, c), true) != nil {
		unix.Close(fd)
		return
	}
	s.conns[fd] = c
}

// unpoll cancels c's polls before its descriptor is closed (a pending
// poll holds the file open).
func (s *server) unpoll(c *conn) {
	for _, kind := range []uint64{kindIn, kindOut} {
		e, err := s.ring.get()
		if err == errRingFull {
			if s.ring.enterFlags(0, 0) != nil {
				return
			}
			e, err = s.ring.get()
		}
		if err != nil {
			return
		}
		e.opcode = opPollRemove
		e.fd = -1
		e.addr = pollData(kind, c)
		e.userData = kindRemove
	}
}

// setOutPoll arms a one-shot POLLOUT poll for c whenever its send meets
// EAGAIN and none is armed: a send woken by POLLOUT that goes part of the
// way and meets EAGAIN again needs a new one (epoll's EPOLLOUT interest,
// level-triggered, stays).
func (s *server) setOutPoll(c *conn, out bool) {
	c.out = out
	if !out || c.outPoll {
		return
	}
	if s.poll(c.fd, unix.POLLOUT, pollData(kindOut, c), false) != nil {
		s.close(c)
		return
	}
	c.outPoll = true
}

func (s *server) runPoll() error {
	if err := s.poll(s.lfd, unix.POLLIN, kindListen|uint64(uint32(s.lfd)), true); err != nil {
		return err
	}
	for {
		s.readable, s.writable = s.readable[:0], s.writable[:0]
		for _, c := range s.again {
			if c.fd >= 0 && !c.out {
				c.queued = true
				s.readable = append(s.readable, c)
			}
		}
		s.again = s.again[:0]
		listen := s.listenAgain
		s.listenAgain = false
		n := s.ring.reap(func(e cqe) {
			kind := e.userData &^ (1<<56 - 1)
			if kind == kindRemove {
				return
			}
			if kind == kindListen {
				listen = true
				if e.flags&cqeFMore == 0 {
					s.rearmListen = true
				}
				return
			}
			fd := int(uint32(e.userData))
			if fd >= len(s.conns) || s.conns[fd] == nil {
				return
			}
			c := s.conns[fd]
			if uint64(c.seq&(1<<24-1)) != (e.userData>>32)&(1<<24-1) {
				return // an earlier connection's poll on this fd number
			}
			switch kind {
			case kindIn:
				if e.flags&cqeFMore == 0 && e.res != -int32(unix.ECANCELED) {
					if s.poll(fd, pollInEvents, pollData(kindIn, c), true) != nil {
						s.close(c)
						return
					}
				}
				if e.res > 0 && e.res&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
					c.hup = true // read until recvfrom says so: no wake-up follows
				}
				if e.res > 0 && !c.out && !c.queued {
					c.queued = true
					s.readable = append(s.readable, c)
				}
			case kindOut:
				c.outPoll = false // one-shot: it has ended
				if e.res != -int32(unix.ECANCELED) && c.out && !c.queued {
					// Also on an error: the send finds it and closes.
					c.queued = true
					s.writable = append(s.writable, c)
				}
			}
		})
		if n == 0 && len(s.readable) == 0 && !listen {
			wait := s.ring.block
			if atomic.LoadUint32(s.ring.sqFlags)&sqTaskrun != 0 {
				wait = s.ring.enterFlags // completions to post: post them, do not wait
			}
			if err := wait(0, enterGetEvents); err != nil {
				return fmt.Errorf("uring-poll: %w", err)
			}
			continue
		}
		for _, c := range s.readable {
			c.queued = false
		}
		for _, c := range s.writable {
			c.queued = false
		}
		if s.rearmListen {
			s.rearmListen = false
			if err := s.poll(s.lfd, unix.POLLIN, kindListen|uint64(uint32(s.lfd)), true); err != nil {
				return err
			}
		}
		if listen {
			s.listenAgain = s.accept() // 64 accepted: the next batch takes more
		}
		s.pollBatch()
		if s.ring.pending() > 0 {
			if err := s.ring.enterFlags(0, 0); err != nil { // submit new polls and removals
				return fmt.Errorf("uring-poll: %w", err)
			}
		}
	}
}

// pollBatch is epollBatch for readiness from the ring. A multishot poll
// reports a socket's wake-ups, not its state (an edge, not a level), so a
// receive that filled the buffer's room is tried again in the next batch
// until it comes back short, a connection whose poll saw the peer's FIN
// (or a reset) is read until recvfrom reports it (the FIN may have come
// with the data's wake-up), and a connection whose send finished (setOut
// false) is read too: input that came while it waited for POLLOUT was not
// read.
func (s *server) pollBatch() {
	for _, c := range s.writable {
		if c.fd < 0 {
			continue
		}
		s.epollSend(c)
		if c.fd >= 0 && !c.out {
			s.readable = append(s.readable, c)
		}
	}
	for _, c := range s.readable {
		if c.fd < 0 || c.out {
			continue
		}
		full, ok := s.recv(c)
		if !ok {
			continue
		}
		s.epollSend(c)
		if (full || c.hup) && c.fd >= 0 && !c.out {
			s.again = append(s.again, c)
		}
	}
}
