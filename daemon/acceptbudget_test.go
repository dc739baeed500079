package daemon

import (
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
)

const acceptTen = "dispatch = \"accept\"\nworkers = 2\nmax_connections = 10\ndrain_timeout = \"10s\""

// lastLimits returns the last budget each process was sent, and whether
// each has it and its sockets.
func (r *rig) lastLimits(ps ...*fakeProc) ([]uint32, bool) {
	var out []uint32
	ok := true
	for _, p := range ps {
		p.amu.Lock()
		if len(p.limits) == 0 || !p.listened {
			ok = false
			out = append(out, 0)
		} else {
			out = append(out, p.limits[len(p.limits)-1])
		}
		p.amu.Unlock()
	}
	return out, ok
}

// TestAcceptBudgetReload: in the accept mode max_connections holds
// across a reload's overlap, as in the handoff mode: the new generation's
// workers may hold what the old one's leave, and get more as those end.
// Until an old worker has said it stopped accepting (it has not read its
// drain at the promotion), its whole budget is held back.
func TestAcceptBudgetReload(t *testing.T) {
	r := newRig(t, acceptTen, "hold", "hold")
	r.serving(1)
	old := []*fakeProc{r.proc(0), r.proc(1)}
	r.until("the first generation's budgets", func(*Supervisor) bool {
		ls, ok := r.lastLimits(old...)
		return ok && ls[0] == 5 && ls[1] == 5
	})
	// The old workers accept 4 and 3 connections.
	for i, n := range []uint32{4, 3} {
		if err := fdpass.Send(old[i].ch, appendAccepted(nil, n)); err != nil {
			t.Fatal(err)
		}
	}
	r.until("7 in flight", func(s *Supervisor) bool { return s.inflight.Load() == 7 })

	r.next("ready", "ready")
	r.reload(false)
	r.serving(2)
	nw := []*fakeProc{r.proc(2), r.proc(3)}
	r.until("the new workers' sockets", func(*Supervisor) bool { _, ok := r.lastLimits(nw...); return ok })
	for i, p := range nw {
		p.amu.Lock()
		first := p.limits[0]
		p.amu.Unlock()
		if first != 0 {
			t.Errorf("new worker %d: first budget %d while the old ones may still accept up to theirs, want 0", i, first)
		}
	}
	check := func(what string, want []uint32) {
		t.Helper()
		r.until(what, func(*Supervisor) bool {
			ls, _ := r.lastLimits(nw...)
			return ls[0] == want[0] && ls[1] == want[1]
		})
	}
	// The old ones stopped accepting (they answer the drain so): 7 held.
	check("budgets of 10-7 (2+1: slot 0 gets the remainder)", []uint32{2, 1})
	// 4 of them end.
	ds := make([]doneMeta, 4)
	if err := fdpass.Send(old[0].ch, appendDone(nil, ds)); err != nil {
		t.Fatal(err)
	}
	check("budgets of 10-3", []uint32{4, 3})
	// The other old worker dies with its 3.
	old[1].exit("killed by signal SIGKILL")
	check("budgets of 10-0", []uint32{5, 5})
}

// TestAcceptBudgetSplit: the budgets of a generation add up to
// max_connections exactly (its share rounded up, per worker, exceeded it
// by up to workers-1).
func TestAcceptBudgetSplit(t *testing.T) {
	r := newRig(t, "dispatch = \"accept\"\nworkers = 3\nmax_connections = 10")
	r.serving(1)
	ps := []*fakeProc{r.proc(0), r.proc(1), r.proc(2)}
	r.until("budgets 4+3+3", func(*Supervisor) bool {
		ls, ok := r.lastLimits(ps...)
		return ok && ls[0] == 4 && ls[1] == 3 && ls[2] == 3
	})
}

// TestAcceptBudgetRetire: a worker retired after a SIGTERM holds its
// connections back from its own slot only: its replacement gets what it
// leaves of that slot's part, and the other slot keeps its own.
func TestAcceptBudgetRetire(t *testing.T) {
	r := newRig(t, acceptTen, "hold", "ready")
	r.serving(1)
	old, other := r.proc(0), r.proc(1)
	r.until("the first budgets", func(*Supervisor) bool {
		ls, ok := r.lastLimits(old, other)
		return ok && ls[0] == 5 && ls[1] == 5
	})
	if err := fdpass.Send(old.ch, appendAccepted(nil, 3)); err != nil {
		t.Fatal(err)
	}
	r.until("3 in flight", func(s *Supervisor) bool { return s.inflight.Load() == 3 })
	r.next("ready")
	if err := old.retire(); err != nil {
		t.Fatal(err)
	}
	r.until("the replacement", func(*Supervisor) bool { return r.started() == 3 })
	repl := r.proc(2)
	r.until("the replacement's budget: 5 less the retired worker's 3", func(*Supervisor) bool {
		ls, ok := r.lastLimits(repl, other)
		return ok && ls[0] == 2 && ls[1] == 5
	})
	other.amu.Lock()
	sent := len(other.limits)
	other.amu.Unlock()
	if sent != 1 {
		t.Errorf("the other slot's worker was sent %d budgets, want 1 (unchanged)", sent)
	}
	old.exit("exit status 0")
	r.until("the replacement's whole part", func(*Supervisor) bool {
		ls, _ := r.lastLimits(repl)
		return ls[0] == 5
	})
}

// TestAcceptBudgetSocketsRetried: a new worker whose first budget could
// not be sent (its channel was full) gets its budget and its sockets at a
// later heartbeat, even when the budgets were recomputed meanwhile (an
// old worker's done, during a reload's overlap). That recompute used to
// clear the retry, and the worker stayed without sockets, its share of
// max_connections unused, until something else refreshed dispatch.
func TestAcceptBudgetSocketsRetried(t *testing.T) {
	r := newRig(t, acceptTen, "ready", "clog")
	r.until("both workers started", func(*Supervisor) bool { return r.started() == 2 })
	p := r.proc(1)
	<-p.configured
	var w *workerProc
	r.until("the second worker's channel", func(s *Supervisor) bool {
		if s.next == nil || s.next.slots[1].w == nil {
			return false
		}
		w = s.next.slots[1].w
		return true
	})
	// Fill its channel: it reads nothing until gate2.
	junk := make([]byte, 4096)
	junk[0] = 0xEE // a type the fake ignores
	full := false
	for range 1 << 14 {
		if err := fdpass.TrySend(w.ch, junk); err != nil {
			full = true
			break
		}
	}
	if !full {
		t.Fatal("could not fill the worker's channel")
	}
	close(p.gate)
	r.serving(1)
	r.on(func(s *Supervisor) {
		if s.am.given[w] {
			t.Fatal("the worker was given its sockets though its budget could not be sent")
		}
	})
	// The budgets are recomputed (as an old worker's done would make
	// them), then the worker reads its channel again.
	r.on(func(s *Supervisor) { s.handleBudget(evBudget{}) })
	close(p.gate2)
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.clock.advance(heartbeatInterval)
		r.health <- r.clock.Now()
		if ls, ok := r.lastLimits(p); ok {
			if ls[0] != 5 {
				t.Errorf("budget %d, want 5", ls[0])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker never got its budget and sockets")
		}
		time.Sleep(time.Millisecond)
	}
}
