package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// Linux scheduling policies (sched(7)), as /proc/PID/task/TID/stat shows
// them (field 41).
const (
	schedOther = 0
	schedBatch = 3
	schedIdle  = 5
)

// threadPolicies are the policies of the threads of pid, each with its
// count of threads.
func threadPolicies(t *testing.T, pid int) map[int]int {
	t.Helper()
	m := threadStat(t, pid, 41)
	if len(m) == 0 {
		t.Fatalf("no threads of %d", pid)
	}
	return m
}

// threadStat counts the threads of pid by the value of field (numbered
// from 1, as proc(5) does) of their /proc/PID/task/TID/stat.
func threadStat(t *testing.T, pid, field int) map[int]int {
	t.Helper()
	dirs, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*")
	m := map[int]int{}
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue // exited
		}
		// Fields 3 onwards follow "pid (comm) ".
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		v, err := strconv.Atoi(f[field-3])
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		m[v]++
	}
	return m
}

// onlyPolicy says whether every thread of pid has policy, and what they
// have otherwise.
func onlyPolicy(t *testing.T, pid, policy int) (bool, string) {
	m := threadPolicies(t, pid)
	return len(m) == 1 && m[policy] > 0, fmt.Sprint(m)
}

// checkPolicies checks the supervisor's threads against sup and every
// worker's against work.
func checkPolicies(t *testing.T, d *Daemon, st *ctl.Status, sup, work int, when string) {
	t.Helper()
	if ok, got := onlyPolicy(t, d.Cmd.Process.Pid, sup); !ok {
		t.Errorf("%s: supervisor threads by policy %s, want all %d", when, got, sup)
	}
	for _, pid := range WorkerPIDs(st) {
		if ok, got := onlyPolicy(t, pid, work); !ok {
			t.Errorf("%s: worker %d threads by policy %s, want all %d", when, pid, got, work)
		}
	}
}

// TestSupervisorSchedBatch: the supervisor runs SCHED_BATCH
// (supervisor_sched_batch, the default) and its workers SCHED_OTHER,
// including those it starts once it is SCHED_BATCH (a reload's, a
// replaced one's); false, reloaded, puts the supervisor back.
func TestSupervisorSchedBatch(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Config: "supervisor_sched_batch = true\n"})
	var st *ctl.Status
	// Generation 1 is promoted (and the policy set) once its workers are ready.
	if !waitFor(10*time.Second, func() bool { ok, _ := onlyPolicy(t, d.Cmd.Process.Pid, schedBatch); return ok }) {
		_, got := onlyPolicy(t, d.Cmd.Process.Pid, schedBatch)
		t.Fatalf("supervisor threads by policy %s, want all SCHED_BATCH", got)
	}
	st = d.MustStatus()
	checkPolicies(t, d, st, schedBatch, schedOther, "generation 1")

	// A reload starts new workers from the SCHED_BATCH supervisor.
	if r := d.Zctl("reload", "--wait"); r.Code != 0 {
		t.Fatalf("reload: %s %s", r.Stdout, r.Stderr)
	}
	st = d.WaitStatus(10*time.Second, "generation 2 alone", func(s *ctl.Status) bool { return s.Generation == 2 && len(WorkerPIDs(s)) == 2 })
	checkPolicies(t, d, st, schedBatch, schedOther, "generation 2")

	// A worker killed is replaced, from the same supervisor.
	old := WorkerPIDs(st)[0]
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st = d.WaitStatus(10*time.Second, "the killed worker replaced", func(s *ctl.Status) bool {
		ps := WorkerPIDs(s)
		return len(ps) == 2 && ps[0] != old && ps[1] != old
	})
	checkPolicies(t, d, st, schedBatch, schedOther, "replaced worker")

	// false, reloaded: the supervisor goes back to SCHED_OTHER.
	conf, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	conf = []byte(strings.Replace(string(conf), "supervisor_sched_batch = true", "supervisor_sched_batch = false", 1))
	if err := os.WriteFile(d.Config, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := d.Zctl("reload", "--wait"); r.Code != 0 {
		t.Fatalf("reload: %s %s", r.Stdout, r.Stderr)
	}
	st = d.WaitStatus(10*time.Second, "generation 3 alone", func(s *ctl.Status) bool { return s.Generation == 3 && len(WorkerPIDs(s)) == 2 })
	checkPolicies(t, d, st, schedOther, schedOther, "supervisor_sched_batch = false")
}

// TestSupervisorSchedChosenOutside: a policy zfs-serve was started with
// (chrt, systemd's CPUSchedulingPolicy=) stands, for the supervisor and
// its workers alike.
func TestSupervisorSchedChosenOutside(t *testing.T) {
	t.Parallel()
	chrt, err := exec.LookPath("chrt")
	if err != nil {
		t.Skip("no chrt (util-linux)")
	}
	d := StartDaemon(t, DaemonOpts{Prefix: []string{chrt, "--idle", "0"}})
	st := d.MustStatus()
	checkPolicies(t, d, st, schedIdle, schedIdle, "started under chrt --idle")
	if r := d.Zctl("reload", "--wait"); r.Code != 0 {
		t.Fatalf("reload: %s %s", r.Stdout, r.Stderr)
	}
	st = d.WaitStatus(10*time.Second, "generation 2 alone", func(s *ctl.Status) bool { return s.Generation == 2 && len(WorkerPIDs(s)) == 2 })
	checkPolicies(t, d, st, schedIdle, schedIdle, "after a reload")
}

// threadNices are the nice values of the threads of pid, each with its
// count of threads.
func threadNices(t *testing.T, pid int) map[int]int { return threadStat(t, pid, 19) }

// TestSupervisorSchedNice: started under nice -n 10, the supervisor's
// threads go SCHED_BATCH at that nice value and its workers run
// SCHED_OTHER at it, those of a reload included: the policy changes, the nice value
// the operator chose stands.
func TestSupervisorSchedNice(t *testing.T) {
	t.Parallel()
	nice, err := exec.LookPath("nice")
	if err != nil {
		t.Skip("no nice (coreutils)")
	}
	base := -100
	for n := range threadNices(t, os.Getpid()) {
		base = max(base, n)
	}
	want := min(base+10, 19) // nice adds to the test's own
	d := StartDaemon(t, DaemonOpts{Prefix: []string{nice, "-n", "10"}})
	check := func(st *ctl.Status, when string) {
		t.Helper()
		checkPolicies(t, d, st, schedBatch, schedOther, when)
		for _, pid := range append([]int{d.Cmd.Process.Pid}, WorkerPIDs(st)...) {
			if n := threadNices(t, pid); len(n) != 1 || n[want] == 0 {
				t.Errorf("%s: process %d threads by nice value %v, want all %d", when, pid, n, want)
			}
		}
	}
	if !waitFor(10*time.Second, func() bool { ok, _ := onlyPolicy(t, d.Cmd.Process.Pid, schedBatch); return ok }) {
		_, got := onlyPolicy(t, d.Cmd.Process.Pid, schedBatch)
		t.Fatalf("supervisor threads by policy %s, want all SCHED_BATCH", got)
	}
	check(d.MustStatus(), "generation 1")
	if r := d.Zctl("reload", "--wait"); r.Code != 0 {
		t.Fatalf("reload: %s %s", r.Stdout, r.Stderr)
	}
	check(d.WaitStatus(10*time.Second, "generation 2 alone", func(s *ctl.Status) bool { return s.Generation == 2 && len(WorkerPIDs(s)) == 2 }), "generation 2")
}
