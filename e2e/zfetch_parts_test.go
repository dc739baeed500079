package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestZfetchOneWriterPerPart: a second zfetch on a destination that one is
// downloading stops at once (exit 6) instead of truncating or overwriting
// the .part under it; the first finishes byte-exact.
func TestZfetchOneWriterPerPart(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 8<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	dst := filepath.Join(t.TempDir(), "big.bin")
	first := startZfetch(t, "-q", "--limit-rate", "4M", "-o", dst, d.URL("/big.bin"))
	waitProgress(t, first, dst, 1<<20)
	for _, args := range [][]string{{"-o", dst}, {"-c", "-o", dst}} {
		r := Zfetch(t, append([]string{"-q"}, append(args, d.URL("/big.bin"))...)...)
		if r.Code != 6 || !strings.Contains(r.Stderr, "another zfetch is writing it") {
			t.Errorf("second zfetch %v: exit %d, stderr %q", args, r.Code, r.Stderr)
		}
	}
	if r := first.wait(t, 60*time.Second); r.Code != 0 {
		t.Fatalf("first zfetch: exit %d: %s", r.Code, r.Stderr)
	}
	if got := FileSHA256(t, dst); got != sum {
		t.Fatalf("first download: sha256 %s, want %s", got, sum)
	}
}

// TestZfetchTreeWithPartNames: a tree that holds "x" and files named like
// its temporary files ("x.part", "x.part.state") comes out byte-exact:
// those are fetched after "x" is in place, not over its .part. A second
// run with -c then finds everything complete.
func TestZfetchTreeWithPartNames(t *testing.T) {
	root := shortTempDir(t)
	files := map[string]int64{
		"tree/x":            8 << 20, // the slowest: its .part lives longest
		"tree/x.part":       1 << 20,
		"tree/x.part.part":  64 << 10,
		"tree/x.part.state": 100,
		"tree/y":            4096,
	}
	sums := map[string]string{}
	for name, n := range files {
		sums[name] = WriteRandom(t, filepath.Join(root, name), n)
	}
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	out := t.TempDir()
	r := Zfetch(t, "-q", "-r", "--limit-rate", "16M", "-O", out, d.URL("/tree"))
	if r.Code != 0 {
		t.Fatalf("zfetch -r: exit %d: %s", r.Code, r.Stderr)
	}
	for name, sum := range sums {
		if got := FileSHA256(t, filepath.Join(out, name)); got != sum {
			t.Errorf("%s: sha256 %s, want %s", name, got, sum)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(out, "tree"))
	if len(ents) != len(files) {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("tree holds %q, want the %d files", names, len(files))
	}
	resumeFindsTreeComplete(t, d, out, "/tree")
}

// TestZfetchTreePartNameAfterFailure: when "x" fails, its partial
// download stays for -c, so the file named "x.part" is not fetched over
// it; the run says why and fails.
func TestZfetchTreePartNameAfterFailure(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "tree", "x"), 64<<10)
	WriteRandom(t, filepath.Join(root, "tree", "x.part"), 4096)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	out := t.TempDir()
	// x cannot be written: a directory is in its place.
	if err := os.MkdirAll(filepath.Join(out, "tree", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := Zfetch(t, "-r", "-O", out, d.URL("/tree"))
	if r.Code == 0 || !strings.Contains(r.Stderr, "is a directory") ||
		!strings.Contains(r.Stderr, "not fetched: it would replace the partial download of "+filepath.Join(out, "tree", "x")) {
		t.Fatalf("exit %d, stderr:\n%s", r.Code, r.Stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "tree", "x.part")); err == nil {
		t.Fatal("x.part was fetched over x's partial download")
	}
}
