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

// TestReload: a changed root serves new connections while an old
// generation's download completes; an invalid config changes nothing.
func TestReload(t *testing.T) {
	rootA, rootB := shortTempDir(t), shortTempDir(t)
	sumA := WriteRandom(t, filepath.Join(rootA, "big.bin"), 32<<20)
	onlyB := WriteRandom(t, filepath.Join(rootB, "only-in-b.bin"), 4096)
	d := StartDaemon(t, DaemonOpts{Root: rootA, Config: "workers = 2\n"})
	st := d.MustStatus()
	oldPIDs := WorkerPIDs(st)
	gate := make(chan struct{})
	g := startSlowGet(t, d.Addr, "/big.bin", gate)

	writeConfig := func(body string) {
		cfg := fmt.Sprintf("root = %q\nlisten = [\"127.0.0.1:0\"]\ncontrol = %q\nworkers = 2\n%s", rootB, d.Control, body)
		if err := os.WriteFile(d.Config, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// An invalid config: zctl fails with the reason, nothing changes.
	writeConfig("workerz = 3\n")
	r := d.Zctl("reload")
	if r.Code == 0 || !strings.Contains(r.Stderr, "unknown key \"workerz\"") || !strings.Contains(r.Stderr, d.Config+":5") {
		t.Fatalf("invalid reload: exit %d, stderr %q", r.Code, r.Stderr)
	}
	st = d.MustStatus()
	if st.Generation != 1 || st.State != ctl.StateServing || !strings.HasPrefix(st.LastReload, "failed") {
		t.Fatalf("after an invalid reload: generation %d, state %s, last_reload %q", st.Generation, st.State, st.LastReload)
	}
	if r := Zfetch(t, "-q", "-o", "-", d.URL("/only-in-b.bin")); r.Code == 0 {
		t.Fatal("the invalid config took effect")
	}

	// A valid one: new generation, new root, same listener.
	writeConfig("")
	if r := d.Zctl("reload"); r.Code != 0 || !strings.Contains(r.Stdout, "generation 2 serving") {
		t.Fatalf("reload: exit %d: %s %s", r.Code, r.Stdout, r.Stderr)
	}
	st = d.MustStatus()
	if st.Generation != 2 || st.Root != rootB || st.Listeners[0].Addr != d.Addr {
		t.Fatalf("after reload: generation %d, root %s, listener %s (was %s)", st.Generation, st.Root, st.Listeners[0].Addr, d.Addr)
	}
	res := Zfetch(t, "-q", "-o", "-", d.URL("/only-in-b.bin"))
	if res.Code != 0 || sha(res.Stdout) != onlyB {
		t.Fatalf("new root not served: %d %s", res.Code, res.Stderr)
	}
	// The old generation is draining its one transfer.
	var draining int
	for _, w := range st.Workers {
		if w.Generation == 1 {
			draining++
			if w.State != "draining" {
				t.Errorf("old worker %d in state %s", w.PID, w.State)
			}
		}
	}
	if draining == 0 {
		t.Fatal("the old generation exited with a transfer in flight")
	}
	close(gate)
	g.wait(t, sumA)
	d.WaitStatus(10*time.Second, "old generation gone", func(st *ctlStatus) bool {
		for _, w := range st.Workers {
			if w.Generation == 1 {
				return false
			}
		}
		return true
	})
	for _, pid := range oldPIDs {
		if !waitFor(5*time.Second, func() bool { return !alive(pid) }) {
			t.Errorf("old worker %d still running", pid)
		}
	}

	// SIGHUP reloads too, and reload --wait returns after the old generation drained.
	d.Cmd.Process.Signal(syscall.SIGHUP)
	d.WaitStatus(10*time.Second, "generation 3", func(st *ctlStatus) bool { return st.Generation == 3 && st.State == ctl.StateServing })
	if r := d.Zctl("reload", "--wait"); r.Code != 0 || !strings.Contains(r.Stdout, "generation 4") || !strings.Contains(r.Stdout, "drained") {
		t.Fatalf("reload --wait: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	st = d.MustStatus()
	for _, w := range st.Workers {
		if w.Generation != 4 {
			t.Fatalf("reload --wait returned with generation %d still there: %+v", w.Generation, w)
		}
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

// TestReloadWaitReportsCutGeneration: reload --wait says so when the
// previous generation was killed at drain_timeout rather than drained.
func TestReloadWaitReportsCutGeneration(t *testing.T) {
	d, _ := stalledTransfer(t, DaemonOpts{Workers: 1, Config: "workers = 1\ndrain_timeout = \"1s\"\n"})
	r := d.Zctl("reload", "--wait")
	if r.Code != 0 || !strings.Contains(r.Stdout, "previous generation killed at drain_timeout (1s) with 1 connection in flight") {
		t.Fatalf("zctl reload --wait: %d\n%s%s", r.Code, r.Stdout, r.Stderr)
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

// TestReloadKeepsLogFormat: log_format cannot change on reload (the
// supervisor's handler is fixed): the new workers keep the format in use,
// so the log never mixes text and JSON, and the reload says so.
func TestReloadKeepsLogFormat(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Config: "log_level = \"debug\"\nlog_format = \"text\"\n"})
	cfg, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(d.Config, []byte(strings.Replace(string(cfg), `log_format = "text"`, `log_format = "json"`, 1)), 0o644)
	if r := d.Zctl("reload", "--wait"); r.Code != 0 {
		t.Fatalf("reload: exit %d: %s", r.Code, r.Stderr)
	}
	d.LogHas(5*time.Second, "log_format changes only at restart", `msg="worker ready"`, "gen=2")
	log := d.Log()
	if !strings.Contains(log, "log_format changes only at restart") {
		t.Errorf("no warning:\n%s", tail(log, 20))
	}
	if !strings.Contains(log, `msg="worker ready"`) || !strings.Contains(log, "gen=2") {
		t.Errorf("no text lines from generation 2:\n%s", tail(log, 20))
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.HasPrefix(line, "{") {
			t.Fatalf("a JSON line in a text log: %s", line)
		}
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
