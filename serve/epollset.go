package serve

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/internal/rawcall"
)

// The server's epoll set of connections waiting for a request (park.go,
// wait.go): the goroutine that reads it and hands what it wakes to a
// runner (runner.go), and the registry that finds a connection by its
// token.

// epoll returns the server's epoll set, made by New along with the
// goroutine that reads it.
func (s *Server) epoll() (int, error) {
	p := &s.park
	p.epOnce.Do(func() {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			p.epErr = fmt.Errorf("epoll_create1: %w", err)
			return
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			p.epErr = fmt.Errorf("epoll set non-blocking: %w", err)
			return
		}
		f := os.NewFile(uintptr(fd), "parked-connections")
		rc, err := f.SyscallConn()
		if err != nil {
			f.Close()
			p.epErr = fmt.Errorf("epoll: %w", err)
			return
		}
		p.ep, p.epFile = fd, f
		go s.pollParked(rc)
	})
	return p.ep, p.epErr
}

// pollParked reads the epoll set whenever the runtime's poller says it has
// events, and hands each parked connection that became readable to a
// runner. One RawConn.Read runs for the set's whole life: its function
// handles the events it finds and asks to wait only once the set is
// empty, so a wake-up costs one epoll_wait, not a second one that finds
// nothing. It returns when Close closes the set.
func (s *Server) pollParked(rc syscall.RawConn) {
	events := make([]unix.EpollEvent, 128)
	var werr error
	var woken []*conn
	wait := func(fd uintptr) bool {
		for {
			n, err := rawcall.EpollPoll(int(fd), events)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				werr = err
				return true
			case n == 0:
				return false
			}
			woken = s.park.dispatch(events[:n], woken[:0])
			for i, c := range woken {
				s.startJob(runJob{resume: c})
				woken[i] = nil
			}
			if n < len(events) {
				return false // the runtime's poller says when there are more
			}
		}
	}
	if err := rc.Read(wait); err != nil {
		return // closed by Close, after Wait: nothing is parked
	}
	s.log.Error("epoll_wait on parked connections failed; closing them", "err", werr)
	s.closeParked(OutcomeError)
}

// add puts c in the registry.
func (p *parker) add(c *conn) {
	p.regMu.Lock()
	if p.reg == nil {
		p.reg = make(map[uint64]*conn)
	}
	p.reg[c.seq] = c
	p.regMu.Unlock()
}

// remove takes the connection with token seq out of the registry.
func (p *parker) remove(seq uint64) {
	p.regMu.Lock()
	delete(p.reg, seq)
	p.regMu.Unlock()
}

// dispatch handles a batch of the set's events: each connection's ready
// is set, and those that were parked are taken (to connBusy) and
// appended to woken, for the caller to start. (The order, ready first,
// is what makes parking lose no wake-up: wait.go.)
func (p *parker) dispatch(events []unix.EpollEvent, woken []*conn) []*conn {
	p.regMu.Lock()
	for _, ev := range events {
		c := p.reg[uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32]
		if c == nil {
			continue // ended since the event
		}
		if ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			c.hup.Store(true)
		}
		c.ready.Store(true)
		if c.state.CompareAndSwap(connParked, connBusy) {
			woken = append(woken, c)
		}
	}
	p.regMu.Unlock()
	return woken
}
