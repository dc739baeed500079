package serve

import (
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/internal/rawcall"
)

// The leader: the goroutine that reads the server's epoll set serves the
// connections it wakes itself, one after another, as an nginx worker's
// event loop does, and hands its place to another goroutine the moment
// one of them has to wait.
//
// A request that is answered from memory (a fresh hit of the open-file
// cache with the file's bytes inline, or an error that needs no
// ordinary lookup: a refused head or method, a name the kernel's caches
// know is missing) never waits: its reads, its lookup and its sendmsg
// are raw, non-blocking calls. Handing each woken
// connection to a goroutine of its own (a runner) cost a goroutine
// switch, and often a new goroutine and its stack's growth, per request:
// 13% of a worker's CPU at 1000 keep-alive connections
// (bench/findings.md). So the leader serves them in turn, and only what
// may wait leaves it: before anything that may wait (unlead), another
// goroutine (an idle runner, or a new one) takes over the leader's state
// (the rest of its batch, the set), and the goroutine that was the leader
// stays with its connection as a runner would. What may wait:
//   - a wait in the runtime's poller (fill, send, readRequest's read of
//     a long native path: a request in pieces, a socket full);
//   - in the open-file cache, everything but a fresh hit and a raw
//     lookup or open (fileCache.open calls unlead before a revalidation,
//     an fstat, an ordinary open, a read of a small file's bytes, any of
//     which may read a disk; a name whose raw walk finds it missing is
//     answered not found at once, openNew);
//   - a body not in memory (sendBody: sendfile, splice, mmap, copy);
//   - directory listings and STAT (a walk of the disk);
//   - a connection's end (its done callback reports to the worker, which
//     may wait for the supervisor), a drain's at its park included
//     (drainOrResume);
//   - a second request of one connection in the leader's turn (a
//     pipelining or very fast client): the others of the batch wait for
//     no single client.
// The cost of a hand-over is what every request cost before: one
// goroutine started or woken.

// leader is the state that passes from leader to leader: the set, and
// the connections of the batch its last epoll_wait woke that are not
// served yet.
type leader struct {
	s      *Server
	rc     syscall.RawConn
	events []unix.EpollEvent
	woken  []*conn
	next   int
	poll   func(fd uintptr) bool // l.read, bound once: a leader's turn allocates only its leadTurn
	err    error                 // the last epoll_wait's failure, from poll
}

// newLeader is the leader state of s's epoll set, whose RawConn is rc.
func newLeader(s *Server, rc syscall.RawConn) *leader {
	l := &leader{s: s, rc: rc, events: make([]unix.EpollEvent, 128)}
	l.poll = l.read
	return l
}

// read is l.rc.Read's callback: one epoll_wait of the set without
// waiting, its connections appended to l.woken. It returns false to wait
// in the runtime's poller when the set had nothing.
func (l *leader) read(fd uintptr) bool {
	for {
		n, err := rawcall.EpollPoll(int(fd), l.events)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			l.err = err
			return true
		case n == 0:
			return false // the runtime's poller says when there are more
		}
		l.woken = l.s.park.dispatch(l.events[:n], l.woken)
		return true
	}
}

// leadTurn is one goroutine's time as the leader. The connection it
// serves points at it (conn.lead) until it hands c on: unlead, which
// marks the turn over, or publish, from whose store another goroutine may
// own c. Only the leader's goroutine touches it.
type leadTurn struct {
	l    *leader
	over bool
}

// lead serves l's batch, then reads the set for the next, until Close
// closes the set, or until serving a connection had to wait and another
// goroutine took over (its caller then goes on as a runner).
func (s *Server) lead(l *leader) {
	turn := &leadTurn{l: l}
	for {
		for l.next < len(l.woken) {
			c := l.woken[l.next]
			l.woken[l.next] = nil
			l.next++
			c.resumeLed(turn)
			if turn.over {
				return
			}
		}
		l.woken, l.next = l.woken[:0], 0
		if err := l.rc.Read(l.poll); err != nil {
			return // closed by Close, after Wait: nothing is parked
		}
		if werr := l.err; werr != nil {
			l.err = nil
			s.log.Error("epoll_wait on parked connections failed; closing them", "err", werr)
			s.closeParked(OutcomeError)
			return
		}
	}
}

// unlead is called by a connection's goroutine before anything that may
// wait: if it is the leader, another goroutine takes the leader's place
// first. Otherwise it does nothing.
func (c *conn) unlead() {
	t := c.lead
	if t == nil {
		return
	}
	c.lead, t.over = nil, true
	c.s.leadHandoffs.Add(1)
	c.s.startJob(runJob{lead: t.l})
}

// resumeLed is resume on the leader's goroutine: it serves c until c
// parks or ends, as a runner would.
func (c *conn) resumeLed(t *leadTurn) {
	for {
		c.lead = t
		parked := c.serveTurn()
		if !parked {
			c.unlead() // its end reports to the worker, which may wait
		}
		// c.lead stays until c is published as parked (publish): a drain
		// that ends it there ends it with the leader's place handed on.
		again := c.parkOrFinish(parked)
		if t.over {
			if again {
				c.resume() // on as a runner: the leader is another goroutine now
			}
			return
		}
		if !again {
			return
		}
	}
}
