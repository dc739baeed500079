package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestZfetchHTTPIndexFiles: what docs/ZFETCH.md says of -r over a tree
// with index.html files: nginx's index module answers ?format=json with
// the index file before autoindex would list the folder, so the run ends
// with status 3 before any file; zfs-serve (listing = true) lists such a
// folder all the same, and the same tree is fetched whole.
func TestZfetchHTTPIndexFiles(t *testing.T) {
	n := StartNginx(t, NginxOpts{})
	want := map[string]string{}
	for _, p := range []string{"tree/a.bin", "tree/sub/b.bin", "tree/sub/index.html"} {
		full := filepath.Join(n.Root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		want[p] = WriteRandom(t, full, 1000+int64(len(p)))
	}
	out := t.TempDir()
	r := Zfetch(t, "-r", "-O", out, n.URL("http", "/tree/"))
	if r.Code != 3 || !strings.Contains(r.Stderr, `/tree/sub/?format=json: the server's listing is not one zfetch can read (not a JSON array, Content-Type "text/html")`) {
		t.Errorf("-r from nginx: exit %d: %s", r.Code, r.Stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "tree/a.bin")); err == nil {
		t.Errorf("-r from nginx: a file was fetched before the run failed")
	}

	d := StartDaemon(t, DaemonOpts{Root: n.Root, Workers: 1})
	out = t.TempDir()
	if r := Zfetch(t, "-q", "-r", "-O", out, d.httpURL("/tree/")); r.Code != 0 {
		t.Fatalf("-r from zfs-serve: exit %d: %s", r.Code, r.Stderr)
	}
	for p, s := range want {
		if got := FileSHA256(t, filepath.Join(out, p)); got != s {
			t.Errorf("-r from zfs-serve: %s: sha256 %s, want %s", p, got, s)
		}
	}
}
