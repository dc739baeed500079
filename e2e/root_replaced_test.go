package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRootReplaced: the configured root is a path, which a deploy may
// point at another directory (a symlink switched, ln -sfn releases/v2
// current). Every worker serves the new tree within a few seconds, and a
// worker that replaces a crashed one serves the same tree as the others.
// Before, each worker kept the directory it opened at its start: the
// switch was never seen, and after a worker crash the replacement served
// the new tree while the other served the old one, so answers depended
// on which worker took the connection.
func TestRootReplaced(t *testing.T) {
	dir := shortTempDir(t)
	os.Chmod(dir, 0o755)
	for _, v := range []string{"v1", "v2", "v3"} {
		os.MkdirAll(filepath.Join(dir, v), 0o755)
		if err := os.WriteFile(filepath.Join(dir, v, "v"), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	site := filepath.Join(dir, "site")
	point := func(target string) {
		t.Helper()
		os.Remove(site + ".new")
		if err := os.Symlink(target, site+".new"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(site+".new", site); err != nil { // atomic, as ln -sfn + mv -T
			t.Fatal(err)
		}
	}
	point("v1")
	d := StartDaemon(t, DaemonOpts{Root: site, Workers: 2})
	// answers is what 8 requests on new connections got, in order; the
	// supervisor spreads new connections over both workers.
	answers := func() string {
		var got []string
		for range 8 {
			_, body := httpGetNew(t, "http://"+d.Addr+"/v")
			got = append(got, body)
		}
		return strings.Join(got, " ")
	}
	all := func(v string) string { return strings.TrimSpace(strings.Repeat(v+" ", 8)) }
	// waitAll polls until every answer is v (a few seconds are allowed for
	// the workers to look the root up again).
	waitAll := func(v, when string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := answers()
			if got == all(v) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: answers %q, want all %s", when, got, v)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitAll("v1", "at the start")

	point("v2")
	waitAll("v2", "after the root's symlink was switched to v2")

	// A worker that replaces a crashed one agrees with the other.
	victim := WorkerPIDs(d.MustStatus())[0]
	syscall.Kill(victim, syscall.SIGKILL)
	d.WaitStatus(10*time.Second, "a replacement worker", func(st *ctlStatus) bool {
		pids := WorkerPIDs(st)
		return len(pids) == 2 && pids[0] != victim && pids[1] != victim
	})
	if got := answers(); got != all("v2") {
		t.Fatalf("after a worker was replaced: answers %q, want all v2", got)
	}

	// A folder renamed over the root's own name (no symlink) too.
	os.Remove(site)
	if err := os.Rename(filepath.Join(dir, "v3"), site); err != nil {
		t.Fatal(err)
	}
	waitAll("v3", "after a folder was renamed over the root's path")
	if !d.LogHas(5*time.Second, "the root's path names another directory now; serving it") {
		t.Errorf("the switch is not logged:\n%s", tail(d.Log(), 20))
	}
}
