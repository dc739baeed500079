package serve

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// The server's epoll set of connections waiting for a request (park.go,
// wait.go): the goroutine that reads it (the leader: leader.go), and the
// registry that finds a connection by its token.

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
// events and serves the connections that became readable, as the
// leader (leader.go). It returns when Close closes the set.
func (s *Server) pollParked(rc syscall.RawConn) {
	reserveStack() // it serves requests too
	s.lead(newLeader(s, rc))
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
