package serve

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// TestFileCacheDirs: a name found to be a folder is refused as one from
// memory for the period: a folder replaced by a file meanwhile is still
// a folder to it (the documented staleness), and the file is served
// once the period is over.
func TestFileCacheDirs(t *testing.T) {
	fc, root, clock := testCacheFor(t, time.Second, time.Minute, 0)
	dir := filepath.Join(root.r.Name(), "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	isDir := func(when string) {
		t.Helper()
		_, _, _, err := fc.openOrDir(root, "d", nil)
		var re *reqError
		if !errors.As(err, &re) || re.kind != wire.KindDir || re.status != wire.StatusNotRegular {
			t.Fatalf("%s: open d: %v, want a folder's refusal", when, err)
		}
	}
	isDir("a folder")
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("now a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	isDir("a file within the period")
	clock.advance(time.Second)
	if size, _ := cacheOpen(t, fc, root, "d"); size != int64(len("now a file")) {
		t.Fatalf("after the period: %d bytes, want the file's", size)
	}
}

// TestFileCacheDirsSwept: the sweep forgets the folders whose period is
// over, as it closes the files not requested: they are not kept, up to
// the cache's bound, until a new name pushes them out.
func TestFileCacheDirsSwept(t *testing.T) {
	fc, root, clock := testCacheFor(t, time.Second, time.Second, 0)
	for _, d := range []string{"a", "b", "c"} {
		if err := os.Mkdir(filepath.Join(root.r.Name(), d), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := fc.openOrDir(root, d, nil); err == nil {
			t.Fatalf("open %s, a folder: no error", d)
		}
	}
	if n := dirsLen(fc); n != 3 {
		t.Fatalf("%d folders remembered, want 3", n)
	}
	fc.sweepOnce(clock.now())
	if n := dirsLen(fc); n != 3 {
		t.Fatalf("swept within the period: %d folders left, want 3", n)
	}
	clock.advance(time.Second)
	fc.sweepOnce(clock.now())
	if n := dirsLen(fc); n != 0 {
		t.Errorf("swept after the period: %d folders left, want 0", n)
	}
}

func dirsLen(fc *fileCache) int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return len(fc.dirs)
}

// TestFileCacheDirsOnlyRedirects: only an HTTP link without its slash is
// answered from the folders remembered (openOrDir): an index file looked
// up under a folder, and a native GET, look the name up, so a folder
// replaced by a file is served at once there. With the memory, "/e/"
// listed its folder (or, without listings, refused it) instead of
// serving the index.html that replaced a folder of that name, and a
// native GET called a file a folder that its STAT called a file.
func TestFileCacheDirsOnlyRedirects(t *testing.T) {
	ts := newHTTPServer(t, func(o *Options) { o.FileCache = time.Hour; o.FileCacheInactive = time.Hour })
	for _, d := range []string{"e/index.html", "n", "r"} {
		if err := os.MkdirAll(filepath.Join(ts.root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	get := func(target string) (*http.Response, []byte) {
		t.Helper()
		return ts.httpDo(t, "GET", "GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	if resp, _ := get("/e/"); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /e/ with a folder index.html: %d, want its listing", resp.StatusCode)
	}
	if resp, _ := get("/r"); resp.StatusCode != 301 {
		t.Fatalf("GET /r: %d, want 301", resp.StatusCode)
	}
	// The two folders replaced by files.
	for _, d := range []string{"e/index.html", "r"} {
		if err := os.Remove(filepath.Join(ts.root, d)); err != nil {
			t.Fatal(err)
		}
		ts.write(t, d, []byte("now a file: "+d))
	}
	if resp, body := get("/e/"); resp.StatusCode != 200 || string(body) != "now a file: e/index.html" {
		t.Errorf("GET /e/ after its index.html became a file: %d %.60q, want the index file", resp.StatusCode, body)
	}
	// The redirect itself may be stale for the period (documented).
	if resp, _ := get("/r"); resp.StatusCode != 301 {
		t.Errorf("GET /r within the period: %d, want the remembered 301", resp.StatusCode)
	}

	ts.connect(t) // native
	r, _ := ts.do(t, wire.Request{Op: wire.OpGet, Path: "n"})
	if r.Status != wire.StatusNotRegular {
		t.Fatalf("native GET n, a folder: %v %q", r.Status, r.Message)
	}
	if err := os.Remove(filepath.Join(ts.root, "n")); err != nil {
		t.Fatal(err)
	}
	ts.write(t, "n", []byte("native file"))
	if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "n"}); r.Status != wire.StatusOK || string(body) != "native file" {
		t.Errorf("native GET n after it became a file: %v %q %q, want the file", r.Status, r.Message, body)
	}
}
