package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestZfetchNativeMirrorsMTime: two zfs-serve mirrors of one file, before
// either has hashed it (no digest to decide). Native answers give the
// mtime in nanoseconds, and two files whose mtimes differ by a
// millisecond are not taken for one version: the mirror is left out with
// a warning and the file comes whole from the reference. The same file
// with the same mtime on both is not left out, nor is a copy that kept
// only whole seconds of the mtime (tar, scp -p).
func TestZfetchNativeMirrorsMTime(t *testing.T) {
	for _, tc := range []struct {
		name    string
		skew    time.Duration
		dropped bool
	}{
		{"same mtime", 0, false},
		{"a millisecond apart", time.Millisecond, true},
		// A copy by tar or scp -p keeps whole seconds: the same version.
		{"a copy in whole seconds", -500 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ra, rb := shortTempDir(t), shortTempDir(t)
			const size = 20 << 20 // over 2*8 MiB: each source gets a range
			sum := WriteRandom(t, filepath.Join(ra, "f.bin"), size)
			data, err := os.ReadFile(filepath.Join(ra, "f.bin"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(rb, "f.bin"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			mt := time.Date(2026, 1, 2, 3, 4, 5, 500_000_000, time.UTC)
			os.Chtimes(filepath.Join(ra, "f.bin"), mt, mt)
			os.Chtimes(filepath.Join(rb, "f.bin"), mt.Add(tc.skew), mt.Add(tc.skew))
			a := StartDaemon(t, DaemonOpts{Root: ra, Workers: 1})
			b := StartDaemon(t, DaemonOpts{Root: rb, Workers: 1})
			dst := filepath.Join(t.TempDir(), "f.bin")
			r := Zfetch(t, "--json", "-o", dst, a.URL("/f.bin"), "--mirror", b.URL("/f.bin"))
			if r.Code != 0 {
				t.Fatalf("exit %d: %s", r.Code, r.Stderr)
			}
			if got := FileSHA256(t, dst); got != sum {
				t.Fatalf("sha256 %s, want %s", got, sum)
			}
			src := eventsOf(jsonEvents(t, r.Stdout), "source")
			if tc.dropped != (len(src) == 1) {
				t.Fatalf("source events %v, want the mirror dropped: %v", src, tc.dropped)
			}
			if tc.dropped && !strings.Contains(r.Stdout, "its file differs: mtime") {
				t.Fatalf("the source event does not say why: %v", src)
			}
		})
	}
}
