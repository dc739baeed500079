package e2e

import (
	"os"
	"path/filepath"
	"testing"
)

// TestZfetchTreePartDirectory: a tree holding a file a and a directory
// a.part is fetched whole over both protocols (a goes through a.1.part),
// and fetched again with -c, it is complete.
func TestZfetchTreePartDirectory(t *testing.T) {
	root := t.TempDir()
	sums := map[string]string{
		"t/a":        WriteRandom(t, filepath.Join(root, "t", "a"), 200<<10),
		"t/a.part/b": WriteRandom(t, filepath.Join(root, "t", "a.part", "b"), 1000),
	}
	d := StartDaemon(t, DaemonOpts{Root: root})
	for _, u := range []string{d.URL("/t"), "http://" + d.Addr + "/t"} {
		out := t.TempDir()
		for _, args := range [][]string{{"-q", "-r", "-O", out, u}, {"-q", "-c", "-r", "-O", out, u}} {
			if r := Zfetch(t, args...); r.Code != 0 {
				t.Fatalf("zfetch %q: %d %s", args, r.Code, r.Stderr)
			}
			for name, sum := range sums {
				if got := FileSHA256(t, filepath.Join(out, name)); got != sum {
					t.Errorf("zfetch %q: %s has the wrong bytes", args, name)
				}
			}
			if _, err := os.Stat(filepath.Join(out, "t", "a.1.part")); !os.IsNotExist(err) {
				t.Errorf("zfetch %q: a.1.part left behind: %v", args, err)
			}
		}
	}
}
