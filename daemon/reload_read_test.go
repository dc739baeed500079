package daemon

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// hangConfig replaces the rig's configuration file with a FIFO, whose
// open waits for a writer, as a read from a file system that does not
// answer waits. feed writes conf into it, ending the wait.
func hangConfig(r *rig) (feed func(conf string)) {
	r.t.Helper()
	path := r.s.opts.Source.Path
	if err := os.Remove(path); err != nil {
		r.t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		r.t.Fatal(err)
	}
	return func(conf string) {
		r.t.Helper()
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			r.t.Fatal(err)
		}
		f.Write(configBody(path, conf))
		f.Close()
		os.Remove(path)
	}
}

// TestReloadReadHangs: a reload whose configuration cannot be read (a
// file system that does not answer) leaves the loop free: status
// answers and the old generation serves; after reloadReadTimeout the
// reload fails with the reason, and what the read finally gets is
// dropped. A reload after it works.
func TestReloadReadHangs(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	feed := hangConfig(r)
	answer := r.reloadReading(false)
	r.on(func(s *Supervisor) {
		if s.state != stateReloading || s.reading == nil || len(*s.dispatch.Load()) != 2 {
			t.Errorf("while the read waits: state %s, reading %v, %d workers in dispatch", s.state, s.reading != nil, len(*s.dispatch.Load()))
		}
	})
	r.advance(reloadReadTimeout)
	msg := r.answer(answer)
	if !strings.Contains(msg, "took over 10s (a file system that does not answer?); nothing changed") {
		t.Fatalf("reload: %q", msg)
	}
	r.wantFailedReload(msg)
	feed(twoWorkers) // the read ends now; the loop drops it
	r.until("the late read dropped", func(s *Supervisor) bool { return s.readsOut == 0 && s.reading == nil && s.state == stateServing })
	r.reconfigure("workers = 3")
	r.next("ready", "ready", "ready")
	if msg := r.answer(r.reload(false)); msg != "generation 2 serving with 3 workers" {
		t.Fatalf("the reload after: %q", msg)
	}
}

// TestDrainDuringReloadRead: a drain while a reload reads its
// configuration fails the reload at once; the read's result is dropped.
func TestDrainDuringReloadRead(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	feed := hangConfig(r)
	answer := r.reloadReading(false)
	r.until("the read started", func(s *Supervisor) bool { return s.reading != nil })
	r.drain(0)
	if msg := r.answer(answer); msg != "error: a drain started" {
		t.Fatalf("reload: %q", msg)
	}
	feed(twoWorkers)
	if err := r.exit(); err != nil {
		t.Fatalf("exit %v", err)
	}
	if n := r.started(); n != 2 {
		t.Errorf("%d workers started, want the first generation's 2", n)
	}
}

// TestReloadReadStillHung: reloads asked for while the reads of
// maxStuckReloadReads earlier ones, which timed out, have still not
// returned (the file system still does not answer) fail at once rather
// than start another read that would hang too: each such read holds a
// thread in a system call that may never return, and a reload retried
// every few seconds (a script, SIGHUPs) would pile them up until the
// runtime's thread limit kills the supervisor. Once the stuck reads
// return, reloads work.
func TestReloadReadStillHung(t *testing.T) {
	r := newRig(t, twoWorkers)
	r.serving(1)
	feed := hangConfig(r)
	for range maxStuckReloadReads {
		answer := r.reloadReading(false)
		r.advance(reloadReadTimeout)
		r.answer(answer)
	}
	next := r.reloadReading(false)
	var reading bool
	r.on(func(s *Supervisor) { reading = s.reading != nil })
	if reading {
		feed(twoWorkers) // frees every read
		r.answer(next)
		t.Fatalf("read %d started while %d still hang", maxStuckReloadReads+1, maxStuckReloadReads)
	}
	msg := r.answer(next)
	if !strings.Contains(msg, "have not returned") {
		t.Fatalf("reload while the earlier reads hang: %q", msg)
	}
	r.on(func(s *Supervisor) {
		if s.state != stateServing || s.metrics.reloadsFailed.Load() != maxStuckReloadReads+1 || s.lastReload != "failed: "+strings.TrimPrefix(msg, "error: ") {
			t.Errorf("state %s, %d reloads failed, last reload %q", s.state, s.metrics.reloadsFailed.Load(), s.lastReload)
		}
	})
	feed(twoWorkers)
	r.until("the stuck reads returned", func(s *Supervisor) bool { return s.readsOut == 0 })
	r.reconfigure("workers = 3")
	r.next("ready", "ready", "ready")
	if msg := r.answer(r.reload(false)); msg != "generation 2 serving with 3 workers" {
		t.Fatalf("the reload after: %q", msg)
	}
}

// TestReloadAnswerWithinZctlWait: zctl waits ctl.DefaultTimeouts.Reload
// for a reload's answer, which may come after two reloads (one asked for
// during another) that each read for up to reloadReadTimeout and start
// workers for up to startTimeout: it must wait longer, or it gives up on
// a daemon that is fine ("no answer from the daemon: is it stopped?",
// exit 3).
func TestReloadAnswerWithinZctlWait(t *testing.T) {
	if worst := 2 * (reloadReadTimeout + 30*time.Second); ctl.DefaultTimeouts.Reload <= worst {
		t.Fatalf("zctl waits %v for a reload's answer; the daemon may take %v", ctl.DefaultTimeouts.Reload, worst)
	}
}
