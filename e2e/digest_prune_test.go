package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDigestCachePruned: a worker that starts more than a day after the
// last prune of the on-disk digest cache removes the entries of files
// deleted or changed since they were hashed, and keeps the others (the
// file kept is loaded, not hashed again).
func TestDigestCachePruned(t *testing.T) {
	cacheDir := shortTempDir(t)
	entries := filepath.Join(cacheDir, "sha256")
	root := filepath.Join(shortTempDir(t), "root")
	sums := map[string]string{}
	for _, f := range []string{"keep.bin", "gone.bin", "changed.bin"} {
		sums[f] = WriteRandom(t, filepath.Join(root, f), 100<<10)
	}
	entryOf := func(f string) string {
		fi, err := os.Stat(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return fmt.Sprintf("%x-%x.sha256", st.Dev, st.Ino)
	}
	keep := entryOf("keep.bin")
	listEntries := func() []string {
		ents, _ := os.ReadDir(entries)
		var names []string
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".sha256") {
				names = append(names, e.Name())
			}
		}
		return names
	}
	opts := DaemonOpts{Root: root, Workers: 2, Env: []string{"CACHE_DIRECTORY=" + cacheDir}}
	d := StartDaemon(t, opts)
	for f, sum := range sums {
		httpGetSHA(t, d, "/"+f)
		waitDigest(t, d, "/"+f, reprDigest(t, sum))
	}
	if n := len(listEntries()); n != 3 {
		t.Fatalf("%d entries, want 3", n)
	}
	d.Zctl("drain")
	if code := d.WaitExit(30 * time.Second); code != 0 {
		t.Fatalf("drain: exit %d", code)
	}

	os.Remove(filepath.Join(root, "gone.bin"))
	WriteRandom(t, filepath.Join(root, "changed.bin"), 100<<10)
	dayAgo := time.Now().Add(-25 * time.Hour)
	if err := os.Chtimes(filepath.Join(entries, ".pruned"), dayAgo, dayAgo); err != nil && !os.IsNotExist(err) {
		t.Fatalf("the prune stamp: %v", err)
	}
	d2 := StartDaemon(t, opts)
	for start := time.Now(); !slices.Equal(listEntries(), []string{keep}); time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("entries %q, want only keep.bin's %s\n%s", listEntries(), keep, tail(d2.Log(), 20))
		}
	}
	if !d2.LogHas(5*time.Second, `msg="digest cache pruned"`, "removed=2") {
		log := d2.Log()
		t.Errorf("no log line of the prune:\n%s", tail(log, 20))
	}
	waitDigest(t, d2, "/keep.bin", reprDigest(t, sums["keep.bin"]))
	if st := d2.MustStatus(); st.Totals.DigestsHashed != 0 {
		t.Errorf("digests_hashed %d after the prune, want 0 (keep.bin's entry loaded)", st.Totals.DigestsHashed)
	}
}
