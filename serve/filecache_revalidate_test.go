package serve

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

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
	if n := fc.rawLookups.Load(); root.fs().local && n == 0 {
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
			root.fsp.Store(&rootFS{})
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
			if want := c.name == "now a directory" && root.fs().local; e.ownMount != want {
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
				if want := root.fs().local && c.name != "across a mount"; e.ownMount != want {
					t.Errorf("entry on the root's own local mount: %v, want %v", e.ownMount, want)
				}
			}
			want := uint64(0)
			if c.raw && root.fs().cached {
				want = 1
			}
			if n := fc.rawOpens.Load(); n != want {
				t.Errorf("%d raw opens, want %d (root local %v, RESOLVE_CACHED %v)", n, want, root.fs().local, root.fs().cached)
			}
		})
	}
}
