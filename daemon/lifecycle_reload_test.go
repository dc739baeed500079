package daemon

import (
	"strings"
	"testing"
	"time"
)

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
