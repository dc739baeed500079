package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// TestStatusManyLongPaths: a worker with many transfers of long paths
// answers status within one channel message (the rest counted as
// omitted) and is not killed for it.
func TestStatusManyLongPaths(t *testing.T) {
	root := shortTempDir(t)
	// 15 components of 250 bytes: a path of about 3.8 KiB, near MaxPath.
	dir := root
	for range 15 {
		dir = filepath.Join(dir, strings.Repeat("d", 250))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "f.bin"))
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 << 20) // sparse: the transfers only need to stay in flight
	f.Close()
	rel, _ := filepath.Rel(root, filepath.Join(dir, "f.bin"))
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1})
	pid := WorkerPIDs(d.MustStatus())[0]
	never := make(chan struct{})
	defer close(never)
	const n = 60 // 60 * 3.8 KiB of paths: more than one channel message holds
	for range n {
		startSlowGet(t, d.Addr, "/"+rel, never)
	}
	st := d.WaitStatus(10*time.Second, "every transfer counted", func(st *ctlStatus) bool {
		return len(st.Transfers)+st.TransfersOmitted == n
	})
	if st.TransfersOmitted == 0 || len(st.Transfers) == 0 {
		t.Fatalf("%d transfers listed, %d omitted; want some of each", len(st.Transfers), st.TransfersOmitted)
	}
	if got := WorkerPIDs(st); len(got) != 1 || got[0] != pid || st.Totals.Restarts != 0 {
		t.Fatalf("workers %v (restarts %d), want [%d] untouched\n%s", got, st.Totals.Restarts, pid, tail(d.Log(), 10))
	}
	r := d.Zctl("status")
	if r.Code != 0 || !strings.Contains(r.Stdout, "more (see --json)") {
		t.Fatalf("zctl status: %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
}

// stalledTransfer starts a daemon with o serving a 32 MiB file and one
// download of it whose client stops reading after the first MiB; it
// returns once status shows that transfer.
func stalledTransfer(t *testing.T, o DaemonOpts) (*Daemon, *ctlStatus) {
	t.Helper()
	if o.Root == "" {
		o.Root = shortTempDir(t)
	}
	WriteRandom(t, filepath.Join(o.Root, "big.bin"), 32<<20)
	d := StartDaemon(t, o)
	never := make(chan struct{})
	t.Cleanup(func() { close(never) })
	startSlowGet(t, d.Addr, "/big.bin", never)
	st := d.WaitStatus(5*time.Second, "the transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	return d, st
}

// TestWorkerSIGTERM: a SIGTERM sent to one worker retires it gracefully:
// a replacement takes new connections at once, the worker finishes its
// transfer byte-exact, then exits; nothing counts as a crash.
func TestWorkerSIGTERM(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	small := WriteRandom(t, filepath.Join(root, "small.bin"), 4096)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1})
	gate := make(chan struct{})
	g := startSlowGet(t, d.Addr, "/big.bin", gate)
	st := d.WaitStatus(5*time.Second, "the transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	old := WorkerPIDs(st)[0]
	if err := syscall.Kill(old, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	d.WaitStatus(5*time.Second, "a replacement ready and the old worker draining", func(st *ctlStatus) bool {
		var ready, draining bool
		for _, w := range st.Workers {
			ready = ready || (w.PID != old && w.State == "ready")
			draining = draining || (w.PID == old && w.State == "draining")
		}
		return ready && draining
	})
	// New downloads go to the replacement, many of them, while the old
	// worker still holds its transfer.
	for i := range 20 {
		out := filepath.Join(t.TempDir(), "small.bin")
		if r := Zfetch(t, "-q", "-o", out, d.URL("/small.bin")); r.Code != 0 || FileSHA256(t, out) != small {
			t.Fatalf("download %d during the retirement: %d %s", i, r.Code, r.Stderr)
		}
	}
	if !alive(old) {
		t.Fatal("the retired worker exited with its transfer in flight")
	}
	close(gate)
	g.wait(t, sum)
	if !waitFor(5*time.Second, func() bool { return !alive(old) }) {
		t.Fatal("the retired worker did not exit after its transfer")
	}
	st = d.WaitStatus(5*time.Second, "one worker", func(st *ctlStatus) bool { return len(st.Workers) == 1 })
	if st.State != ctl.StateServing || st.Totals.Restarts != 0 || st.Workers[0].PID == old {
		t.Fatalf("after the retirement: state %s, restarts %d, workers %+v", st.State, st.Totals.Restarts, st.Workers)
	}
	log := d.Log()
	if !strings.Contains(log, "worker got SIGTERM") || strings.Contains(log, "panic") {
		t.Fatalf("log:\n%s", tail(log, 20))
	}
}

// TestReloadWaitReportsCutGeneration: reload --wait says so when the
// previous generation was killed at drain_timeout rather than drained.
func TestReloadWaitReportsCutGeneration(t *testing.T) {
	d, _ := stalledTransfer(t, DaemonOpts{Workers: 1, Config: "workers = 1\ndrain_timeout = \"1s\"\n"})
	r := d.Zctl("reload", "--wait")
	if r.Code != 0 || !strings.Contains(r.Stdout, "previous generation killed at drain_timeout (1s) with 1 connection in flight") {
		t.Fatalf("zctl reload --wait: %d\n%s%s", r.Code, r.Stdout, r.Stderr)
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

// TestReloadDuringReload: a reload asked for while another is in progress
// (here slowed down by a wrapper that delays each worker's start) is
// answered by a second reload that reads the configuration as it is now,
// not merged into the first, which read it before the change.
func TestReloadDuringReload(t *testing.T) {
	dir := shortTempDir(t)
	exe, real := filepath.Join(dir, "zfs-serve"), filepath.Join(dir, "zfs-serve.real")
	copyFile(t, zfsServe, exe)
	copyFile(t, zfsServe, real)
	rootA, rootB, rootC := shortTempDir(t), shortTempDir(t), shortTempDir(t)
	d := StartDaemon(t, DaemonOpts{Binary: exe, Root: rootA, Workers: 1, Config: "workers = 1\n"})
	// From now on a worker takes two seconds to start.
	wrapper := "#!/bin/sh\nsleep 2\nexec " + real + " \"$@\"\n"
	if err := os.WriteFile(exe+".new", []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(exe+".new", exe); err != nil {
		t.Fatal(err)
	}
	setRoot := func(root string) {
		cfg := fmt.Sprintf("root = %q\nlisten = [\"127.0.0.1:0\"]\ncontrol = %q\nworkers = 1\n", root, d.Control)
		if err := os.WriteFile(d.Config, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setRoot(rootB)
	first := make(chan Result, 1)
	go func() { first <- d.Zctl("reload") }()
	d.WaitState(ctl.StateReloading, 5*time.Second)
	setRoot(rootC)
	r := d.Zctl("reload")
	if r.Code != 0 || !strings.Contains(r.Stdout, "generation 3 serving") {
		t.Fatalf("second reload: %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if r := <-first; r.Code != 0 || !strings.Contains(r.Stdout, "generation 2 serving") {
		t.Fatalf("first reload: %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if st := d.MustStatus(); st.Root != rootC || st.Generation != 3 {
		t.Fatalf("after both reloads: generation %d root %s, want 3 and %s", st.Generation, st.Root, rootC)
	}
}

// replaceBinary puts body (a script) at exe the way an upgrade does: a new
// inode renamed over the old one.
func replaceBinary(t *testing.T, exe, body string) {
	t.Helper()
	if err := os.WriteFile(exe+".new", []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(exe+".new", exe); err != nil {
		t.Fatal(err)
	}
}

// TestWorkerSIGTERMReplacementFails: a worker asked to retire keeps
// serving while its replacement cannot start (here a broken binary on
// disk), and drains only once a replacement is ready.
func TestWorkerSIGTERMReplacementFails(t *testing.T) {
	dir := shortTempDir(t)
	exe := filepath.Join(dir, "zfs-serve")
	copyFile(t, zfsServe, exe)
	root := shortTempDir(t)
	small := WriteRandom(t, filepath.Join(root, "small.bin"), 4096)
	d := StartDaemon(t, DaemonOpts{Binary: exe, Root: root, Workers: 1})
	old := WorkerPIDs(d.MustStatus())[0]
	replaceBinary(t, exe, "#!/bin/sh\necho broken >&2\nexit 1\n")
	syscall.Kill(old, syscall.SIGTERM)
	d.WaitStatus(5*time.Second, "a failed replacement and the old worker retiring", func(st *ctlStatus) bool {
		retiring := false
		for _, w := range st.Workers {
			retiring = retiring || (w.PID == old && w.State == "retiring")
		}
		return retiring && st.Totals.Restarts >= 1
	})
	for i := range 5 {
		out := filepath.Join(t.TempDir(), "small.bin")
		if r := Zfetch(t, "-q", "--retries", "0", "-o", out, d.URL("/small.bin")); r.Code != 0 || FileSHA256(t, out) != small {
			t.Fatalf("download %d while the replacement fails: %d %s", i, r.Code, r.Stderr)
		}
	}
	copyFile(t, zfsServe, exe+".new")
	os.Rename(exe+".new", exe)
	if !waitFor(20*time.Second, func() bool { return !alive(old) }) {
		t.Fatalf("the retired worker still runs after a replacement could start\n%s", tail(d.Log(), 20))
	}
	st := d.WaitStatus(5*time.Second, "the replacement serving", func(st *ctlStatus) bool {
		return len(st.Workers) == 1 && st.Workers[0].State == "ready"
	})
	if st.Workers[0].PID == old {
		t.Fatal("no replacement")
	}
}

// TestRetiredWorkerDrainTimeout: a retired worker whose client never
// reads is killed at drain_timeout, and the log says what that cut.
func TestRetiredWorkerDrainTimeout(t *testing.T) {
	d, st := stalledTransfer(t, DaemonOpts{Workers: 1, Config: "workers = 1\ndrain_timeout = \"1s\"\n"})
	old := WorkerPIDs(st)[0]
	syscall.Kill(old, syscall.SIGTERM)
	if !waitFor(10*time.Second, func() bool { return !alive(old) }) {
		t.Fatal("a retired worker outlived drain_timeout")
	}
	if log := d.Log(); !strings.Contains(log, "drain timeout: killing a retired worker") || !strings.Contains(log, "connections_cut=1") {
		t.Fatalf("log:\n%s", tail(log, 20))
	}
	d.WaitStatus(5*time.Second, "one ready worker", func(st *ctlStatus) bool {
		return len(st.Workers) == 1 && st.Workers[0].State == "ready" && st.Totals.Restarts == 0
	})
}

// TestFailedSpawnsDoNotBlockReloads: reloads whose workers cannot even be
// started (the binary is gone) fail with the reason and leave nothing
// behind, so a later reload is not refused for old generations.
func TestFailedSpawnsDoNotBlockReloads(t *testing.T) {
	dir := shortTempDir(t)
	exe := filepath.Join(dir, "zfs-serve")
	copyFile(t, zfsServe, exe)
	d := StartDaemon(t, DaemonOpts{Binary: exe, Workers: 1})
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if r := d.Zctl("reload"); r.Code == 0 || !strings.Contains(r.Stderr, "start worker") {
			t.Fatalf("reload %d without a binary: %d %s", i, r.Code, r.Stderr)
		}
	}
	copyFile(t, zfsServe, exe)
	if r := d.Zctl("reload"); r.Code != 0 {
		t.Fatalf("reload after the binary is back: %s", r.Stderr)
	}
	d.WaitStatus(5*time.Second, "the new generation alone", func(st *ctlStatus) bool {
		return len(st.Workers) == 1 && st.State == ctl.StateServing && st.Generation == 6
	})
}
