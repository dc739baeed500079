package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// TestMissingThenCreated: a name asked for again and again while it is
// missing (the second 404 on is answered from the kernel's caches, from
// the raw walk alone) is served at once when it comes into being, over
// HTTP on the same kept-alive connection and over the native protocol;
// the 404s' text counts in no byte counter.
func TestMissingThenCreated(t *testing.T) {
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1})
	c := dial(t, d.Addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	get := func(p string) (int, string) {
		t.Helper()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", p)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, resp.Body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, hex.EncodeToString(h.Sum(nil))
	}
	// Each comes into being renamed into place, as a publisher does.
	create := func(name string, n int64) string {
		t.Helper()
		tmp := filepath.Join(root, ".tmp-"+name)
		sum := WriteRandom(t, tmp, n)
		if err := os.Rename(tmp, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
		return sum
	}
	for i := range 3 {
		if code, _ := get("/late.bin"); code != 404 {
			t.Fatalf("GET %d of the missing name: %d", i, code)
		}
	}
	sumH := create("late.bin", 5000)
	if code, sum := get("/late.bin"); code != 200 || sum != sumH {
		t.Fatalf("GET after it was made: %d, sha256 equal %v", code, sum == sumH)
	}

	out := filepath.Join(t.TempDir(), "late2.bin")
	for i := range 2 {
		if r := Zfetch(t, "-q", "-o", out, d.URL("/late2.bin")); r.Code == 0 || !strings.Contains(r.Stderr, "not found") {
			t.Fatalf("zfetch %d of the missing name: exit %d %s", i, r.Code, r.Stderr)
		}
	}
	sumN := create("late2.bin", 7000)
	if r := Zfetch(t, "-q", "-o", out, d.URL("/late2.bin")); r.Code != 0 || FileSHA256(t, out) != sumN {
		t.Fatalf("zfetch after it was made: exit %d %s", r.Code, r.Stderr)
	}
	d.WaitStatus(10*time.Second, "the bytes of the two files, no more", func(st *ctl.Status) bool {
		return st.Totals.BytesSent == 5000+7000 && st.Totals.HTTPBytesSent == 5000
	})
}
