package e2e

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestZfetchFileChangedBeforeItsFetch: a file changed in place just
// before zfetch asks for it, while a worker's open-file cache still
// announces its last-seen size and mtime (open_file_cache_valid,
// docs/ARCHITECTURE.md), gets a GET header that its STAT contradicts.
// zfetch starts over, and must give the window time to pass: it used to
// start over three times within milliseconds and fail with status 5 ("the
// file changed on the server 4 times during the download") for a file
// changed once, before the download began.
func TestZfetchFileChangedBeforeItsFetch(t *testing.T) {
	root := shortTempDir(t)
	p := filepath.Join(root, "f.bin")
	old := make([]byte, 100<<10) // at most one send_chunk: its stat may be reused
	rand.Read(old)
	if err := os.WriteFile(p, old, 0o644); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Minute)
	os.Chtimes(p, past, past)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1}) // open_file_cache_valid: 1 s, the default
	if r := Zfetch(t, "-q", "-o", "-", d.URL("/f.bin")); r.Code != 0 || sha(r.Stdout) != FileSHA256Bytes(old) {
		t.Fatalf("first fetch: %d %s", r.Code, r.Stderr)
	}
	// Changed in place at once (same size, new bytes and mtime).
	cur := make([]byte, len(old))
	rand.Read(cur)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(cur, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out := filepath.Join(shortTempDir(t), "f.bin")
	r := Zfetch(t, "-q", "-o", out, d.URL("/f.bin"))
	if r.Code != 0 {
		t.Fatalf("fetch of a file changed once, before it began: exit %d: %s", r.Code, r.Stderr)
	}
	if got, _ := os.ReadFile(out); FileSHA256Bytes(got) != FileSHA256Bytes(cur) {
		t.Fatal("the fetched file is not the file's current version")
	}
}
