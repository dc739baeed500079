package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// TestWorkerCrash: a killed worker is replaced (the time is logged), counted,
// new downloads succeed, and the supervisor stays idle.
func TestWorkerCrash(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	never := make(chan struct{})
	defer close(never)
	for range 4 {
		startSlowGet(t, d.Addr, "/big.bin", never)
	}
	st := d.WaitStatus(5*time.Second, "transfers", func(st *ctlStatus) bool { return len(st.Transfers) == 4 })
	victim := st.Transfers[0].WorkerPID
	held := 0
	for _, x := range st.Transfers {
		if x.WorkerPID == victim {
			held++
		}
	}
	killed := time.Now()
	syscall.Kill(victim, syscall.SIGKILL)
	// Bounded well below a respawn backoff's growth, but not by the speed
	// of this machine: the time is logged.
	st = d.WaitStatus(10*time.Second, "a replacement worker", func(st *ctlStatus) bool {
		pids := WorkerPIDs(st)
		return len(pids) == 2 && pids[0] != victim && pids[1] != victim && st.Totals.Restarts == 1
	})
	t.Logf("replacement ready after %v", time.Since(killed))
	var row ctl.Worker
	for _, w := range st.Workers {
		if w.Restarts == 1 {
			row = w
		}
	}
	if row.LastExit != "killed by signal SIGKILL" {
		t.Errorf("last_exit = %q", row.LastExit)
	}
	// The exit's log line says how many connections went down with it.
	crash := regexp.MustCompile(fmt.Sprintf(`"worker exited" .*pid=%d .*status="killed by signal SIGKILL".* connections_cut=%d`, victim, held))
	if !d.LogMatches(5*time.Second, crash) {
		t.Errorf("the crash is not in the log with its %d connection(s):\n%s", held, tail(d.Log(), 20))
	}
	for range 4 {
		r := Zfetch(t, "-q", "-o", "-", d.URL("/big.bin"))
		if r.Code != 0 || sha(r.Stdout) != sum {
			t.Fatalf("download after crash: %d %s", r.Code, r.Stderr)
		}
	}
	// Measured over a window (not a synchronisation): a supervisor spinning
	// on a dead worker's channel would burn a whole core here.
	before := cpuTicks(t, st.PID)
	time.Sleep(2 * time.Second)
	if used := cpuTicks(t, st.PID) - before; used > 10 {
		t.Fatalf("supervisor used %d clock ticks in 2s after a worker crash (want near idle)", used)
	}
}

// TestCrashLoopBacksOff: a worker that keeps dying is restarted with a
// growing delay that shows in status.
func TestCrashLoopBacksOff(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Workers: 1})
	var last int
	for i := 1; i <= 4; i++ {
		st := d.WaitStatus(15*time.Second, fmt.Sprintf("worker after %d restarts", i-1), func(st *ctlStatus) bool {
			p := WorkerPIDs(st)
			return len(p) == 1 && p[0] != last && st.Workers[0].State == "ready"
		})
		last = WorkerPIDs(st)[0]
		syscall.Kill(last, syscall.SIGKILL)
		d.WaitStatus(5*time.Second, "restarting slot", func(st *ctlStatus) bool {
			return st.Totals.Restarts == i
		})
	}
	if !d.LogHas(5*time.Second, "in=800ms") {
		t.Fatalf("no growing backoff in the log:\n%s", tail(d.Log(), 20))
	}
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
	d.LogHas(5*time.Second, "worker got SIGTERM")
	log := d.Log()
	if !strings.Contains(log, "worker got SIGTERM") || strings.Contains(log, "panic") {
		t.Fatalf("log:\n%s", tail(log, 20))
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
	if !d.LogHas(5*time.Second, "drain timeout: killing a retired worker", "connections_cut=1") {
		log := d.Log()
		t.Fatalf("log:\n%s", tail(log, 20))
	}
	d.WaitStatus(5*time.Second, "one ready worker", func(st *ctlStatus) bool {
		return len(st.Workers) == 1 && st.Workers[0].State == "ready" && st.Totals.Restarts == 0
	})
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
