package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// TestKill: zctl kill ends the supervisor and every worker at once (the time
// is logged), with transfers in flight.
func TestKill(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 3})
	never := make(chan struct{})
	defer close(never)
	for range 4 {
		startSlowGet(t, d.Addr, "/big.bin", never)
	}
	st := d.WaitStatus(5*time.Second, "transfers", func(st *ctlStatus) bool { return len(st.Transfers) == 4 })
	pids := append(WorkerPIDs(st), st.PID)
	start := time.Now()
	if r := d.Zctl("kill"); r.Code != 0 {
		t.Fatalf("zctl kill: %d %s", r.Code, r.Stderr)
	}
	// The bound tells a kill from a drain (which would wait for these
	// clients forever), with room for a slow machine running -race
	// binaries: the time itself is logged, not asserted.
	const killBound = 5 * time.Second
	if code := d.WaitExit(killBound); code != 0 {
		t.Fatalf("exit status %d after zctl kill, want 0 (on request)", code)
	}
	t.Logf("supervisor gone %v after zctl kill", time.Since(start))
	// On request, but not clean: the log says what was cut.
	if log := d.Log(); !strings.Contains(log, "killed (zctl kill) with 4 connections in flight") || strings.Contains(log, "exited cleanly") {
		t.Fatalf("log:\n%s", tail(log, 10))
	}
	for _, pid := range pids {
		if !waitFor(killBound-time.Since(start), func() bool { return !alive(pid) }) {
			t.Fatalf("process %d still alive %v after zctl kill", pid, time.Since(start))
		}
	}
}

// TestSecondSignalKills: a second SIGTERM during a drain kills at once.
func TestSecondSignalKills(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root})
	never := make(chan struct{})
	defer close(never)
	startSlowGet(t, d.Addr, "/big.bin", never)
	st := d.WaitStatus(5*time.Second, "the transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	d.Cmd.Process.Signal(syscall.SIGTERM)
	d.WaitState(ctl.StateDraining, 5*time.Second)
	d.Cmd.Process.Signal(syscall.SIGTERM)
	if code := d.WaitExit(2 * time.Second); code != 3 {
		t.Fatalf("exit status %d after a second SIGTERM cut a transfer, want 3", code)
	}
	for _, pid := range WorkerPIDs(st) {
		if !waitFor(time.Second, func() bool { return !alive(pid) }) {
			t.Fatalf("worker %d alive after the second SIGTERM", pid)
		}
	}
	if log := d.Log(); !strings.Contains(log, "second SIGTERM: killing instead of draining") || !strings.Contains(log, "killed (second SIGTERM) with 1 connection in flight") {
		t.Fatalf("log:\n%s", tail(d.Log(), 10))
	}
}

// TestKillDuringDrainWait: a zctl drain --wait that a kill overtakes
// fails with what the kill cut, rather than report a clean drain.
func TestKillDuringDrainWait(t *testing.T) {
	d, _ := stalledTransfer(t, DaemonOpts{Workers: 1})
	res := make(chan Result, 1)
	go func() { res <- d.Zctl("drain", "--wait") }()
	d.WaitState(ctl.StateDraining, 5*time.Second)
	if r := d.Zctl("kill"); r.Code != 0 {
		t.Fatalf("zctl kill: %d %s", r.Code, r.Stderr)
	}
	r := <-res
	if r.Code == 0 || !strings.Contains(r.Stderr, "killed (zctl kill) with 1 connection in flight") {
		t.Fatalf("zctl drain --wait overtaken by a kill: %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if code := d.WaitExit(5 * time.Second); code != 0 {
		t.Fatalf("exit status %d after zctl kill, want 0 (on request)", code)
	}
}

// TestSupervisorDeath: kill -9 of the supervisor leaves no worker running.
func TestSupervisorDeath(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 3})
	never := make(chan struct{})
	defer close(never)
	startSlowGet(t, d.Addr, "/big.bin", never)
	st := d.WaitStatus(5*time.Second, "a transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	d.Cmd.Process.Signal(syscall.SIGKILL)
	d.WaitExit(5 * time.Second)
	for _, pid := range WorkerPIDs(st) {
		if !waitFor(2*time.Second, func() bool { return !alive(pid) }) {
			t.Fatalf("worker %d survived its supervisor", pid)
		}
	}
}
