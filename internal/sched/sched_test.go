package sched

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// policies are those of every thread of process pid, from /proc/PID/task/*/stat
// (field 41), keyed by thread id.
func policies(t *testing.T, pid int) map[int]int {
	t.Helper()
	dirs, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	m := map[int]int{}
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue // exited
		}
		// After "pid (comm) ", field 3 onwards; the policy is field 41.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		p, err := strconv.Atoi(f[41-3])
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		tid, _ := strconv.Atoi(filepath.Base(d))
		m[tid] = p
	}
	return m
}

// restore puts the test process back to Normal at the end.
func restore(t *testing.T) {
	t.Cleanup(func() {
		if err := SetProcess(Normal); err != nil {
			t.Error(err)
		}
	})
}

func allAre(t *testing.T, pid, policy int, what string) {
	t.Helper()
	for tid, p := range policies(t, pid) {
		if p != policy {
			t.Errorf("%s: thread %d has policy %d, want %d", what, tid, p, policy)
		}
	}
}

// TestSetProcess: every thread takes the policy, threads started later
// inherit it, and Normal puts them all back.
func TestSetProcess(t *testing.T) {
	if p, err := Policy(); err != nil || p != Normal {
		t.Skipf("the test runs under policy %d (%v), not SCHED_OTHER", p, err)
	}
	restore(t)
	if err := SetProcess(Batch); err != nil {
		t.Fatal(err)
	}
	allAre(t, os.Getpid(), Batch, "after SetProcess(Batch)")
	// New threads: goroutines locked to their threads make the runtime
	// start more.
	before := len(policies(t, os.Getpid()))
	release, locked := make(chan struct{}), make(chan struct{})
	for range 4 {
		go func() {
			runtime.LockOSThread() // for good: the runtime starts another thread for the rest
			locked <- struct{}{}
			<-release
		}()
	}
	for range 4 {
		<-locked
	}
	if after := len(policies(t, os.Getpid())); after <= before {
		t.Logf("no new thread started (%d before, %d after)", before, after)
	}
	allAre(t, os.Getpid(), Batch, "threads started after SetProcess(Batch)")
	close(release)
	if err := SetProcess(Normal); err != nil {
		t.Fatal(err)
	}
	allAre(t, os.Getpid(), Normal, "after SetProcess(Normal)")
}

// TestRun: a child started inside Run(Normal) from a Batch process runs
// SCHED_OTHER, while one started outside inherits Batch; the thread Run
// used goes back to Batch.
func TestRun(t *testing.T) {
	if p, err := Policy(); err != nil || p != Normal {
		t.Skipf("the test runs under policy %d (%v), not SCHED_OTHER", p, err)
	}
	restore(t)
	if err := SetProcess(Batch); err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	var inside *exec.Cmd
	if err := Run(Normal, func() error { inside = start(); return nil }); err != nil {
		t.Fatal(err)
	}
	outside := start()
	allAre(t, inside.Process.Pid, Normal, "child started in Run(Normal)")
	allAre(t, outside.Process.Pid, Batch, "child started outside Run")
	allAre(t, os.Getpid(), Batch, "this process after Run")
}

// TestRunPanics: a panic in f leaves the thread Run used at its own policy.
func TestRunPanics(t *testing.T) {
	if p, err := Policy(); err != nil || p != Normal {
		t.Skipf("the test runs under policy %d (%v), not SCHED_OTHER", p, err)
	}
	restore(t)
	if err := SetProcess(Batch); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic did not come through Run")
			}
		}()
		Run(Normal, func() error { panic("f") })
	}()
	allAre(t, os.Getpid(), Batch, "this process after a panic in Run")
}

// TestStarted: the policy the process was started with is its first
// thread's, whichever thread asks.
func TestStarted(t *testing.T) {
	if p, err := Started(); err != nil || p != Normal {
		t.Skipf("the test runs under policy %d (%v), not SCHED_OTHER", p, err)
	}
	restore(t)
	offMain(func() {
		if err := set(0, Batch); err != nil {
			t.Error(err)
			return
		}
		defer set(0, Normal)
		if p, err := Started(); err != nil || p != Normal {
			t.Errorf("Started from a SCHED_BATCH thread: %d, %v; want %d", p, err, Normal)
		}
	})
}

// offMain calls f locked to a thread other than the process's first one.
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

// TestSetKeepsSlice: set keeps a thread's own time slice (sched_runtime
// of a fair policy, Linux 6.12; chrt --sched-runtime with --other or
// --batch), which a sched_setattr without one puts back to the default.
func TestSetKeepsSlice(t *testing.T) {
	const slice = 5_000_000 // ns
	var skip string
	offMain(func() {
		a, err := unix.SchedGetAttr(0, 0)
		if err != nil || int(a.Policy) != Normal {
			skip = fmt.Sprintf("the test runs under policy %d (%v), not SCHED_OTHER", a.Policy, err)
			return
		}
		own := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: uint32(Normal), Nice: a.Nice, Runtime: slice}
		if err := unix.SchedSetAttr(0, &own, 0); err != nil {
			skip = fmt.Sprintf("no time slice of its own for a SCHED_OTHER thread: %v", err)
			return
		}
		defer func() {
			own.Runtime = 0 // the default
			unix.SchedSetAttr(0, &own, 0)
		}()
		if b, err := unix.SchedGetAttr(0, 0); err != nil || b.Runtime != slice {
			skip = fmt.Sprintf("no time slice of its own for a SCHED_OTHER thread (%d, %v)", b.Runtime, err)
			return
		}
		for _, p := range []int{Batch, Normal} {
			if err := set(0, p); err != nil {
				t.Error(err)
				return
			}
			if b, err := unix.SchedGetAttr(0, 0); err != nil || int(b.Policy) != p || b.Runtime != slice {
				t.Errorf("after set(%d): policy %d, slice %d ns (%v); want %d, %d ns", p, b.Policy, b.Runtime, err, p, slice)
			}
		}
	})
	if skip != "" {
		t.Skip(skip)
	}
}
