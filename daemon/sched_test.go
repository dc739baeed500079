package daemon

import (
	"errors"
	"os"
	"runtime"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/internal/sched"
)

// mainPolicy skips the test unless the process's first thread runs
// SCHED_OTHER, and puts every thread back to it at the end.
func mainPolicy(t *testing.T) {
	t.Helper()
	if p, err := sched.Started(); err != nil || p != sched.Normal {
		t.Skipf("the test runs under a policy other than SCHED_OTHER (%v)", err)
	}
	t.Cleanup(func() {
		if err := sched.SetProcess(sched.Normal); err != nil {
			t.Error(err)
		}
	})
}

// offMain calls f on a thread other than the process's first one.
func offMain(f func()) {
	done := make(chan struct{})
	var try func()
	try = func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if unix.Gettid() != os.Getpid() {
			f()
			return
		}
		// The first thread: hold it, so that another goroutine runs
		// elsewhere.
		held := make(chan struct{})
		go func() { try(); close(held) }()
		<-held
	}
	go func() { try(); close(done) }()
	<-done
}

// TestStartWorkerAfterFailedSched: a worker is started from a thread of
// the policy the supervisor was started with even when setting the
// supervisor's failed half-way (a later pass of SetProcess that could not
// list the threads, EMFILE) and left some threads SCHED_BATCH.
func TestStartWorkerAfterFailedSched(t *testing.T) {
	mainPolicy(t)
	s := &Supervisor{log: quietLog(), env: env{setSched: func(policy int) error {
		if err := sched.SetProcess(policy); err != nil {
			return err
		}
		return errors.New("list threads: too many open files")
	}}}
	s.initSched()
	s.applySched(true)
	var got int
	if err := s.startWorker(func() (err error) { got, err = sched.Policy(); return err }); err != nil {
		t.Fatal(err)
	}
	if got != sched.Normal {
		t.Errorf("worker started from a thread of policy %d, want SCHED_OTHER (%d)", got, sched.Normal)
	}
}

// TestInitSchedFirstThread: the policy zfs-serve was started with is its
// first thread's, whichever thread asks: under chrt --reset-on-fork (or
// systemd's CPUSchedulingResetOnFork=) with a realtime policy, the threads
// the runtime starts run SCHED_OTHER, and the supervisor must not take
// that for the start policy (and demote the first thread to SCHED_BATCH).
func TestInitSchedFirstThread(t *testing.T) {
	mainPolicy(t)
	s := &Supervisor{log: quietLog()}
	// A thread of another policy than the first one's asks.
	offMain(func() {
		sched.Run(sched.Batch, func() error { s.initSched(); return nil })
	})
	if s.sched.base != sched.Normal {
		t.Errorf("start policy %d, want the first thread's, SCHED_OTHER (%d)", s.sched.base, sched.Normal)
	}
}

// TestApplySchedAfterFailure: after a setting that failed, and may have
// changed some threads, the next reload sets the policy it asks for even
// if it is the one the supervisor had before: supervisor_sched_batch =
// false, reloaded, puts back to SCHED_OTHER the threads a failed
// SetProcess(Batch) had changed.
func TestApplySchedAfterFailure(t *testing.T) {
	var calls []int
	s := &Supervisor{log: quietLog(), env: env{setSched: func(policy int) error {
		calls = append(calls, policy)
		if len(calls) == 1 {
			return errors.New("list threads: too many open files")
		}
		return nil
	}}}
	s.sched = schedState{base: sched.Normal, now: sched.Normal}
	s.applySched(true)  // fails half-way
	s.applySched(false) // a reload with false
	if want := []int{sched.Batch, sched.Normal}; !slices.Equal(calls, want) {
		t.Errorf("setSched calls %v, want %v", calls, want)
	}
	s.applySched(false) // in force: nothing to do
	if len(calls) != 2 {
		t.Errorf("setSched calls %v after a reload that changed nothing, want 2", calls)
	}
}
