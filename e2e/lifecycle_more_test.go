package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// TestDrainTimeoutFlag: zctl drain --timeout replaces drain_timeout.
func TestDrainTimeoutFlag(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root}) // drain_timeout: the 60s default
	never := make(chan struct{})
	defer close(never)
	startSlowGet(t, d.Addr, "/big.bin", never)
	d.WaitStatus(5*time.Second, "the transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	start := time.Now()
	r := d.Zctl("drain", "--wait", "--timeout", "500ms")
	if r.Code != 1 || !strings.Contains(r.Stderr, "drain timeout (500ms) expired") {
		t.Fatalf("zctl drain --wait --timeout: exit %d, %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if code := d.WaitExit(5 * time.Second); code != 3 {
		t.Fatalf("exit status %d, want 3", code)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("took %v: the --timeout was not applied", el)
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

// TestReloadsDoNotPileUp: old generations that are still draining are
// bounded; a reload beyond the bound is refused with the reason, and the
// daemon keeps serving.
func TestReloadsDoNotPileUp(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: "workers = 1\n"})
	gate := make(chan struct{})
	var gets []*slowGet
	for gen := 1; gen <= 3; gen++ {
		gets = append(gets, startSlowGet(t, d.Addr, "/big.bin", gate))
		if r := d.Zctl("reload"); r.Code != 0 {
			t.Fatalf("reload %d: %s", gen, r.Stderr)
		}
	}
	st := d.MustStatus()
	if st.Generation != 4 || len(st.Workers) != 4 {
		t.Fatalf("generation %d with %d workers; want 4 and 4 (three draining)", st.Generation, len(st.Workers))
	}
	gets = append(gets, startSlowGet(t, d.Addr, "/big.bin", gate))
	r := d.Zctl("reload")
	if r.Code != 1 || !strings.Contains(r.Stderr, "3 older generations are still draining") {
		t.Fatalf("fourth reload with three generations draining: exit %d %q", r.Code, r.Stderr)
	}
	if st := d.MustStatus(); st.Generation != 4 || st.State != ctl.StateServing {
		t.Fatalf("after the refused reload: generation %d, state %s", st.Generation, st.State)
	}
	close(gate)
	for _, g := range gets {
		g.wait(t, sum)
	}
	d.WaitStatus(10*time.Second, "only generation 4 left", func(st *ctlStatus) bool { return len(st.Workers) == 1 })
	if r := d.Zctl("reload"); r.Code != 0 {
		t.Fatalf("reload once the old generations are gone: %s", r.Stderr)
	}
}

// TestReloadRunsBinaryOnDisk: a reload starts the new generation from the
// binary now on disk, as after a package upgrade.
func TestReloadRunsBinaryOnDisk(t *testing.T) {
	dir := shortTempDir(t)
	exe := filepath.Join(dir, "zfs-serve")
	copyFile(t, zfsServe, exe)
	d := StartDaemon(t, DaemonOpts{Binary: exe})
	old := WorkerPIDs(d.MustStatus())
	// Replace the file the way dpkg does: a new inode renamed over the old.
	copyFile(t, zfsServe, exe+".new")
	if err := os.Rename(exe+".new", exe); err != nil {
		t.Fatal(err)
	}
	var want syscall.Stat_t
	syscall.Stat(exe, &want)
	if r := d.Zctl("reload"); r.Code != 0 {
		t.Fatalf("reload: %s", r.Stderr)
	}
	st := d.MustStatus()
	for _, w := range st.Workers {
		if w.Generation != 2 {
			continue
		}
		var got syscall.Stat_t
		if err := syscall.Stat(fmt.Sprintf("/proc/%d/exe", w.PID), &got); err != nil {
			t.Fatal(err)
		}
		if got.Ino != want.Ino {
			t.Errorf("new worker %d runs inode %d, the binary on disk is %d", w.PID, got.Ino, want.Ino)
		}
	}
	for _, pid := range old {
		if !waitFor(5*time.Second, func() bool { return !alive(pid) }) {
			t.Errorf("old worker %d still running", pid)
		}
	}
}

// TestReloadListeners: a reload opens new addresses, closes dropped ones,
// and keeps an unchanged ":0" listener on its port.
func TestReloadListeners(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Config: "workers = 1\n"})
	os.WriteFile(filepath.Join(d.Root, "f"), []byte("x"), 0o644)
	cfg := func(listen string) {
		body := fmt.Sprintf("root = %q\ncontrol = %q\nworkers = 1\nlisten = [%s]\n", d.Root, d.Control, listen)
		os.WriteFile(d.Config, []byte(body), 0o644)
	}
	cfg(`"127.0.0.1:0", "127.0.0.2:0"`)
	if r := d.Zctl("reload"); r.Code != 0 {
		t.Fatalf("reload: %s", r.Stderr)
	}
	st := d.MustStatus()
	if len(st.Listeners) != 2 || st.Listeners[0].Addr != d.Addr || !strings.HasPrefix(st.Listeners[1].Addr, "127.0.0.2:") {
		t.Fatalf("listeners after adding one: %+v (first was %s)", st.Listeners, d.Addr)
	}
	second := st.Listeners[1].Addr
	if r := Zfetch(t, "-q", "-o", "-", "zfs://"+second+"/f"); r.Code != 0 || r.Stdout != "x" {
		t.Fatalf("fetch from the new listener: %d %s", r.Code, r.Stderr)
	}
	cfg(`"127.0.0.2:0"`)
	if r := d.Zctl("reload"); r.Code != 0 {
		t.Fatalf("reload: %s", r.Stderr)
	}
	st = d.MustStatus()
	if len(st.Listeners) != 1 || st.Listeners[0].Addr == d.Addr {
		t.Fatalf("listeners after dropping the first: %+v", st.Listeners)
	}
	if !refused(d.Addr) {
		t.Fatal("the dropped listener still accepts")
	}
	// A listener that cannot be bound fails the reload and changes nothing.
	cfg(`"127.0.0.2:0", "192.0.2.1:7070"`)
	if r := d.Zctl("reload"); r.Code != 1 || !strings.Contains(r.Stderr, "192.0.2.1:7070") {
		t.Fatalf("reload with an unbindable address: %d %q", r.Code, r.Stderr)
	}
	if st := d.MustStatus(); len(st.Listeners) != 1 || st.Listeners[0].Addr != second && st.Generation != 3 {
		t.Fatalf("after a failed reload: %+v", st.Listeners)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
