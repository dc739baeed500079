package daemon

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// The supervisor's lifecycle, driven through its real loop with fake
// worker processes (fakes_test.go) and a fake clock (fakeclock_test.go):
// every scenario runs in milliseconds, whatever the timeouts say.

const twoWorkers = "workers = 2\ndrain_timeout = \"10s\""

// TestStartServes: the first generation serves once every worker is
// ready, and the daemon is ready for systemd.
func TestStartServes(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	r.on(func(s *Supervisor) {
		if n := len(*s.dispatch.Load()); n != 2 {
			t.Errorf("%d workers in dispatch, want 2", n)
		}
		if s.next != nil || len(s.gens) != 1 {
			t.Errorf("next %v, %d generations", s.next, len(s.gens))
		}
	})
}

// TestStartTimeout: a first generation whose workers never report ready
// fails the start at startTimeout, with its workers killed.
func TestStartTimeout(t *testing.T) {
	r := newRig(t, twoWorkers, "hang", "hang")
	r.advance(startTimeout)
	err := r.exit()
	if err == nil || !strings.Contains(err.Error(), "workers not ready within 30s") {
		t.Fatalf("start: %v", err)
	}
	for i := range 2 {
		if how := r.proc(i).Wait(); how != "killed by signal SIGKILL" {
			t.Errorf("worker %d: %s", i, how)
		}
	}
}

// TestStartCrash: a worker that dies before it is ready fails the start.
func TestStartCrash(t *testing.T) {
	r := newRig(t, twoWorkers, "ready", "crash")
	err := r.exit()
	if err == nil || !strings.Contains(err.Error(), "failed to start: exit status 2") {
		t.Fatalf("start: %v", err)
	}
}

// TestRetire: a worker that got SIGTERM serves until its replacement is
// ready, then drains; its slot's restarts do not count it.
func TestRetire(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	old := r.proc(0)
	r.next("hang")
	if err := old.retire(); err != nil {
		t.Fatal(err)
	}
	r.until("the replacement started", func(*Supervisor) bool { return r.started() == 3 })
	r.on(func(s *Supervisor) {
		if n := len(*s.dispatch.Load()); n != 2 {
			t.Errorf("%d workers in dispatch while the replacement starts, want 2 (the retiring one serves)", n)
		}
	})
	// The replacement reports ready (a new fake that is ready takes over
	// the hung one's slot after its start timeout).
	r.advance(startTimeout)
	r.until("the replacement serving", func(s *Supervisor) bool {
		return s.current.slots[0].w != nil && s.current.slots[0].w.ready
	})
	if how := old.Wait(); how != "exit status 0" {
		t.Errorf("retired worker: %s", how)
	}
	r.until("the retired worker gone", func(s *Supervisor) bool { return len(s.current.retired) == 0 })
	r.on(func(s *Supervisor) {
		if sl := s.current.slots[0]; sl.restarts != 1 || !strings.Contains(sl.lastExit, "not ready within") {
			t.Errorf("slot 0: %d restarts, last exit %q; want the hung replacement's", sl.restarts, sl.lastExit)
		}
	})
}

// TestRetiredWorkerDrainTimeout: a retired worker still draining at
// drain_timeout is killed.
func TestRetiredWorkerDrainTimeout(t *testing.T) {
	r := newRig(t, twoWorkers, "hold", "ready")
	r.serving(1)
	old := r.proc(0)
	old.retire()
	r.until("the replacement ready", func(s *Supervisor) bool {
		return s.current.slots[0].w != nil && s.current.slots[0].w.ready && s.current.slots[0].w.pid != old.pid
	})
	r.advance(10 * time.Second)
	if how := old.Wait(); how != "killed by signal SIGKILL" {
		t.Errorf("retired worker: %s", how)
	}
}

// TestRespawnBackoff: a worker that keeps crashing is restarted after
// 100 ms, 200 ms, 400 ms...; one that stayed up healthyAfter is restarted
// at once.
func TestRespawnBackoff(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	crashes := 0
	crash := func(i int) {
		r.t.Helper()
		r.proc(i).exit("exit status 2")
		crashes++
		r.until("the crash seen", func(s *Supervisor) bool { return s.current.slots[0].restarts == crashes })
	}
	crash(0)
	for i, backoff := range []time.Duration{100, 200, 400, 800} {
		backoff *= time.Millisecond
		r.on(func(s *Supervisor) {
			if sl := s.current.slots[0]; sl.backoff != backoff || sl.restarts != i+1 || sl.lastExit != "exit status 2" {
				t.Fatalf("crash %d: backoff %v restarts %d last exit %q; want %v", i+1, sl.backoff, sl.restarts, sl.lastExit, backoff)
			}
		})
		r.advance(backoff - time.Millisecond)
		if n := r.started(); n != 2+i {
			t.Fatalf("crash %d: restarted before its backoff", i+1)
		}
		r.advance(time.Millisecond)
		r.until("the restart", func(s *Supervisor) bool { return s.current.slots[0].w != nil })
		if i < 3 {
			crash(2 + i)
		}
	}
	// Up for healthyAfter: the next crash is restarted at once.
	r.advance(healthyAfter)
	crash(5)
	r.on(func(s *Supervisor) {
		if b := s.current.slots[0].backoff; b != 0 {
			t.Errorf("backoff %v after a worker that stayed up, want 0", b)
		}
	})
	r.until("the restart", func(s *Supervisor) bool { return s.current.slots[0].w != nil })
}

// TestRespawnedWorkerStartTimeout: a replacement that never reports ready
// is killed at startTimeout, and the slot's history says why.
func TestRespawnedWorkerStartTimeout(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	r.next("hang")
	r.proc(1).exit("exit status 2")
	r.until("the crash seen", func(s *Supervisor) bool { return s.current.slots[1].w == nil })
	r.advance(minBackoff)
	r.until("the restart", func(s *Supervisor) bool { return s.current.slots[1].w != nil })
	r.advance(startTimeout)
	r.until("the hung worker replaced", func(s *Supervisor) bool { return s.current.slots[1].restarts == 2 })
	r.on(func(s *Supervisor) {
		if last := s.current.slots[1].lastExit; last != "killed by signal SIGKILL: not ready within 30s" {
			t.Errorf("last exit %q", last)
		}
	})
}

// TestWorkerHeartbeatTimeout: a worker that stops answering pings leaves
// dispatch after unresponsiveAfter and is replaced at worker_timeout.
func TestWorkerHeartbeatTimeout(t *testing.T) {
	r := newRig(t, twoWorkers+"\nworker_timeout = \"5s\"", "deaf", "ready")
	r.serving(1)
	tick := func(d time.Duration) {
		r.t.Helper()
		r.clock.advance(d)
		r.health <- r.clock.Now()
	}
	for range 11 { // 5.5 s: pinged at 0.5 s, silent for 5 s
		tick(heartbeatInterval)
		r.until("the healthy worker's pong", func(s *Supervisor) bool { return s.current.slots[1].w.beat.since.IsZero() })
		if r.clock.Now().Sub(time.Unix(1e9, 0)) == 2500*time.Millisecond {
			r.on(func(s *Supervisor) {
				if ws := *s.dispatch.Load(); len(ws) != 1 || ws[0] != s.current.slots[1].w {
					t.Errorf("silent for 2 s: %d workers in dispatch, want the healthy one", len(ws))
				}
			})
		}
	}
	if how := r.proc(0).Wait(); how != "killed by signal SIGKILL" {
		t.Fatalf("deaf worker: %s", how)
	}
	r.until("the deaf worker replaced", func(s *Supervisor) bool { return s.current.slots[0].restarts == 1 })
	r.on(func(s *Supervisor) {
		if last := s.current.slots[0].lastExit; last != "killed by signal SIGKILL: unresponsive for 5s" {
			t.Errorf("last exit %q", last)
		}
	})
}

// TestContextCancelKills: the caller's context ending kills the daemon.
func TestContextCancelKills(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	r.cancel()
	if err := r.exit(); err != nil {
		t.Fatalf("exit %v", err)
	}
	if r.s.exitReason != "killed (context cancelled) with no connection in flight" {
		t.Errorf("exit reason %q", r.s.exitReason)
	}
}

// TestStatusRows: the status shows the loop's state in the control
// protocol's words, and each worker's row as zctl status prints it.
func TestStatusRows(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	r.next("hang", "hang")
	r.reload(false)
	r.proc(1).exit("exit status 2")
	r.until("the crash seen", func(s *Supervisor) bool { return s.current.slots[1].restarts == 1 })
	var rows []string
	var state string
	r.on(func(s *Supervisor) {
		st, _ := s.snapshot()
		state = st.State
		for _, w := range st.Workers {
			rows = append(rows, fmt.Sprintf("%d/%d %s", w.Generation, w.Slot, w.State))
		}
	})
	want := []string{"1/0 ready", "2/0 starting", "2/1 starting", "1/1 restarting"}
	if state != "reloading" || !slices.Equal(rows, want) {
		t.Fatalf("status %s %q, want reloading %q", state, rows, want)
	}
}
