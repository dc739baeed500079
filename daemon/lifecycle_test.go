package daemon

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The supervisor's lifecycle, driven through its real loop with fake
// worker processes and a fake clock (fakes_test.go): every scenario runs
// in milliseconds, whatever the timeouts say.

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

// TestReload: a reload starts a new generation, which serves once ready;
// the old one drains and is forgotten once its workers are gone.
func TestReload(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	r.reconfigure("workers = 3")
	if msg := r.answer(r.reload(false)); msg != "generation 2 serving with 3 workers" {
		t.Fatalf("reload: %q", msg)
	}
	r.serving(2)
	r.until("generation 1 gone", func(s *Supervisor) bool { return len(s.gens) == 1 })
	for i := range 2 {
		if how := r.proc(i).Wait(); how != "exit status 0" {
			t.Errorf("old worker %d: %s", i, how)
		}
	}
	r.on(func(s *Supervisor) {
		if s.lastReload != "ok: generation 2 serving with 3 workers" || s.metrics.reloadsOK.Load() != 1 {
			t.Errorf("last reload %q, %d ok", s.lastReload, s.metrics.reloadsOK.Load())
		}
	})
}

// TestReloadWait: reload --wait answers once the old generation is gone,
// and says so.
func TestReloadWait(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	if msg := r.answer(r.reload(true)); msg != "generation 2 serving with 2 workers; previous generation drained" {
		t.Fatalf("reload --wait: %q", msg)
	}
}

// TestReloadWaitCut: reload --wait reports the old generation's
// connections cut at its drain_timeout.
func TestReloadWaitCut(t *testing.T) {
	r := newRig(t, twoWorkers, "hold", "hold")
	r.serving(1)
	r.holdConnections(1)
	answer := r.reload(true)
	r.serving(2)
	r.advance(9 * time.Second)
	r.on(func(s *Supervisor) {
		if len(s.gens) != 2 {
			t.Errorf("%d generations before the old one's drain_timeout, want 2", len(s.gens))
		}
	})
	r.advance(time.Second)
	if msg := r.answer(answer); msg != "generation 2 serving with 2 workers; previous generation killed at drain_timeout (10s) with 2 connections in flight" {
		t.Fatalf("reload --wait: %q", msg)
	}
}

// TestReloadWorkerCrashes: a new generation whose worker dies at start
// fails the reload; the old one goes on serving.
func TestReloadWorkerCrashes(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	r.next("ready", "crash")
	msg := r.answer(r.reload(false))
	if !strings.Contains(msg, "error: worker 1003 of generation 2 failed to start: exit status 2") {
		t.Fatalf("reload: %q", msg)
	}
	r.wantFailedReload(msg)
}

// wantFailedReload checks that generation 1 still serves after a failed
// reload, which the status records.
func (r *rig) wantFailedReload(msg string) {
	r.t.Helper()
	r.until("the new generation gone", func(s *Supervisor) bool { return len(s.gens) == 1 })
	r.on(func(s *Supervisor) {
		if s.state != stateServing || s.current.id != 1 || len(*s.dispatch.Load()) != 2 {
			r.t.Errorf("state %s, generation %d, %d in dispatch", s.state, s.current.id, len(*s.dispatch.Load()))
		}
		if s.lastReload != "failed: "+strings.TrimPrefix(msg, "error: ") || s.metrics.reloadsFailed.Load() != 1 {
			r.t.Errorf("last reload %q", s.lastReload)
		}
	})
}

// TestReloadStartFails: a worker of the new generation that cannot be
// started at all fails the reload; the old generation serves on.
func TestReloadStartFails(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	r.next("ready", "fail")
	msg := r.answer(r.reload(false))
	if msg != "error: start worker: fake: exec format error" {
		t.Fatalf("reload: %q", msg)
	}
	r.wantFailedReload(msg)
	if how := r.proc(2).Wait(); how != "killed by signal SIGKILL" {
		t.Errorf("the new generation's started worker: %s", how)
	}
}

// TestReloadStartTimeout: a new generation not ready within startTimeout
// is killed and the reload fails; the old one serves on.
func TestReloadStartTimeout(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	r.next("ready", "hang")
	answer := r.reload(false)
	r.advance(startTimeout - time.Millisecond)
	r.on(func(s *Supervisor) {
		if s.state != stateReloading {
			t.Errorf("state %s before the start timeout", s.state)
		}
	})
	r.advance(time.Millisecond)
	msg := r.answer(answer)
	if msg != "error: generation 2: workers not ready within 30s" {
		t.Fatalf("reload: %q", msg)
	}
	r.wantFailedReload(msg)
}

// TestReloadRetiredReplacementFails: a worker of the new generation that
// gets SIGTERM while it starts is replaced; if the replacement cannot be
// started, the reload fails at once with that cause, not at startTimeout
// with "not ready".
func TestReloadRetiredReplacementFails(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	r.next("hang", "hang", "fail")
	answer := r.reload(false)
	r.until("the new generation started", func(*Supervisor) bool { return r.started() == 4 })
	if err := r.proc(2).retire(); err != nil {
		t.Fatal(err)
	}
	r.until("the SIGTERM seen", func(s *Supervisor) bool { return s.next == nil || s.next.slots[0].w == nil })
	r.advance(startTimeout) // the answer is what came first
	msg := r.answer(answer)
	if want := "error: generation 2: worker 1002 got SIGTERM and its replacement could not start: start worker: fake: exec format error"; msg != want {
		t.Fatalf("reload: %q\nwant %q", msg, want)
	}
	r.wantFailedReload(msg)
	if how := r.proc(3).Wait(); how != "killed by signal SIGKILL" {
		t.Errorf("the new generation's other worker: %s", how)
	}
}

// TestReloadDuringReload: a reload asked for while one is in progress is
// a second reload, started once the first is done; requests made
// meanwhile share it.
func TestReloadDuringReload(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	r.next("hang", "hang")
	first := r.reload(false)
	second, third := r.reload(false), r.reload(false)
	r.advance(startTimeout) // the first one fails
	if msg := r.answer(first); msg != "error: generation 2: workers not ready within 30s" {
		t.Fatalf("first reload: %q", msg)
	}
	for _, c := range []<-chan string{second, third} {
		if msg := r.answer(c); msg != "generation 3 serving with 2 workers" {
			t.Fatalf("second reload: %q", msg)
		}
	}
	if n := r.started(); n != 6 {
		t.Fatalf("%d processes started, want 6 (3 generations)", n)
	}
}

// TestReloadsDoNotPileUp: a reload is refused while
// maxDrainingGenerations older generations are still draining.
func TestReloadsDoNotPileUp(t *testing.T) {
	r := newRig(t, "workers = 1\ndrain_timeout = \"1h\"", "hold")
	r.serving(1)
	for gen := 2; gen <= maxDrainingGenerations+1; gen++ {
		r.next("hold")
		if msg := r.answer(r.reload(false)); !strings.HasPrefix(msg, "generation ") {
			t.Fatalf("reload %d: %q", gen, msg)
		}
	}
	msg := r.answer(r.reload(false))
	if !strings.Contains(msg, "3 older generations are still draining") {
		t.Fatalf("reload past the bound: %q", msg)
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

// TestDrainIdle: a drain with no connection in flight ends at once, and
// the exit is clean.
func TestDrainIdle(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	if err := r.drain(0); err != nil {
		t.Fatal(err)
	}
	if err := r.exit(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if r.s.exitReason != "" {
		t.Errorf("exit reason %q", r.s.exitReason)
	}
}

// TestDrainTimeout: workers still busy at the drain's deadline are
// killed, and the exit status says connections were cut.
func TestDrainTimeout(t *testing.T) {
	r := newRig(t, twoWorkers, "hold", "hold")
	r.serving(1)
	r.holdConnections(1)
	r.drain(0)
	r.advance(10*time.Second - time.Millisecond)
	r.on(func(s *Supervisor) {
		if s.liveWorkers() != 2 {
			t.Errorf("%d workers before the deadline", s.liveWorkers())
		}
	})
	r.advance(time.Millisecond)
	wantExit(t, r.exit(), ExitDrainTimeout, "drain timeout (10s) expired: killed 2 workers with 2 connections in flight")
}

func wantExit(t *testing.T, err error, code int, msg string) {
	t.Helper()
	ee, ok := err.(*ExitError)
	if !ok || ee.Code != code || ee.Error() != msg {
		t.Fatalf("exit %v, want status %d %q", err, code, msg)
	}
}

// TestDrainDeadlineMoves: a second drain may move the deadline earlier,
// never later.
func TestDrainDeadlineMoves(t *testing.T) {
	for _, tt := range []struct {
		name         string
		first, again time.Duration
		killedAt     time.Duration
	}{
		{"earlier", 20 * time.Second, 5 * time.Second, 6 * time.Second},
		{"later kept", 5 * time.Second, 20 * time.Second, 5 * time.Second},
		{"default kept", 5 * time.Second, 0, 5 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, twoWorkers, "hold", "hold")
			r.serving(1)
			r.holdConnections(1)
			r.drain(tt.first)
			r.advance(time.Second)
			if err := r.drain(tt.again); err != nil {
				t.Fatal(err)
			}
			r.advance(tt.killedAt - time.Second - time.Millisecond)
			r.on(func(s *Supervisor) {
				if s.liveWorkers() != 2 {
					t.Fatalf("killed before %v", tt.killedAt)
				}
			})
			r.advance(time.Millisecond)
			err := r.exit()
			if ee, ok := err.(*ExitError); !ok || ee.Code != ExitDrainTimeout {
				t.Fatalf("exit %v", err)
			}
		})
	}
}

// TestKillDuringDrain: zctl kill ends a drain at once; the drain's
// connections cut, a kill on request exits 0.
func TestKillDuringDrain(t *testing.T) {
	r := newRig(t, twoWorkers, "hold", "hold")
	r.serving(1)
	r.holdConnections(1)
	r.drain(0)
	done := make(chan struct{})
	if err := r.s.request(t.Context(), evKill{why: "zctl kill", done: done}, done); err != nil {
		t.Fatal(err)
	}
	if err := r.exit(); err != nil {
		t.Fatalf("exit %v, want nil (a kill on request)", err)
	}
	if want := "killed (zctl kill) with 2 connections in flight"; r.s.exitReason != want {
		t.Errorf("exit reason %q, want %q", r.s.exitReason, want)
	}
}

// TestSecondSignalKills: a second SIGTERM during the drain it started
// kills, and the exit status says connections were cut.
func TestSecondSignalKills(t *testing.T) {
	r := newRig(t, twoWorkers, "hold", "hold")
	r.serving(1)
	r.holdConnections(1)
	r.sigs <- syscall.SIGTERM
	r.until("draining", func(s *Supervisor) bool { return s.state == stateDraining })
	r.sigs <- syscall.SIGTERM
	wantExit(t, r.exit(), ExitDrainTimeout, "killed (second SIGTERM) with 2 connections in flight")
}

// TestKillDuringReload: a kill while a new generation starts fails the
// reload and kills both generations.
func TestKillDuringReload(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	r.next("hang", "hang")
	answer := r.reload(false)
	r.until("reloading", func(s *Supervisor) bool { return s.state == stateReloading && r.started() == 4 })
	done := make(chan struct{})
	r.s.request(t.Context(), evKill{why: "zctl kill", done: done}, done)
	if msg := r.answer(answer); msg != "error: killed" {
		t.Fatalf("reload: %q", msg)
	}
	if err := r.exit(); err != nil {
		t.Fatalf("exit %v", err)
	}
	for i := range 4 {
		if how := r.proc(i).Wait(); how != "killed by signal SIGKILL" {
			t.Errorf("worker %d: %s", i, how)
		}
	}
}

// TestDrainDuringReload: a drain while a new generation starts fails the
// reload; the old generation drains.
func TestDrainDuringReload(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	r.next("hang", "hang")
	answer := r.reload(false)
	r.drain(0)
	if msg := r.answer(answer); msg != "error: a drain started" {
		t.Fatalf("reload: %q", msg)
	}
	if err := r.exit(); err != nil {
		t.Fatalf("exit %v", err)
	}
	for i, want := range []string{"exit status 0", "exit status 0", "killed by signal SIGKILL", "killed by signal SIGKILL"} {
		if how := r.proc(i).Wait(); how != want {
			t.Errorf("worker %d: %s, want %s", i, how, want)
		}
	}
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
