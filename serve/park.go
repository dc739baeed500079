package serve

import (
	"errors"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/httpx"
)

// Idle keep-alive connections without a goroutine.
//
// A parked connection waits for its next request in the server's own
// epoll set, without a goroutine: what is left is the conn struct (and,
// if it ever had to wait in the runtime's poller, its os.File and poll
// descriptor), no stack, no HTTP buffer (handed back to a pool). When the
// socket becomes readable (a request, or the client's close) the set's
// goroutine starts a goroutine that carries on where the old one stopped.
// The sweep (sweepEvery: a second, or a tenth of idle_timeout) closes
// parked connections whose idle_timeout has passed, and Drain closes them
// at once (both answer a request that reached one before it was woken).
//
// When a connection parks depends on the wait mode (wait.go). By default
// (waitEpoll) it parks as soon as it waits for a next request with the
// socket known to be empty, registered once, edge-triggered: wait.go
// describes it and why it loses no wake-up. In waitPoller mode (the
// experiment switch's other setting, the behaviour before) it waits in
// readIdle, its goroutine parked in the runtime's poller, and only one
// idle through a whole sweep is parked: the sweep wakes its goroutine (a
// read deadline in the past, as a drain does), which registers the socket
// with EPOLLONESHOT (re-armed with EPOLL_CTL_MOD at each later park) and
// ends.
//
// The epoll set is itself registered with the runtime's poller (an epoll
// descriptor is readable while it has events), so waiting for it costs no
// thread: one goroutine per server reads it when the runtime says so.
//
// Ownership: a parked connection is in state connParked; whoever moves it
// out of that state with a compare-and-swap (the set's goroutine, the
// sweep, Drain, or the parking goroutine itself: publish, wait.go) owns
// it from then on and either serves it, finishes it or parks it again.
// Every connection in the set is in the registry (parker.reg), by its
// token, from its registration to its end, so that the set's goroutine
// finds it whatever its state.

// errPark is readIdle's answer when the connection should park: to a
// sweep's wake-up with nothing arrived (waitPoller), or when waitEdge
// finds nothing to read (waitEpoll).
var errPark = errors.New("idle: park")

// parker is a server's parked connections and the goroutines that watch them.
type parker struct {
	sweepOnce    sync.Once
	lowParked    int // parked connections at the last release, or fewer since (sweep only)
	sinceRelease int // sweeps since the last release (sweep only)
	logged       int // parked connections in the last debug line (sweep only)
	closeOnce    sync.Once
	stop         chan struct{}
	tick         atomic.Uint32 // sweeps done (conn.idleTick compares with it)

	epOnce sync.Once
	ep     int      // the epoll set
	epFile *os.File // the same, registered with the runtime's poller
	epErr  error

	regMu sync.Mutex
	reg   map[uint64]*conn // connections in the set, by conn.seq (their token)
}

// sweepEvery is how often the sweep runs for a given idle_timeout: a
// connection is parked after one to two of these, and a parked one closed
// at most one late.
func sweepEvery(idle time.Duration) time.Duration {
	if idle <= 0 {
		return time.Second
	}
	return min(max(idle/10, 10*time.Millisecond), time.Second)
}

// startSweep starts the sweep, once per server.
func (s *Server) startSweep() {
	s.park.sweepOnce.Do(func() {
		s.park.stop = make(chan struct{})
		go tickUntil(s.park.stop, sweepEvery(s.opts.IdleTimeout), func() { s.sweep(time.Now()) })
	})
}

// sweep parks the connections that were idle through the whole last
// period and closes the parked ones past their idle_timeout, but for
// those whose next request has just arrived.
func (s *Server) sweep(now time.Time) {
	var expired, back []*conn
	kicked, parked := 0, 0
	deadline := now.UnixNano()
	s.mu.Lock()
	tick := s.park.tick.Add(1)
	for c := range s.conns {
		switch c.state.Load() {
		case connIdle:
			// idleTick is the sweep count when it went idle: tick-2 or
			// older means a whole period has passed since.
			if tick-c.idleTick.Load() >= 2 && c.state.CompareAndSwap(connIdle, connParking) {
				c.f.SetReadDeadline(time.Unix(1, 0))
				kicked++
			}
		case connParked:
			// Parked through a whole period: what release counts (in
			// waitEpoll mode connections park between requests too).
			if tick-c.idleTick.Load() >= 2 {
				parked++
			}
			if deadline < c.idleUntil.Load() || !c.state.CompareAndSwap(connParked, connBusy) {
				continue
			}
			// Taken: it may have woken, been served and parked again
			// since the load above, with a later deadline.
			if deadline < c.idleUntil.Load() {
				back = append(back, c)
			} else {
				expired = append(expired, c)
			}
		}
	}
	s.mu.Unlock()
	for _, c := range back {
		c.repark()
	}
	expired = slices.DeleteFunc(expired, func(c *conn) bool {
		if !c.ready.Load() && !c.pending() {
			return false
		}
		// Its next request reached the socket just before the sweep took
		// it (the set's goroutine has not woken it yet, or found it
		// taken): answered, as a drain answers one (drainOrResume).
		// Closing the socket on it would reset the connection and lose
		// the request.
		c.s.startJob(runJob{resume: c})
		return true
	})
	if kicked > 0 || len(expired) > 0 || parked != s.park.logged {
		s.park.logged = parked
		s.log.Debug("idle connections", "parked", parked, "parking", kicked, "closed", len(expired))
	}
	for _, c := range expired {
		s.log.Debug("closing idle connection", "client", c.client, "requests", c.res.Requests)
		c.res.Outcome = OutcomeIdle
		c.finish()
	}
	s.release(parked, kicked)
}

// repark parks again a connection the sweep took (connBusy) and did not
// close, serving it if an event came meanwhile, or draining it.
func (c *conn) repark() {
	if !c.publish() {
		return
	}
	if c.s.draining.Load() {
		c.drainOrResume()
		return
	}
	c.s.startJob(runJob{resume: c})
}

// releaseMin is the growth in parked connections since the last release
// of memory that makes the sweep release it again.
const releaseMin = 256

// releaseEvery is the most sweeps between releases while connections
// keep parking; releaseGap the fewest.
const (
	releaseEvery = 10
	releaseGap   = 2
)

// release returns memory to the system when many connections have parked
// since it last did: the stacks of their ended goroutines and their HTTP
// buffers are free, but the runtime keeps free memory until collections
// lower its heap goal, which a server with idle connections may not run
// for minutes. Only growth counts, not churn: connections that wake and
// park again in turn do not collect anything. It waits for a sweep that
// parks nobody (the end of a burst), or releaseEvery sweeps.
func (s *Server) release(parked, parking int) {
	if s.park.releaseDue(parked, parking) {
		debug.FreeOSMemory()
	}
}

// releaseDue is release's decision, after a sweep that found parked
// connections parked and woke parking more to park.
func (p *parker) releaseDue(parked, parking int) bool {
	p.lowParked = min(p.lowParked, parked)
	p.sinceRelease++
	if parked-p.lowParked < releaseMin || p.sinceRelease < releaseGap || (parking > 0 && p.sinceRelease < releaseEvery) {
		return false
	}
	p.lowParked, p.sinceRelease = parked, 0
	return true
}

// closeParked finishes every parked connection with outcome, from a
// goroutine of its own (the caller may hold locks a done callback takes).
func (s *Server) closeParked(outcome Outcome) {
	s.mu.Lock()
	cs := s.claimParked()
	s.mu.Unlock()
	go finishAll(cs, outcome)
}

// claimParked (under s.mu) takes every parked connection.
func (s *Server) claimParked() []*conn {
	var cs []*conn
	for c := range s.conns {
		if c.state.CompareAndSwap(connParked, connBusy) {
			cs = append(cs, c)
		}
	}
	return cs
}

// drainParked ends the parked connections a drain took (drainOrResume).
func drainParked(cs []*conn) {
	for _, c := range cs {
		c.drainOrResume()
	}
}

// drainOrResume ends c, which a drain took while it was parked, unless its
// next request has arrived (the poller has not woken it yet): that one is
// answered first, as readIdle answers a request that beat the drain to an
// idle connection. Closing the socket on it would reset the connection
// and lose the request.
func (c *conn) drainOrResume() {
	if c.pending() {
		c.lead = nil // another goroutine owns it now (leader.go)
		c.s.startJob(runJob{resume: c})
		return
	}
	c.unlead() // its end reports to the worker (leader.go)
	c.res.Outcome = OutcomeDrained
	c.finish()
}

func finishAll(cs []*conn, outcome Outcome) {
	for _, c := range cs {
		c.res.Outcome = outcome
		c.finish()
	}
}

// park leaves c waiting for its next request without a goroutine. The
// caller's goroutine may end once it returns false; true means it still
// owns c, which has bytes to read (waitEpoll mode, parkEdge). c has no
// request bytes buffered (readIdle parks only an empty buffer).
func (c *conn) park() (again bool) {
	if c.s.opts.keepAliveWait == waitEpoll {
		return c.parkEdge()
	}
	c.parkOneshot()
	return false
}

// parkOneshot is park in waitPoller mode: c, woken by the sweep, waits in
// the set with EPOLLONESHOT, re-armed at each park.
func (c *conn) parkOneshot() {
	c.unlead() // its fill has handed the leader's place on already (readIdle)
	s := c.s
	ep, err := s.epoll()
	if err != nil {
		s.log.Error("cannot park an idle connection; closing it", "client", c.client, "err", err)
		c.res.Outcome = OutcomeError
		c.finish()
		return
	}
	c.putHTTP()
	op := unix.EPOLL_CTL_MOD
	if !c.polled {
		op, c.polled = unix.EPOLL_CTL_ADD, true
		s.park.add(c)
	}
	c.idleUntil.Store(c.rdl.UnixNano())
	seq, rc := c.seq, c.rc
	// Drain sets draining before it takes parked connections under s.mu:
	// checking it and publishing under s.mu means one of the two sees the
	// other.
	s.mu.Lock()
	if s.draining.Load() {
		s.mu.Unlock()
		c.drainOrResume()
		return
	}
	c.state.Store(connParked)
	s.mu.Unlock()
	// From here another goroutine may own c: use only what is above.
	// Registering after publishing loses no event: epoll_ctl reports a
	// socket that is readable already.
	var cerr error
	err = rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(seq)), Pad: int32(uint32(seq >> 32))}
		cerr = unix.EpollCtl(ep, op, int(fd), &ev)
	})
	if err == nil && cerr == nil {
		return
	}
	// Closed meanwhile by its new owner (err), or the set refused it.
	if c.state.CompareAndSwap(connParked, connBusy) {
		s.log.Error("cannot park an idle connection; closing it", "client", c.client, "err", errors.Join(err, cerr))
		c.res.Outcome = OutcomeError
		c.finish()
	}
}

// resume serves a parked connection that became readable, in a goroutine
// of its own, until it parks again or ends.
func (c *conn) resume() {
	for c.parkOrFinish(c.serveTurn()) {
	}
}

// serveTurn serves c, woken, until it waits idle to be parked (true) or
// ends (false).
func (c *conn) serveTurn() (parked bool) {
	// Events so far are for bytes the read below will see (wait.go):
	// cleared before it, never between it and the next publish.
	c.ready.Store(false)
	c.resumed = true
	if c.isHTTP {
		c.getHTTP()
		return c.serveHTTP(false)
	}
	return c.serveNative(false)
}

// parkOrFinish parks c (parked) or ends it; true means the caller still
// owns c and must serve it (park).
func (c *conn) parkOrFinish(parked bool) (again bool) {
	if parked {
		return c.park()
	}
	c.finish()
	return false
}

// httpConns are HTTP buffers not in use (a parked connection has none),
// a few: not a sync.Pool, which would keep the buffers of every
// connection parked since the last two collections, 8 KiB each, and each
// one kept pins the span it is in.
var httpConns = make(chan *httpConn, 16)

// getHTTP gives c an HTTP buffer, empty.
func (c *conn) getHTTP() {
	var h *httpConn
	select {
	case h = <-httpConns:
	default:
		h = new(httpConn)
	}
	h.start = time.Time{} // no request yet: httpConn.now reads the clock
	c.http, c.isHTTP = h, true
	c.buf = h.buf[:]
	c.rpos, c.rend = 0, 0
}

// putHTTP hands c's HTTP buffer back, if it has one.
func (c *conn) putHTTP() {
	if c.http == nil {
		return
	}
	h := c.http
	c.http, c.buf = nil, c.rbuf[:]
	h.req = httpx.Request{}
	select {
	case httpConns <- h:
	default:
	}
}

// close stops the sweep and closes the epoll set (Server.Close, after Wait).
func (p *parker) close() {
	p.closeOnce.Do(func() {
		p.sweepOnce.Do(func() {}) // no sweep starts after this
		if p.stop != nil {
			close(p.stop)
		}
		p.epOnce.Do(func() { p.epErr = errors.New("server closed") })
		if p.epFile != nil {
			p.epFile.Close()
		}
	})
}
