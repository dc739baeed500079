package serve

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
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
