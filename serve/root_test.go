package serve

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/wire"
)

// TestFollowRoot: when the root's path comes to name another directory
// (a symlink switched by a deploy), the worker serves that directory, at
// once for files it had cached too; a path that names something it
// cannot serve leaves the directory it serves as it is, with a warning.
func TestFollowRoot(t *testing.T) {
	saved := rootCheckEvery
	rootCheckEvery = time.Hour // the test calls followRoot itself
	t.Cleanup(func() { rootCheckEvery = saved })
	dir := t.TempDir()
	for name, body := range map[string]string{"a/f": "A", "b/f": "B", "b/g": "G", "file": "not a folder"} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	site := filepath.Join(dir, "site")
	point := func(target string) {
		t.Helper()
		os.Remove(site + ".new")
		if err := os.Symlink(target, site+".new"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(site+".new", site); err != nil {
			t.Fatal(err)
		}
	}
	point("a")
	ts := newTestServer(t, "sendfile", func(o *Options) {
		o.Root = site
		o.FileCache, o.FileCacheValid = time.Hour, time.Hour // only the switch empties the cache
	})
	get := func(p string) string {
		t.Helper()
		r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: p})
		if r.Status != wire.StatusOK {
			return r.Status.String()
		}
		return string(body)
	}
	if got := get("/f"); got != "A" {
		t.Fatalf("/f before the switch: %q", got)
	}
	ts.srv.followRoot() // nothing changed
	if got := get("/f"); got != "A" {
		t.Fatalf("/f with the root unchanged: %q", got)
	}

	point("b")
	ts.srv.followRoot()
	if got, got2 := get("/f"), get("/g"); got != "B" || got2 != "G" {
		t.Fatalf("after the switch: /f %q, /g %q, want B and G", got, got2)
	}
	if r, _ := ts.do(t, wire.Request{Op: wire.OpList, Path: "/"}); r.Status != wire.StatusOK || r.Size != 2 {
		t.Fatalf("LIST / after the switch: status %v, %d entries, want 2", r.Status, r.Size)
	}
	if !strings.Contains(ts.logs.String(), "names another directory now; serving it") {
		t.Errorf("the switch is not logged:\n%s", ts.logs.String())
	}

	point("file") // not a directory: b stays served
	ts.srv.followRoot()
	ts.srv.followRoot() // warned once
	if got := get("/f"); got != "B" {
		t.Fatalf("/f with the root's path naming a file: %q, want B", got)
	}
	if n := strings.Count(ts.logs.String(), "cannot be served"); n != 1 {
		t.Errorf("%d warnings that the new root cannot be served, want 1:\n%s", n, ts.logs.String())
	}
	os.Remove(site) // missing for now: b stays served
	ts.srv.followRoot()
	if got := get("/f"); got != "B" {
		t.Fatalf("/f with the root's path missing: %q, want B", got)
	}
}

// TestFollowRootFIFONeverBlocks: the root's path may name a FIFO for a
// moment (a deploy script's mistake, or anyone who may write where the
// path lives). followRoot opens the path twice, once with O_DIRECTORY,
// which refuses a FIFO at once, and once more for the os.Root fallback,
// which opened it as os.OpenRoot does, O_RDONLY alone: a FIFO swapped in
// between was opened for reading, which waits for a writer, for ever.
// That worker's watchRoot never looked at the root again (it kept its
// tree while the others followed), and Close, which waits for it, never
// returned. Both opens now refuse what is not a directory.
func TestFollowRootFIFONeverBlocks(t *testing.T) {
	_, root, _ := testCache(t, 0)
	dir := t.TempDir()
	site, other := filepath.Join(dir, "site"), filepath.Join(dir, "other")
	if err := os.Mkdir(site, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(other, 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	flapped := make(chan struct{})
	go func() { // site is the directory, then the FIFO, then the directory...
		defer close(flapped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			unix.Renameat2(unix.AT_FDCWD, site, unix.AT_FDCWD, other, unix.RENAME_EXCHANGE)
		}
	}()
	defer func() { close(stop); <-flapped }()
	unblock := func() { // a writer lets a blocked open of the FIFO return
		for _, p := range []string{site, other} {
			if fd, err := unix.Open(p, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
				unix.Close(fd)
			}
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for n := 0; time.Now().Before(deadline); n++ {
		done := make(chan struct{})
		go func() { defer close(done); root.follow(site) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			for {
				unblock()
				select {
				case <-done:
				case <-time.After(10 * time.Millisecond):
					continue
				}
				break
			}
			t.Fatalf("follow blocked opening the FIFO that was swapped in (attempt %d)", n)
		}
	}
}

// TestFollowRootOutOfReachWarns: a root's path the worker cannot look up
// at all (a symlink loop here; a folder on the way it may not search,
// EACCES, for a worker with dropped privileges) names no directory it can
// serve, as one it may not search does, and is told once; it was taken
// for a path missing for now, and the old tree was served in silence.
func TestFollowRootOutOfReachWarns(t *testing.T) {
	saved := rootCheckEvery
	rootCheckEvery = time.Hour // the test calls followRoot itself
	t.Cleanup(func() { rootCheckEvery = saved })
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a", "f"), []byte("A"), 0o644); err != nil {
		t.Fatal(err)
	}
	site := filepath.Join(dir, "site")
	if err := os.Symlink("a", site); err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, "sendfile", func(o *Options) { o.Root = site })
	os.Remove(site)
	if err := os.Symlink("site", site); err != nil { // ELOOP
		t.Fatal(err)
	}
	ts.srv.followRoot()
	ts.srv.followRoot() // told once
	if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); r.Status != wire.StatusOK || string(body) != "A" {
		t.Fatalf("/f with the root's path a symlink loop: %v %q, want A", r.Status, body)
	}
	if n := strings.Count(ts.logs.String(), "cannot be looked up"); n != 1 {
		t.Errorf("%d warnings that the root's path cannot be looked up, want 1:\n%s", n, ts.logs.String())
	}
	before := strings.Count(ts.logs.String(), "cannot be")
	os.Remove(site) // missing for now: not told
	ts.srv.followRoot()
	if n := strings.Count(ts.logs.String(), "cannot be"); n != before {
		t.Errorf("a missing path was warned of:\n%s", ts.logs.String())
	}
}

// TestFollowRootMissStraddlingSwitch: a miss that opened its file in the
// old tree just before the root was followed elsewhere, and entered it in
// the open-file cache just after the cache was emptied, is that request's
// answer, but no later one's: it was cached, and every request of the
// worker got the old tree's file until the entry expired, a whole
// open_file_cache (up to an hour) after the switch.
func TestFollowRootMissStraddlingSwitch(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"a/f": "A", "b/f": "B"} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	site := filepath.Join(dir, "site")
	if err := os.Symlink("a", site); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(site, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenRoot(site)
	if err != nil {
		t.Fatal(err)
	}
	root := &rootDir{fd: fd, r: r}
	root.probeLocal()
	fc := newFileCache(time.Hour, 0, 0, 1<<10, 0)
	t.Cleanup(func() { fc.close(); root.close() })
	read := func(fd int) string {
		b := make([]byte, 8)
		n, _ := unix.Pread(fd, b, 0)
		return string(b[:max(n, 0)])
	}

	os.Remove(site)
	if err := os.Symlink("b", site); err != nil {
		t.Fatal(err)
	}
	// mayWait is called after the miss's open (and, where the open is not
	// raw, once before it too): the switch happens there, as watchRoot's
	// followRoot would make it.
	switchAt := 1
	if rfs := root.fs(); !rfs.local || !rfs.cached {
		switchAt = 2
	}
	calls := 0
	hook := func() {
		if calls++; calls == switchAt {
			if err := root.follow(site); err != nil {
				t.Fatal(err)
			}
			fc.flush()
		}
	}
	fd1, _, e, err := fc.open(root, "/f", hook)
	if err != nil {
		t.Fatal(err)
	}
	got := read(fd1)
	fc.release(fd1, e)
	if got != "A" {
		t.Skipf("the miss opened %q, not the old tree's file: the switch came before its open", got)
	}
	fd2, _, e2, err := fc.open(root, "/f", nil)
	if err != nil {
		t.Fatal(err)
	}
	got = read(fd2)
	fc.release(fd2, e2)
	if got != "B" {
		t.Fatalf("the request after the switch got %q, the old tree's file, from the cache (for open_file_cache); want B", got)
	}
}
