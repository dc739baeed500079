// Package sched sets the CPU scheduling policy (sched(7)) of the threads
// of this process. Linux schedules threads, not processes, and a Go
// program's threads are started by its runtime as it needs them: each
// inherits the policy of the thread that starts it.
package sched

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// The policies this package sets: both time-sharing, at the thread's own
// nice value; a Batch thread that wakes does not preempt the one running
// (its CPU time comes at the next tick or when the CPU is free), so a
// thread that wakes often for little work runs in larger batches when
// the CPUs are busy.
const (
	Normal = unix.SCHED_NORMAL // SCHED_OTHER, the default
	Batch  = unix.SCHED_BATCH
)

// Policy is the calling thread's policy: Normal, Batch, or another
// (SCHED_IDLE, SCHED_FIFO, SCHED_RR...) that the process was started with.
func Policy() (int, error) { return policyOf(0) }

// Started is the policy of the process's first thread, the one it was
// started with (exec keeps it). Its other threads may have another: under
// SCHED_FLAG_RESET_ON_FORK (chrt --reset-on-fork, systemd's
// CPUSchedulingResetOnFork=) a thread started from a realtime one runs
// SCHED_OTHER, and Policy depends on which thread asks.
func Started() (int, error) { return policyOf(os.Getpid()) }

// policyOf is the policy of thread tid (0: the calling thread).
func policyOf(tid int) (int, error) {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return 0, fmt.Errorf("sched_getattr: %w", err)
	}
	return int(a.Policy), nil
}

// SetProcess puts every thread of the process under policy (Normal or
// Batch), each keeping its own nice value and time slice (set). A thread the runtime starts
// meanwhile from one not yet changed is caught by the next pass; a pass
// that changes nothing ends it, and a thread started later inherits the
// policy.
func SetProcess(policy int) error {
	for range 8 {
		changed, err := setAll(policy)
		if err != nil || changed == 0 {
			return err
		}
	}
	return nil
}

func setAll(policy int) (changed int, err error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, fmt.Errorf("list threads: %w", err)
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		switch err := set(tid, policy); err {
		case nil:
			changed++
		case errSame, unix.ESRCH: // already so; or it has exited
		default:
			return changed, fmt.Errorf("thread %d: %w", tid, err)
		}
	}
	return changed, nil
}

// errSame: the thread has the policy already.
var errSame = fmt.Errorf("same policy")

// set gives thread tid (0: the calling thread) policy, keeping its nice,
// its reset-on-fork and its time slice.
func set(tid, policy int) error {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return err
	}
	if int(a.Policy) == policy {
		return errSame
	}
	b := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: uint32(policy), Nice: a.Nice,
		Flags: a.Flags & unix.SCHED_FLAG_RESET_ON_FORK}
	if err := unix.SchedSetAttr(tid, &b, 0); err != nil {
		return err
	}
	// Since Linux 6.12 a thread of a fair policy may have a time slice of
	// its own (sched_runtime; chrt --sched-runtime), which a setting
	// without one puts back to the default. sched_getattr does not say
	// whether the slice was its own, only how long it is: one that was
	// not the default is put back. The policy is set: that it could not
	// be is no error of set's.
	if a.Runtime == 0 {
		return nil // an older kernel
	}
	if c, err := unix.SchedGetAttr(tid, 0); err == nil && c.Runtime != a.Runtime {
		b.Runtime = a.Runtime
		unix.SchedSetAttr(tid, &b, 0)
	}
	return nil
}

// Run calls f on a thread of policy, for a child process f starts to
// inherit it (fork copies the calling thread's policy): the calling
// goroutine is locked to its thread, which goes back to its own policy
// after f.
func Run(policy int, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	old, err := Policy()
	if err != nil || old == policy {
		return f()
	}
	if err := set(0, policy); err != nil && err != errSame {
		return f() // the child inherits this thread's policy, as before
	}
	defer set(0, old)
	return f()
}
