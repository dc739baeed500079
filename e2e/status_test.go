package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
