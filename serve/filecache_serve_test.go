package serve

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/wire"
)

// TestFileCache: a hot file is opened once per validity window, changes in
// place are seen at once, a replaced file is served whole from the old one
// until the entry expires, and expired descriptors are closed.
func TestFileCache(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.FileCache = 300 * time.Millisecond })
	ts.write(t, "f", []byte("version one"))
	for range 3 {
		if _, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); string(body) != "version one" {
			t.Fatalf("got %q", body)
		}
	}
	if n := ts.srv.files.len(); n != 1 {
		t.Fatalf("%d cached files, want 1", n)
	}
	// In place: the cached descriptor sees the new bytes and the new size.
	f, _ := os.OpenFile(filepath.Join(ts.root, "f"), os.O_WRONLY|os.O_TRUNC, 0)
	f.WriteString("v2")
	f.Close()
	if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); string(body) != "v2" || r.Size != 2 {
		t.Fatalf("after an in-place change: %q, size %d", body, r.Size)
	}
	// Replaced by rename: the cached file has no links left, so the new
	// one is served at once.
	ts.write(t, "g", []byte("version three"))
	if err := os.Rename(filepath.Join(ts.root, "g"), filepath.Join(ts.root, "f")); err != nil {
		t.Fatal(err)
	}
	if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); string(body) != "version three" || r.Size != 13 {
		t.Fatalf("renamed over within the window: %q, size %d (want the new file)", body, r.Size)
	}
	// Replaced while another link keeps the old file: the old file, whole,
	// until the entry expires.
	if err := os.Link(filepath.Join(ts.root, "f"), filepath.Join(ts.root, "keep")); err != nil {
		t.Fatal(err)
	}
	ts.write(t, "g", []byte("version four"))
	if err := os.Rename(filepath.Join(ts.root, "g"), filepath.Join(ts.root, "f")); err != nil {
		t.Fatal(err)
	}
	if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); string(body) != "version three" || r.Size != 13 {
		t.Fatalf("replaced (old file still linked) within the window: %q, size %d (want the old file, whole)", body, r.Size)
	}
	// The sweep closes an entry not requested for 20 s; here at once
	// once expired, to see the new file without waiting that long.
	ts.srv.files.mu.Lock()
	ts.srv.files.inactive = ts.srv.files.valid
	ts.srv.files.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for ts.srv.files.len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("expired entry not swept")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); string(body) != "version four" {
		t.Fatalf("after expiry: %q", body)
	}
	// Deleted within the window: not found at once, and refusals are
	// never cached.
	os.Remove(filepath.Join(ts.root, "f"))
	if r, _ := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); r.Status != wire.StatusNotFound {
		t.Fatalf("deleted file: %v", r.Status)
	}
	if r, _ := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); r.Status != wire.StatusNotFound {
		t.Fatalf("deleted file, again: %v", r.Status)
	}
}

// TestFileCacheKeysAndBound: spellings of one path share one descriptor,
// and a full cache makes room rather than refuse new files (a client must
// not be able to pin descriptors, nor keep hot files out).
func TestFileCacheKeysAndBound(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.FileCache = time.Hour })
	ts.write(t, "f", []byte("x"))
	for _, p := range []string{"/f", "f", "//f", "/./f", "/.//f", "./f"} {
		if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: p}); r.Status != wire.StatusOK || string(body) != "x" {
			t.Fatalf("GET %q: %v %q", p, r.Status, body)
		}
	}
	if n := ts.srv.files.len(); n != 1 {
		t.Fatalf("%d cache entries for spellings of one path, want 1", n)
	}
	ts.srv.files.mu.Lock()
	ts.srv.files.max = 3
	ts.srv.files.mu.Unlock()
	for i := range 10 {
		name := fmt.Sprintf("g%d", i)
		ts.write(t, name, []byte(name))
		if _, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/" + name}); string(body) != name {
			t.Fatalf("GET %s: %q", name, body)
		}
		if n := ts.srv.files.len(); n > 3 {
			t.Fatalf("%d cache entries, the bound is 3", n)
		}
	}
	// The last file in was cached (room was made for it).
	ts.srv.files.mu.Lock()
	_, ok := ts.srv.files.m["/g9"]
	ts.srv.files.mu.Unlock()
	if !ok {
		t.Fatal("a full cache refused a new file")
	}
}
