package daemon

import (
	"encoding/binary"
	"errors"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
)

// healthRig is a supervisor with one serving generation of two workers,
// whose channels the test holds, driven by checkHealth with a fake clock.
type healthRig struct {
	t      *testing.T
	s      *Supervisor
	g      *generation
	ws     [2]*workerProc
	remote [2]*net.UnixConn
	now    time.Time
}

func newHealthRig(t *testing.T) *healthRig {
	cfg := config.Default()
	cfg.Workers = 2
	s := &Supervisor{log: quietLog(), cfg: cfg, env: env{notify: func(string) {}, clock: systemClock{}}}
	s.setState(stateServing)
	g := s.newGeneration(cfg)
	s.current = g
	r := &healthRig{t: t, s: s, g: g, now: time.Unix(1e9, 0)}
	for i, sl := range g.slots {
		local, remote := channel(t)
		// A real process, so that a kill can be seen.
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		w := &workerProc{gen: g, slot: sl, pid: cmd.Process.Pid, proc: osProc{cmd}, ch: local, ready: true}
		sl.w = w
		r.ws[i], r.remote[i] = w, remote
	}
	s.refreshDispatch()
	return r
}

// tick advances the clock by d and runs a check. The workers in answer
// answer the ping they have (if any) first.
func (r *healthRig) tick(d time.Duration, answer ...int) {
	r.t.Helper()
	for _, i := range answer {
		r.answer(i)
	}
	r.now = r.now.Add(d)
	r.s.checkHealth(r.now)
}

// answer reads worker i's ping, if one is queued, and answers it.
func (r *healthRig) answer(i int) {
	r.t.Helper()
	c := r.remote[i]
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return
	}
	if err != nil || n != 9 || buf[0] != msgPing {
		r.t.Fatalf("worker %d read %x, %v; want a ping", i, buf[:n], err)
	}
	r.s.onPong(r.ws[i], binary.BigEndian.Uint64(buf[1:]))
}

func (r *healthRig) dispatched() []int {
	var pids []int
	for _, w := range *r.s.dispatch.Load() {
		pids = append(pids, w.pid)
	}
	return pids
}

func (r *healthRig) wantState(i int, state string, inDispatch bool) {
	r.t.Helper()
	w := r.ws[i]
	if got := workerRow(r.g, w.slot, w).State; got != state {
		r.t.Errorf("worker %d: state %q, want %q", i, got, state)
	}
	found := false
	for _, pid := range r.dispatched() {
		found = found || pid == w.pid
	}
	if found != inDispatch {
		r.t.Errorf("worker %d in dispatch: %v, want %v", i, found, inDispatch)
	}
}

// TestHeartbeat: a worker that leaves its ping unanswered for 2 s is
// unresponsive (out of dispatch, so in status), back once it answers, and
// killed at worker_timeout, while one that answers is never touched; a
// stall of the supervisor itself is not held against the workers.
func TestHeartbeat(t *testing.T) {
	r := newHealthRig(t)
	half := heartbeatInterval
	r.tick(0) // first pings
	for range 3 {
		r.tick(half, 0) // worker 1 does not answer: 1.5 s
	}
	r.wantState(1, "ready", true)
	r.tick(half, 0) // 2 s
	r.wantState(1, "unresponsive", false)
	r.wantState(0, "ready", true)
	if w := r.ws[1]; askable(w) != nil {
		t.Error("status would ask an unresponsive worker, and wait for it")
	}

	// It answers: back at once, and pinged again at the next check.
	r.answer(1)
	r.wantState(1, "ready", true)
	r.tick(half, 0)
	r.answer(1)
	r.tick(half, 0, 1)

	// Silent again; the supervisor then stalls for 20 s (its own pause).
	r.tick(half, 0)
	r.tick(20*time.Second, 0)
	r.wantState(1, "ready", true)
	if r.ws[1].beat.replaced {
		t.Fatal("replaced after a stall of the supervisor")
	}
	// From the stall on, silent: unresponsive after 2 s, killed at 10 s.
	for range 4 {
		r.tick(half, 0)
	}
	r.wantState(1, "unresponsive", false)
	for range 15 {
		r.tick(half, 0)
	}
	if r.ws[1].beat.replaced {
		t.Fatal("replaced before worker_timeout")
	}
	r.tick(half, 0) // 10 s
	r.wantState(1, "killed", false)
	r.wantState(0, "ready", true)
	if how := r.ws[1].proc.Wait(); how != "killed by signal SIGKILL" {
		t.Fatalf("worker 1 ended with %v, want SIGKILL", how)
	}
	if r.ws[1].fatal != "unresponsive for 10s" {
		t.Errorf("fatal %q", r.ws[1].fatal)
	}
	// A late answer changes nothing.
	r.s.onPong(r.ws[1], r.ws[1].beat.seq)
	r.wantState(1, "killed", false)
	if r.ws[0].beat.unresponsive || r.ws[0].beat.replaced {
		t.Error("the worker that answered was touched")
	}
}

// TestHeartbeatTimeoutOff: worker_timeout = 0 keeps a silent worker out
// of dispatch and never kills it.
func TestHeartbeatTimeoutOff(t *testing.T) {
	r := newHealthRig(t)
	r.g.cfg.WorkerTimeout = 0
	for range 200 {
		r.tick(heartbeatInterval, 0)
	}
	r.wantState(1, "unresponsive", false)
	if r.ws[1].beat.replaced {
		t.Fatal("killed with worker_timeout = 0")
	}
}

// TestHeartbeatSkipsDraining: draining workers and a draining daemon are
// not pinged (their channels may be shut) and never called unresponsive.
func TestHeartbeatSkipsDraining(t *testing.T) {
	r := newHealthRig(t)
	r.ws[1].draining = true
	for range 40 {
		r.tick(heartbeatInterval, 0)
	}
	if r.ws[1].beat.seq != 0 || r.ws[1].beat.unresponsive {
		t.Fatalf("draining worker pinged (seq %d) or unresponsive", r.ws[1].beat.seq)
	}
	r.s.setState(stateDraining)
	seq := r.ws[0].beat.seq
	for range 40 {
		r.tick(heartbeatInterval)
	}
	if r.ws[0].beat.seq != seq || r.ws[0].beat.unresponsive {
		t.Fatal("pinged while the daemon drains")
	}
}

// TestHeartbeatBusyWorker: a worker silent for worker_timeout whose
// threads keep running or waiting for a CPU (its reader waits behind
// hundreds of connections on a loaded machine) is slow, not stuck: it
// stays out of dispatch and is not killed; once it uses no CPU it is, and
// so is one silent for busyTimeouts worker_timeouts however busy.
func TestHeartbeatBusyWorker(t *testing.T) {
	for _, stops := range []bool{true, false} {
		r := newHealthRig(t)
		busy := true
		var run time.Duration
		last := r.now
		r.s.env.runTime = func(pid int) time.Duration {
			if pid == r.ws[1].pid && busy {
				run += r.now.Sub(last) / 2 // half a CPU
			}
			last = r.now
			return run
		}
		r.tick(0)
		for range 40 { // 20 s silent, twice worker_timeout
			r.tick(heartbeatInterval, 0)
		}
		r.wantState(1, "unresponsive", false)
		if r.ws[1].beat.replaced {
			t.Fatal("a busy worker was killed at worker_timeout")
		}
		if !stops {
			for range 79 { // up to 59.5 s
				r.tick(heartbeatInterval, 0)
			}
			if r.ws[1].beat.replaced {
				t.Fatal("a busy worker was killed before busyTimeouts worker_timeouts")
			}
			r.tick(heartbeatInterval, 0) // 60 s
			r.wantState(1, "killed", false)
			if r.ws[1].fatal != "unresponsive for 1m0s (busy)" {
				t.Errorf("fatal %q", r.ws[1].fatal)
			}
			continue
		}
		busy = false // it stops using the CPU: stuck after all
		for range 4 {
			r.tick(heartbeatInterval, 0)
		}
		r.tick(heartbeatInterval, 0)
		r.wantState(1, "killed", false)
		r.wantState(0, "ready", true)
	}
}
