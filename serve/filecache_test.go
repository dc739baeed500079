package serve

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/wire"
)

// fakeClock is the file cache's clock in tests: it moves only when told.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// testCache returns a file cache over a new root, on a fake clock:
// descriptors live a minute, small files are those up to 1 KiB.
func testCache(t *testing.T, statValid time.Duration) (*fileCache, *rootDir, *fakeClock) {
	t.Helper()
	return testCacheFor(t, time.Minute, 0, statValid)
}

// testCacheFor is testCache with the period (open_file_cache) and the
// inactivity bound (open_file_cache_inactive) given.
func testCacheFor(t *testing.T, valid, inactive, statValid time.Duration) (*fileCache, *rootDir, *fakeClock) {
	t.Helper()
	dir := t.TempDir()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	root := &rootDir{fd: fd, r: r}
	root.probeLocal()
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	fc := newFileCache(valid, inactive, statValid, 1<<10, 0)
	fc.now = clock.now
	t.Cleanup(func() {
		fc.close()
		root.close()
	})
	return fc, root, clock
}

// cacheOpen opens p through fc and releases it at once, returning the
// size the request would have announced.
func cacheOpen(t *testing.T, fc *fileCache, root *rootDir, p string) (int64, *cachedFile) {
	t.Helper()
	fd, st, e, err := fc.open(root, p, nil)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	fc.release(fd, e)
	return st.Size, e
}

func appendTo(t *testing.T, p string, n int) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
}

// TestFileCacheValid: a hit reuses the last fstat for up to
// open_file_cache_valid, for small files only; 0 fstats every hit; a
// rename over the file is seen once the window is over; a descriptor
// past open_file_cache is reopened whatever the window.
func TestFileCacheValid(t *testing.T) {
	const window = 10 * time.Second
	grow := func(t *testing.T, root string) { appendTo(t, filepath.Join(root, "f"), 10) }
	renameOver := func(t *testing.T, root string) {
		st, _ := os.Stat(filepath.Join(root, "f"))
		if err := os.WriteFile(filepath.Join(root, "g"), make([]byte, st.Size()+10), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(root, "g"), filepath.Join(root, "f")); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name      string
		statValid time.Duration
		size      int
		change    func(*testing.T, string)
		after     time.Duration // on the clock, between the change and the second request
		wantNew   bool          // the second request sees the change
	}{
		{"in place, within the window", window, 100, grow, window - time.Millisecond, false},
		{"in place, window over", window, 100, grow, window, true},
		{"in place, valid 0", 0, 100, grow, 0, true},
		{"in place, larger than one chunk", window, 2 << 10, grow, 0, true},
		{"renamed over, within the window", window, 100, renameOver, window / 2, false},
		{"renamed over, window over", window, 100, renameOver, window, true},
		{"renamed over, valid 0", 0, 100, renameOver, 0, true},
		{"renamed over, larger than one chunk", window, 2 << 10, renameOver, 0, true},
		{"descriptor expired, window longer", time.Hour, 100, renameOver, time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc, root, clock := testCache(t, tt.statValid)
			dir := root.r.Name()
			if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, tt.size), 0o644); err != nil {
				t.Fatal(err)
			}
			if size, e := cacheOpen(t, fc, root, "/f"); size != int64(tt.size) || e == nil {
				t.Fatalf("first open: size %d, cached %v", size, e != nil)
			}
			tt.change(t, dir)
			clock.advance(tt.after)
			size, _ := cacheOpen(t, fc, root, "/f")
			if got := size != int64(tt.size); got != tt.wantNew {
				t.Fatalf("second open announced %d bytes (first %d): saw the change = %v, want %v", size, tt.size, got, tt.wantNew)
			}
			// Once seen, a change stays seen.
			if tt.wantNew {
				if again, _ := cacheOpen(t, fc, root, "/f"); again != size {
					t.Fatalf("third open: %d bytes, want %d", again, size)
				}
			}
		})
	}
}

// TestFileCacheStaleAfter: a response that found the file shorter than, or
// changed from, what it announced makes the next hit fstat again, within
// the window; other outcomes do not.
func TestFileCacheStaleAfter(t *testing.T) {
	tests := []struct {
		err     error
		wantNew bool
	}{
		{nil, false},
		{unix.EPIPE, false},
		{&shrankError{path: "/f"}, true},
		{&changedError{path: "/f"}, true},
		{errors.Join(errors.New("x"), &shrankError{path: "/f"}), true},
	}
	for _, tt := range tests {
		fc, root, _ := testCache(t, time.Hour)
		p := filepath.Join(root.r.Name(), "f")
		if err := os.WriteFile(p, make([]byte, 100), 0o644); err != nil {
			t.Fatal(err)
		}
		_, e := cacheOpen(t, fc, root, "/f")
		if err := os.Truncate(p, 50); err != nil {
			t.Fatal(err)
		}
		fc.staleAfter(e, tt.err)
		if size, _ := cacheOpen(t, fc, root, "/f"); (size == 50) != tt.wantNew {
			t.Errorf("after %v: %d bytes announced, want the new size: %v", tt.err, size, tt.wantNew)
		}
	}
}

// TestFileCacheStaleSize: through a connection, with a window longer than
// the test: a small file truncated in place is sent short and the
// connection closes (never padded to the announced length), and the next
// request sees the new size; a file grown in place is sent at the size
// announced, a prefix of the new bytes. In mmap mode every hit fstats.
func TestFileCacheStaleSize(t *testing.T) {
	for _, mode := range config.Modes {
		t.Run(mode, func(t *testing.T) {
			ts := newTestServer(t, mode, func(o *Options) { o.FileCache, o.FileCacheValid = time.Hour, time.Hour })
			data := random(20 << 10) // one chunk, but not kept in memory (inline.go)
			ts.write(t, "f", data)
			p := filepath.Join(ts.root, "f")
			get := func() (wire.Response, []byte) { return ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}) }
			if _, body := get(); !bytes.Equal(body, data) {
				t.Fatal("first GET differs")
			}
			// Grown: the announced size, a prefix of the file as it is now.
			appendTo(t, p, 1000)
			if mode == config.ModeMmap {
				// No window in mmap mode: a mapping would pad a shrunk file.
				if r, _ := get(); r.Size != int64(len(data))+1000 {
					t.Fatalf("mmap, grown: size %d, want the new size", r.Size)
				}
				return
			}
			if r, body := get(); r.Size != int64(len(data)) || !bytes.Equal(body, data) {
				t.Fatalf("grown within the window: size %d, %d bytes: want the old size and bytes", r.Size, len(body))
			}
			// Shrunk: a short body, then the connection closes.
			if err := os.Truncate(p, 1000); err != nil {
				t.Fatal(err)
			}
			ts.client.SetDeadline(time.Now().Add(10 * time.Second))
			wire.WriteRequest(ts.client, &wire.Request{Op: wire.OpGet, Path: "/f"})
			r, err := wire.ReadResponse(ts.br)
			if err != nil || r.BodyLen != int64(len(data)) {
				t.Fatalf("shrunk within the window: %+v, %v: want the old length announced", r, err)
			}
			body, err := io.ReadAll(ts.br)
			if err != nil || !bytes.Equal(body, data[:1000]) {
				t.Fatalf("shrunk: %d bytes, %v: want the file's 1000, then EOF", len(body), err)
			}
			if res := ts.waitResult(t); res.Outcome != OutcomeShrank {
				t.Fatalf("outcome %q, want %q", res.Outcome, OutcomeShrank)
			}
			// The next request revalidates.
			ts.connect(t)
			if r, body := get(); r.Size != 1000 || !bytes.Equal(body, data[:1000]) {
				t.Fatalf("after the short send: size %d, %d bytes: want 1000", r.Size, len(body))
			}
		})
	}
}

// TestFileCacheRevalidate: past open_file_cache, the next request looks
// the path up again: the same file keeps its descriptor (and its stat is
// fresh), a file renamed over or deleted is seen; the sweep closes only
// entries not requested for a whole period.
func TestFileCacheRevalidate(t *testing.T) {
	fc, root, clock := testCache(t, 0)
	dir := root.r.Name()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, make([]byte, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	_, e := cacheOpen(t, fc, root, "/f")
	clock.advance(time.Minute)
	appendTo(t, p, 1)
	if size, e2 := cacheOpen(t, fc, root, "/f"); e2 != e || size != 101 {
		t.Fatalf("same file past the period: entry kept %v, size %d: want kept, 101", e2 == e, size)
	}
	// Requested a second before it expires: the sweep keeps it.
	clock.advance(time.Minute - time.Second)
	cacheOpen(t, fc, root, "/f")
	fc.sweepOnce(clock.now().Add(time.Second))
	if fc.len() != 1 {
		t.Fatal("an entry in use was swept")
	}
	// Renamed over: a new entry for the new file.
	if err := os.WriteFile(p+".new", make([]byte, 7), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p+".new", p); err != nil {
		t.Fatal(err)
	}
	clock.advance(time.Second)
	if size, e3 := cacheOpen(t, fc, root, "/f"); e3 == e || size != 7 {
		t.Fatalf("renamed over, past the period: same entry %v, size %d: want the new file", e3 == e, size)
	}
	// Deleted: not found once the period is over.
	os.Remove(p)
	clock.advance(time.Minute)
	if fd, _, _, err := fc.open(root, "/f", nil); err == nil {
		unix.Close(fd)
		t.Fatal("a deleted file was served past the period")
	}
	// Not requested for a whole period: swept.
	if err := os.WriteFile(p, make([]byte, 5), 0o644); err != nil {
		t.Fatal(err)
	}
	cacheOpen(t, fc, root, "/f")
	clock.advance(time.Minute)
	fc.sweepOnce(clock.now())
	if n := fc.len(); n != 0 {
		t.Fatalf("%d entries after a whole period unused, want 0", n)
	}
	// On a local file system (t.TempDir here, unless it is an overlay or
	// a network file system) those revalidations were raw calls.
	if n := fc.rawLookups.Load(); root.local && n == 0 {
		t.Error("no revalidation used the raw lookup on a local file system")
	}
}

// TestFileCacheRevalidateFallback: the raw lookup (lookupRaw) stands back
// wherever it must not run or cannot answer, and the ordinary path then
// gives the right result: a root not on a known local file system, a
// path that crosses a mount (RESOLVE_NO_XDEV: another file system, maybe
// a network one), and a path that now names a directory.
func TestFileCacheRevalidateFallback(t *testing.T) {
	for _, c := range []struct {
		name    string
		setup   func(t *testing.T, dir string, root *rootDir) string // returns the request path
		change  func(t *testing.T, full string)                      // after the first request
		wantErr bool
	}{
		{"not local", func(t *testing.T, dir string, root *rootDir) string {
			root.local = false
			return "/f"
		}, renameOver, false},
		{"across a mount", func(t *testing.T, dir string, root *rootDir) string {
			if os.Geteuid() != 0 {
				t.Skip("mounting a tmpfs needs root")
			}
			m := filepath.Join(dir, "m")
			if err := os.Mkdir(m, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("tmpfs", m, "tmpfs", 0, "size=1m"); err != nil {
				t.Skipf("mount tmpfs: %v", err)
			}
			t.Cleanup(func() { unix.Unmount(m, unix.MNT_DETACH) })
			return "/m/f"
		}, renameOver, false},
		{"now a directory", func(t *testing.T, dir string, root *rootDir) string {
			return "/f"
		}, func(t *testing.T, full string) {
			if err := os.Remove(full); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(full, 0o755); err != nil {
				t.Fatal(err)
			}
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			fc, root, clock := testCache(t, 0)
			dir := root.r.Name()
			p := c.setup(t, dir, root)
			full := filepath.Join(dir, p)
			if err := os.WriteFile(full, make([]byte, 100), 0o644); err != nil {
				t.Fatal(err)
			}
			_, e := cacheOpen(t, fc, root, p)
			if want := c.name == "now a directory" && root.local; e.ownMount != want {
				t.Errorf("entry on the root's own local mount: %v, want %v", e.ownMount, want)
			}
			c.change(t, full)
			clock.advance(time.Minute)
			fd, st, e2, err := fc.open(root, p, nil)
			if c.wantErr {
				if err == nil {
					fc.release(fd, e2)
					t.Fatal("served a path that now names a directory")
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				fc.release(fd, e2)
				if e2 == e || st.Size != 7 {
					t.Fatalf("renamed over: same entry %v, size %d: want the new file (7 bytes)", e2 == e, st.Size)
				}
			}
			if n := fc.rawLookups.Load(); n != 0 {
				t.Errorf("%d raw lookups, want none", n)
			}
		})
	}
}

// renameOver replaces the file at full by a new one of 7 bytes.
func renameOver(t *testing.T, full string) {
	t.Helper()
	if err := os.WriteFile(full+".new", make([]byte, 7), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(full+".new", full); err != nil {
		t.Fatal(err)
	}
}

// TestFileCacheInactive: with a short period (open_file_cache, 1 s) an
// entry not requested for a few periods stays open, and its next request
// revalidates it instead of opening the file again; one not requested for
// open_file_cache_inactive is closed by the sweep.
func TestFileCacheInactive(t *testing.T) {
	fc, root, clock := testCacheFor(t, time.Second, 20*time.Second, 0)
	dir := root.r.Name()
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	_, e := cacheOpen(t, fc, root, "/f")
	for _, idle := range []time.Duration{2 * time.Second, 5 * time.Second, fc.inactive - time.Second} {
		clock.advance(idle)
		fc.sweepOnce(clock.now())
		if fc.len() != 1 {
			t.Fatalf("closed after %v unrequested, want kept for %v", idle, fc.inactive)
		}
		if _, e2 := cacheOpen(t, fc, root, "/f"); e2 != e {
			t.Fatalf("after %v unrequested: a new entry, want the old one revalidated", idle)
		}
	}
	clock.advance(fc.inactive)
	fc.sweepOnce(clock.now())
	if n := fc.len(); n != 0 {
		t.Fatalf("%d entries after %v unrequested, want 0", n, fc.inactive)
	}
}

// TestFileCacheRawOpen: a miss on a local root opens the file with raw
// calls (openCached) where nothing on the way can wait, and the entry is
// then known to be on the root's own mount and keeps a small file's
// bytes; everything openCached stands back from takes the ordinary path
// and gets its ordinary answer: a missing name, a symlink out of the
// root, a FIFO, a directory, a path across a mount, a dentry the kernel
// dropped.
func TestFileCacheRawOpen(t *testing.T) {
	settleNow(t)
	for _, c := range []struct {
		name    string
		setup   func(t *testing.T, dir string) string // returns the request path
		raw     bool                                  // opened raw (where the root allows it)
		wantErr bool
	}{
		{"regular file", func(t *testing.T, dir string) string { return "/f" }, true, false},
		{"nested", func(t *testing.T, dir string) string {
			os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755)
			os.WriteFile(filepath.Join(dir, "a", "b", "g"), make([]byte, 100), 0o644)
			return "/a/b/g"
		}, true, false},
		{"missing", func(t *testing.T, dir string) string { return "/nope" }, false, true},
		{"symlink out", func(t *testing.T, dir string) string {
			os.Symlink("/etc/passwd", filepath.Join(dir, "out"))
			return "/out"
		}, false, true},
		{"fifo", func(t *testing.T, dir string) string {
			unix.Mkfifo(filepath.Join(dir, "p"), 0o644)
			return "/p"
		}, false, true},
		{"directory", func(t *testing.T, dir string) string {
			os.Mkdir(filepath.Join(dir, "d"), 0o755)
			return "/d"
		}, false, true},
		{"across a mount", func(t *testing.T, dir string) string {
			if os.Geteuid() != 0 {
				t.Skip("mounting a tmpfs needs root")
			}
			m := filepath.Join(dir, "m")
			os.Mkdir(m, 0o755)
			if err := unix.Mount("tmpfs", m, "tmpfs", 0, "size=1m"); err != nil {
				t.Skipf("mount tmpfs: %v", err)
			}
			t.Cleanup(func() { unix.Unmount(m, unix.MNT_DETACH) })
			os.WriteFile(filepath.Join(m, "f"), make([]byte, 100), 0o644)
			return "/m/f"
		}, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			fc, root, _ := testCache(t, 0)
			fc.inlineMax, fc.now = 1<<10, time.Now // the real clock: files settle by their ctime
			dir := root.r.Name()
			if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 100), 0o644); err != nil {
				t.Fatal(err)
			}
			p := c.setup(t, dir)
			fd, st, e, err := fc.open(root, p, nil)
			if c.wantErr {
				if err == nil {
					fc.release(fd, e)
					t.Fatalf("opened %s, want an error", p)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				fc.release(fd, e)
				if st.Size != 100 || e == nil || e.body == nil || len(e.body) != 100 {
					t.Fatalf("size %d, entry %v: want 100 bytes, cached with its body", st.Size, e != nil)
				}
				if want := root.local && c.name != "across a mount"; e.ownMount != want {
					t.Errorf("entry on the root's own local mount: %v, want %v", e.ownMount, want)
				}
			}
			want := uint64(0)
			if c.raw && root.cached {
				want = 1
			}
			if n := fc.rawOpens.Load(); n != want {
				t.Errorf("%d raw opens, want %d (root local %v, RESOLVE_CACHED %v)", n, want, root.local, root.cached)
			}
		})
	}
}

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
