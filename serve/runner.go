package serve

import (
	"sync"
	"sync/atomic"
)

// Runners: goroutines that serve one connection after another: new
// ones (Start) and those the epoll set wakes (epollset.go).
//
// A goroutine starts on a small stack (2 KiB unless the runtime has seen
// larger ones at its last collection, which a worker that allocates
// little rarely runs), and serving a request grows it twice or more, each
// time by copying it: with a goroutine per new connection that was 5% of
// a worker's CPU on a stream of new connections (bench/findings.md). A
// runner keeps its grown stack: when its connection ends or parks, it
// waits for the next one instead of exiting. At most maxIdleRunners wait
// at a time; a runner that would be one more exits, so a burst of
// connections does not leave thousands of idle stacks behind (and the
// parked connections of the idle target stay without one).

// maxIdleRunners bounds the runners waiting for a connection.
const maxIdleRunners = 64

// runJob is a connection for a runner: a new one (Run), or one woken
// from the epoll set (resume).
type runJob struct {
	fd     int
	ci     ConnInfo
	done   func(Result)
	resume *conn
	lead   *leader // take over as the leader (leader.go)
}

type runners struct {
	q       chan runJob   // unbuffered: a send succeeds only if a runner waits
	stop    chan struct{} // closed by Close: waiting runners exit
	idle    atomic.Int32
	started atomic.Uint64 // runners started (tests)
	once    sync.Once
}

func (r *runners) close() { r.once.Do(func() { close(r.stop) }) }

// Start serves the connection on fd as Run does, on a runner's goroutine:
// it returns at once. Not after Close.
func (s *Server) Start(fd int, ci ConnInfo, done func(Result)) {
	s.startJob(runJob{fd: fd, ci: ci, done: done})
}

func (s *Server) startJob(j runJob) {
	select {
	case s.run.q <- j:
	default:
		s.run.started.Add(1)
		go s.runner(j)
	}
}

func (s *Server) runner(j runJob) {
	reserveStack()
	for {
		if j.lead != nil {
			s.lead(j.lead)
		} else if j.resume != nil {
			j.resume.resume()
		} else {
			s.Run(j.fd, j.ci, j.done)
		}
		j = runJob{}
		if s.run.idle.Add(1) > maxIdleRunners {
			s.run.idle.Add(-1)
			return
		}
		select {
		case j = <-s.run.q:
			s.run.idle.Add(-1)
			reserveStack() // a collection may have shrunk it while it waited
		case <-s.run.stop:
			return
		}
	}
}

// stackReserve is the stack a runner makes room for before it serves a
// connection. Serving one needs several KiB: a goroutine's stack that is
// too small grows when a call deep in a request finds it full, and each
// growth copies the stack and adjusts every frame on it (runtime.copystack);
// at 1000 keep-alive connections, where a wake-up of the epoll set hands
// out more connections than there are idle runners and new ones start on
// the small stack, that was 8% of a worker's CPU. Grown here, at the
// runner's top frame, there is almost nothing to copy.
//
// The runtime doubles a stack until the new frame, and its guard of
// about 1 KiB below it, fit: with 6 KiB the stack becomes 8 KiB, which
// every request fits in (a runner without the reserve grows to no more,
// in every mode, HTTP and native); 8 KiB would make it 16 KiB, half of it
// never used, for every busy connection (TestRunnerStack).
const stackReserve = 6 << 10

// reserveStack makes the goroutine's stack hold stackReserve more bytes
// than it uses now: its frame is that large, so the runtime grows the
// stack on the way in. It costs the zeroing of stackReserve bytes.
//
//go:noinline
func reserveStack() {
	var pad [stackReserve]byte
	keepFrame(pad[:])
}

// keepFrame writes to b, a local array of its caller's, so that the
// compiler keeps that array (and so the frame's size) whole.
//
//go:noinline
func keepFrame(b []byte) { b[len(b)-1] = 1 }
