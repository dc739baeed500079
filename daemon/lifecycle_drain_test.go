package daemon

import (
	"syscall"
	"testing"
	"time"
)

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
