package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDrainDeadlineMovedEarlier: during a drain (here from SIGUSR1, with
// the default 60 s drain_timeout) `zctl drain --timeout` may bring the
// deadline closer, never push it back (a later one is kept as it is); status keeps its lists lists.
func TestDrainDeadlineMovedEarlier(t *testing.T) {
	d, st := stalledTransfer(t, DaemonOpts{Workers: 1})
	if err := syscall.Kill(st.PID, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	st = d.WaitState("draining", 5*time.Second)
	if st.DrainDeadline == nil || time.Until(*st.DrainDeadline) < 30*time.Second {
		t.Fatalf("drain deadline %v, want the 60s default", st.DrainDeadline)
	}
	// Scripts iterate these: lists, never null. The listeners are still
	// open while draining (they answer "draining") and listed.
	r := d.Zctl("status", "--json")
	if r.Code != 0 || !strings.Contains(r.Stdout, `"addr": "`+d.Addr+`"`) || strings.Contains(r.Stdout, "\": null") {
		t.Errorf("status --json while draining: exit %d\n%s", r.Code, r.Stdout)
	}
	// A later deadline keeps the one in force (a stop script run twice).
	if r := d.Zctl("drain", "--timeout", "10m"); r.Code != 0 {
		t.Errorf("a later deadline: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if st := d.MustStatus(); st.DrainDeadline == nil || time.Until(*st.DrainDeadline) > time.Minute {
		t.Errorf("a later deadline replaced the drain's: %v", st.DrainDeadline)
	}
	if r := d.Zctl("drain", "--timeout", "1s"); r.Code != 0 {
		t.Fatalf("an earlier deadline: exit %d: %s", r.Code, r.Stderr)
	}
	if code := d.WaitExit(20 * time.Second); code != 3 {
		t.Fatalf("exit %d, want 3 (a transfer cut at the drain deadline)", code)
	}
	if !strings.Contains(d.Log(), "keeping the earlier deadline") || !strings.Contains(d.Log(), "drain deadline moved earlier") || !strings.Contains(d.Log(), "drain timeout (1s) expired") {
		t.Errorf("log:\n%s", tail(d.Log(), 20))
	}
}

// TestWorkersInheritOnlyTheirFDs: a descriptor the supervisor inherited
// without close-on-exec (a lock file of the script that started it) does
// not reach the workers.
func TestWorkersInheritOnlyTheirFDs(t *testing.T) {
	lock, err := os.Create(filepath.Join(t.TempDir(), "script.lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	d := StartDaemon(t, DaemonOpts{ExtraFiles: []*os.File{lock}})
	holds := func(pid int) bool {
		ents, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
		for _, e := range ents {
			if target, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + e.Name()); target == lock.Name() {
				return true
			}
		}
		return false
	}
	st := d.MustStatus()
	if !holds(st.PID) {
		t.Fatal("the supervisor does not hold the inherited file: the test proves nothing")
	}
	for _, pid := range WorkerPIDs(st) {
		if holds(pid) {
			t.Errorf("worker %d inherited %s", pid, lock.Name())
		}
	}
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
