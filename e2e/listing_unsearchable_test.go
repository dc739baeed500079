package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListingUnsearchableFolder: a folder the workers may read but not
// search (r without x) has names, but no entry's lstat succeeds. Its
// listing is refused (forbidden, 403), not sent empty: an empty listing
// let zfetch -r report the tree complete (exit 0) with none of its files.
func TestListingUnsearchableFolder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: the test runs its workers as nobody, whom the folder's mode locks out")
	}
	root := shortTempDir(t)
	os.Chmod(root, 0o755)
	os.Chmod(binDir, 0o755)
	locked := filepath.Join(root, "locked")
	if err := os.Mkdir(locked, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(locked, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(locked, 0o644) // readable, not searchable
	d := StartDaemon(t, DaemonOpts{Root: root, Config: "user = \"nobody\"\ngroup = \"nogroup\"\n"})

	out := shortTempDir(t)
	if r := Zfetch(t, "-q", "-r", "-O", out, d.URL("/locked/")); r.Code == 0 {
		t.Errorf("zfetch -r of a folder the server cannot search: exit 0, want a failure (stderr %q)", r.Stderr)
	}
	for _, path := range []string{"/locked/", "/locked/?format=json"} {
		if code, body := httpGet(t, "http://"+d.Addr+path); code != 403 || !strings.Contains(body, "permission denied") {
			t.Errorf("GET %s: %d %q, want 403 saying permission denied", path, code, body)
		}
	}
	// The root's own listing still lists the folder.
	if code, body := httpGet(t, "http://"+d.Addr+"/?format=json"); code != 200 || !strings.Contains(body, `"locked"`) {
		t.Errorf("GET /?format=json: %d %q", code, body)
	}
}
