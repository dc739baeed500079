package daemon

import (
	"strings"
	"testing"
	"time"
)

// Lifecycle scenarios where two things overlap: restarts, timeouts,
// reloads and deadlines that meet (fakes_test.go's rig, as in
// lifecycle_test.go).

// TestRespawnOnePending: a slot has one restart pending at a time. A
// retiring worker whose replacement could not start (a restart pending)
// and which then crashes schedules the slot's restart again; the earlier
// timer must not stay armed beside it, or the slot is restarted before
// the backoff its crashes asked for.
func TestRespawnOnePending(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	old := r.proc(0)
	r.next("fail", "crash")
	if err := old.retire(); err != nil {
		t.Fatal(err)
	}
	r.until("the replacement failed", func(s *Supervisor) bool {
		return strings.HasPrefix(s.current.slots[0].lastExit, "respawn failed")
	})
	old.exit("exit status 2") // the retiring worker crashes: a restart pending again
	for restarts := 1; restarts <= 2; restarts++ {
		r.until("the crash seen", func(s *Supervisor) bool { return s.current.slots[0].restarts == restarts })
		var next time.Time
		r.on(func(s *Supervisor) { next = s.current.slots[0].nextStart })
		started := r.started()
		r.advance(next.Sub(r.clock.Now()) - time.Millisecond)
		if n := r.started(); n != started {
			t.Fatalf("crash %d: slot restarted before its next start (%d processes started, want %d)", restarts, n, started)
		}
		r.advance(time.Millisecond)
		r.until("the restart", func(*Supervisor) bool { return r.started() == started+1 })
	}
}

// TestReadyAtStartTimeout: workers that report ready at the instant
// their start timeout fires (its event already queued behind their
// ready) serve: neither the workers' timeouts nor the generation's kill
// anything once the generation is promoted.
func TestReadyAtStartTimeout(t *testing.T) {
	r := newRig(t, twoWorkers, "hang", "hang")
	r.until("the workers started", func(*Supervisor) bool { return r.started() == 2 })
	r.on(func(s *Supervisor) {
		// The timers fire: their events wait in the queue behind this one.
		if n := r.clock.advance(startTimeout); n != 3 {
			t.Errorf("%d timers fired, want 3 (two workers', the generation's)", n)
		}
		for _, sl := range s.next.slots {
			s.handle(evReady{sl.w})
		}
	})
	r.serving(1)
	r.on(func(s *Supervisor) {
		for _, sl := range s.current.slots {
			if sl.w == nil || sl.w.killed || sl.restarts != 0 {
				t.Errorf("slot %d: worker %v, %d restarts", sl.index, sl.w, sl.restarts)
			}
		}
	})
	for i := range 2 {
		select {
		case <-r.proc(i).exited:
			t.Errorf("worker %d: %s", i, r.proc(i).how)
		default:
		}
	}
}

// TestReloadAfterSuccessfulReload: a reload asked for while another is in
// progress starts once that one has succeeded, too (not only after a
// failure), and is answered with its own generation.
func TestReloadAfterSuccessfulReload(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	first, second := make(chan string, 1), make(chan string, 1)
	answer := func(c chan string) func(string, error) {
		return func(msg string, err error) {
			if err != nil {
				msg = "error: " + err.Error()
			}
			c <- msg
		}
	}
	// Both in one turn of the loop: the second comes during the first.
	r.on(func(s *Supervisor) {
		s.reload(false, answer(first))
		s.reload(false, answer(second))
	})
	if msg := r.answer(first); msg != "generation 2 serving with 2 workers" {
		t.Fatalf("first reload: %q", msg)
	}
	if msg := r.answer(second); msg != "generation 3 serving with 2 workers" {
		t.Fatalf("second reload: %q", msg)
	}
}

// TestReloadsThatCannotStartDoNotPileUp: a reload whose only worker
// cannot be started leaves no generation behind (no exit will come to
// forget it), so such failures never count as generations still draining
// against later reloads.
func TestReloadsThatCannotStartDoNotPileUp(t *testing.T) {
	r := newRig(t, "workers = 1")
	r.serving(1)
	for i := range maxDrainingGenerations {
		r.next("fail")
		if msg := r.answer(r.reload(false)); msg != "error: start worker: fake: exec format error" {
			t.Fatalf("reload %d: %q", i+1, msg)
		}
	}
	r.on(func(s *Supervisor) {
		if len(s.gens) != 1 {
			t.Errorf("%d generations after failed reloads, want 1", len(s.gens))
		}
	})
	if msg := r.answer(r.reload(false)); !strings.HasPrefix(msg, "generation ") {
		t.Fatalf("reload after failed ones: %q", msg)
	}
}

// TestDrainReplacesReloadDeadline: a drain's deadline replaces those of
// generations already draining after a reload and of retired workers:
// one deadline for everyone.
func TestDrainReplacesReloadDeadline(t *testing.T) {
	r := newRig(t, twoWorkers, "hold", "hold")
	r.serving(1)
	r.proc(0).retire() // a retired worker draining on its own deadline
	r.until("the retired worker draining", func(s *Supervisor) bool {
		return len(s.current.retired) == 1 && s.current.retired[0].draining
	})
	if msg := r.answer(r.reload(false)); msg != "generation 2 serving with 2 workers" {
		t.Fatalf("reload: %q", msg)
	}
	r.holdConnections(1)
	r.advance(time.Second)
	if err := r.drain(time.Minute); err != nil {
		t.Fatal(err)
	}
	r.advance(10 * time.Second) // past the old generation's and the retired worker's
	r.on(func(s *Supervisor) {
		for _, g := range s.gens {
			for _, w := range g.workers() {
				if w.killed {
					t.Errorf("generation %d: worker %d killed before the drain's deadline", g.id, w.pid)
				}
			}
		}
	})
	select {
	case <-r.proc(0).exited:
		t.Errorf("retired worker ended before the drain's deadline: %s", r.proc(0).how)
	default:
	}
	r.advance(time.Minute)
	if err := r.exit(); err == nil || !strings.HasPrefix(err.Error(), "drain timeout (1m0s) expired") {
		t.Fatalf("exit %v", err)
	}
	if how := r.proc(0).Wait(); how != "killed by signal SIGKILL" {
		t.Errorf("retired worker: %s", how)
	}
}
