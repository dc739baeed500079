package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// This file holds what the chaos and fault tests (chaos_test.go,
// faults_*_test.go) share: their two sizes, the figures they report, the
// fixes they wait for, and process measurements. scripts/reliability runs
// them, collects their FIGURE lines and writes docs/RELIABILITY.md.

var longFlag = flag.Bool("long", false, "run the chaos and fault tests in their long forms (also ZFS_CHAOS_LONG=1)")

// longForm reports whether the chaos and fault tests run in their long
// forms (go test -run 'TestChaos|TestFault' ./e2e/ -args -long, or
// ZFS_CHAOS_LONG=1) rather than the short ones CI runs.
func longForm() bool { return *longFlag || os.Getenv("ZFS_CHAOS_LONG") == "1" }

// scale is ci in the short form and long in the long one.
func scale(ci, long int) int {
	if longForm() {
		return long
	}
	return ci
}

// logFigure logs a scenario's figures on one line in the fixed form that
// scripts/reliability collects:
//
//	FIGURE scenario=chaos form=short race=1 tried=200 failed=0 lost=0 corrupted=0 seconds=41.2 kills=97
//
// kv are key, value pairs (values without spaces; floats get one decimal).
// Every scenario reports tried, failed, lost and seconds; the rest are its
// own. The words mean (docs/RELIABILITY.md):
//   - failed: a client did not get its file (zfetch exited non-zero, a raw
//     client got an error it should not have);
//   - lost: the server dropped a request without an answer (a raw
//     client's connection closed before a response header), or a zfetch
//     exited 0 without its file;
//   - corrupted: wrong bytes under a final name (a zfetch that exited 0
//     with the wrong sha256, a failed run that left a file in place).
func logFigure(t testing.TB, scenario string, kv ...any) {
	t.Helper()
	form := "short"
	if longForm() {
		form = "long"
	}
	race := os.Getenv("ZFS_E2E_RACE")
	if race == "" {
		race = "0"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "FIGURE scenario=%s form=%s race=%s", scenario, form, race)
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		switch x := v.(type) {
		case float64:
			v = strconv.FormatFloat(x, 'f', 1, 64)
		case time.Duration:
			v = strconv.FormatFloat(x.Seconds(), 'f', 1, 64)
		}
		s := strings.ReplaceAll(fmt.Sprint(v), " ", "_")
		fmt.Fprintf(&b, " %v=%s", kv[i], s)
	}
	t.Log(b.String())
}

// Fixes of issue 13 ("Nothing lost, ever") made on other branches. A test
// that cannot pass without one of them says so with needsFix and skips
// until the lead merges the fix and deletes its entry here.
// ZFS_E2E_PENDING=1 runs those tests anyway (to check a merge). A fix's
// name has no ": " (scripts/reliability reads it up to there).
const (
	fixInPlace = "in-place modification during a send detected (the server ends the body short, zfetch re-checks identity)"
	fixWedged  = "wedged worker detected by heartbeat and replaced"
	fixFDBusy  = "fd pressure answered busy"
)

var pendingFixes = map[string]bool{}

func fixPending(fix string) bool { return pendingFixes[fix] && os.Getenv("ZFS_E2E_PENDING") != "1" }

// needsFix skips t while fix is pending: for a test that would cost its
// full time to find the fix missing.
func needsFix(t *testing.T, fix string) {
	t.Helper()
	if fixPending(fix) {
		t.Skip("needs " + fix)
	}
}

// failNeedsFix fails t with the message, or, while fix is pending, skips
// it with the message: for the one check of a test that needs fix, made
// after the others (a test that has failed already stays failed).
func failNeedsFix(t *testing.T, fix, format string, a ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, a...)
	if fixPending(fix) {
		t.Skipf("needs %s: %s", fix, msg)
	}
	t.Error(msg)
}

// rssKiB is a process's resident set size (VmRSS) in KiB.
func rssKiB(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS of %d: %q", pid, line)
			}
			return n
		}
	}
	t.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

// procUse is what a daemon's processes hold: the supervisor's fds and RSS,
// its workers' fds (all together) and the largest worker RSS.
type procUse struct {
	supFDs, workerFDs int
	supRSS, workerRSS int64 // KiB
}

func (u procUse) String() string {
	return fmt.Sprintf("supervisor %d fds %.1f MiB, workers %d fds in all, up to %.1f MiB",
		u.supFDs, float64(u.supRSS)/1024, u.workerFDs, float64(u.workerRSS)/1024)
}

// fds is "before->after" for a figure.
func (u procUse) fds(after procUse) (sup, worker string) {
	return fmt.Sprintf("%d->%d", u.supFDs, after.supFDs), fmt.Sprintf("%d->%d", u.workerFDs, after.workerFDs)
}

// rss is "before->after" in MiB for a figure.
func (u procUse) rss(after procUse) (sup, worker string) {
	return fmt.Sprintf("%.1f->%.1f", float64(u.supRSS)/1024, float64(after.supRSS)/1024),
		fmt.Sprintf("%.1f->%.1f", float64(u.workerRSS)/1024, float64(after.workerRSS)/1024)
}

// useOf measures the supervisor pid and the workers pids now.
func useOf(t testing.TB, pid int, pids []int) procUse {
	u := procUse{supFDs: openFDs(t, pid), supRSS: rssKiB(t, pid)}
	for _, p := range pids {
		u.workerFDs += openFDs(t, p)
		u.workerRSS = max(u.workerRSS, rssKiB(t, p))
	}
	return u
}

// idle waits until d serves with only its current generation's workers,
// all ready, nothing in flight, and returns that status.
func idle(t *testing.T, d *Daemon, workers int, timeout time.Duration) *ctlStatus {
	t.Helper()
	return d.WaitStatus(timeout, "an idle daemon", func(st *ctlStatus) bool {
		if st.State != "serving" || st.Totals.Active != 0 || len(st.Workers) != workers {
			return false
		}
		for _, w := range st.Workers {
			if w.State != "ready" || w.Generation != st.Generation {
				return false
			}
		}
		return true
	})
}

// baselineUse waits for d to be idle and measures its processes once
// their fd counts have settled: the baseline for settledUse.
func baselineUse(t *testing.T, d *Daemon, workers int) procUse {
	t.Helper()
	st := idle(t, d, workers, 30*time.Second)
	u := procUse{supFDs: stableFDs(t, st.PID), supRSS: rssKiB(t, st.PID)}
	for _, pid := range WorkerPIDs(st) {
		u.workerFDs += stableFDs(t, pid)
		u.workerRSS = max(u.workerRSS, rssKiB(t, pid))
	}
	return u
}

// fdSettle is the configuration of a test that compares descriptor
// counts with a baseline (settledUse, openFDs): a worker then closes the
// files it served a second after their last request, not after
// open_file_cache_inactive's 20 s.
const fdSettle = "open_file_cache_inactive = \"1s\"\n"

// settledUse waits for d to be idle, then for its fd counts to come back
// to the baseline's (connections close asynchronously, and a worker keeps
// a file it served open for up to open_file_cache), for up to 10 s, and
// measures its processes.
func settledUse(t *testing.T, d *Daemon, workers int, baseline procUse) procUse {
	t.Helper()
	st := idle(t, d, workers, 60*time.Second)
	pids := WorkerPIDs(st)
	var u procUse
	waitFor(10*time.Second, func() bool {
		u = useOf(t, st.PID, pids)
		return u.supFDs == baseline.supFDs && u.workerFDs == baseline.workerFDs
	})
	return u
}

// checkUse fails t unless after is back near before: the same fds, and
// RSS at most before*2 + slackMiB for each process.
func checkUse(t *testing.T, what string, before, after procUse, slackMiB int64) {
	t.Helper()
	if after.supFDs != before.supFDs || after.workerFDs != before.workerFDs {
		t.Errorf("%s: fds not back to the baseline: %v, baseline %v", what, after, before)
	}
	if after.supRSS > 2*before.supRSS+slackMiB<<10 || after.workerRSS > 2*before.workerRSS+slackMiB<<10 {
		t.Errorf("%s: RSS not back near the baseline (at most twice it plus %d MiB): %v, baseline %v", what, slackMiB, after, before)
	}
}

// sha256File hashes a file, for goroutines other than the test's.
func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// runBG runs a binary to completion like run, but returns its failures
// instead of failing a test, so that goroutines other than the test's may
// use it.
func runBG(timeout time.Duration, bin string, args ...string) (Result, error) {
	return runCtx(context.Background(), timeout, bin, args...)
}

// runCtx is runBG that also ends the process when ctx is done.
func runCtx(ctx context.Context, timeout time.Duration, bin string, args ...string) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	if ctx.Err() != nil {
		return r, fmt.Errorf("%s %s: %w (timeout %v)", filepath.Base(bin), strings.Join(args, " "), ctx.Err(), timeout)
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		return r, err
	}
	if strings.Contains(r.Stderr, "WARNING: DATA RACE") {
		return r, fmt.Errorf("%s: the race detector found a data race:\n%s", filepath.Base(bin), r.Stderr)
	}
	return r, nil
}
