package serve

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// A name the raw walk finds missing (rawcall.Missing) is answered not
// found by openNew alone, without mayWait or the ordinary walk: these
// tests hold it to the ordinary walk's answer.

// openNewAs is openNew of p with the thread's file-system ids user's
// (0: root's), and whether it called mayWait.
func openNewAs(root *rootDir, p string, user int) (answer string, waited bool) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if user != 0 {
		unix.Setfsgid(user)
		unix.Setfsuid(user)
		defer func() {
			unix.Setfsuid(0)
			unix.Setfsgid(0)
		}()
	}
	fd, st, _, err := openNew(root, p, func() { waited = true })
	return openAnswer(fd, st, err), waited
}

// TestOpenNewMissingWithoutWait: once the walk has been made (the
// kernel's caches hold the answer), a missing name (a missing file, a
// missing directory on the way, a dangling symlink, a file named as a
// directory) is not found without mayWait, and a directory is refused
// by its kind without it too; what the caches cannot answer alone (a
// name below a directory the worker may not search, a name beyond a
// mount point) still waits and gets the ordinary walk's answer.
func TestOpenNewMissingWithoutWait(t *testing.T) {
	_, root, _ := testCache(t, 0)
	if !root.fs().cached {
		t.Skip("no raw opens here (not a local file system, or no RESOLVE_CACHED)")
	}
	dir := root.r.Name()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"d", "nosearch", "mnt"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(dir, "nosearch"), 0o700)
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("12345"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Symlink("nope", filepath.Join(dir, "dangling"))
	mounted := unix.Mount("tmpfs", filepath.Join(dir, "mnt"), "tmpfs", 0, "size=1m") == nil
	if mounted {
		t.Cleanup(func() { unix.Unmount(filepath.Join(dir, "mnt"), unix.MNT_DETACH) })
	}
	for _, c := range []struct {
		path  string
		user  int
		waits bool
	}{
		{"/nope", 0, false},
		{"/d/nope", 0, false},
		{"/nope/x", 0, false},
		{"/dangling", 0, false},
		{"/f/", 0, false},
		{"/nope", 65534, false},
		{"/d/nope", 65534, false},
		{"/nosearch/nope", 0, false},
		{"/nosearch/nope", 65534, true}, // 403, not 404
		{"/d", 0, false},                // a directory: refused by the raw walk's fstat
		{"/mnt/nope", 0, true},          // another mount (RESOLVE_NO_XDEV)
	} {
		if c.path == "/mnt/nope" && !mounted {
			continue
		}
		// The ordinary walk first: the kernel's caches then know the answer.
		if fd, _, err := openFile(root, c.path); err == nil {
			unix.Close(fd)
		}
		got, waited := openNewAs(root, c.path, c.user)
		runtime.LockOSThread()
		if c.user != 0 {
			unix.Setfsgid(c.user)
			unix.Setfsuid(c.user)
		}
		fd, st, err := openFile(root, c.path)
		if c.user != 0 {
			unix.Setfsuid(0)
			unix.Setfsgid(0)
		}
		runtime.UnlockOSThread()
		want := openAnswer(fd, st, err)
		if got != want || waited != c.waits {
			t.Errorf("user %d, %s: %s, waited %v; want %s, waited %v", c.user, c.path, got, waited, want, c.waits)
		}
	}
}

// TestOpenNewMissingComesIntoBeing: a name answered not found from the
// kernel's caches is found at once when it comes into being, by whatever
// way it does (created, linked, renamed into place, a symlink made, its
// directory made, a directory on the way replaced by a symlink, created
// through a bind mount of its directory): nothing keeps a stale "not
// found", here or in the kernel.
func TestOpenNewMissingComesIntoBeing(t *testing.T) {
	_, root, _ := testCache(t, 0)
	if !root.fs().cached {
		t.Skip("no raw opens here (not a local file system, or no RESOLVE_CACHED)")
	}
	dir := root.r.Name()
	at := func(name string) string { return filepath.Join(dir, name) }
	write := func(name, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(at(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(at(name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write("f", "123")
	write("d/x", "1234")
	write("gone/keep", "1")
	check(os.Mkdir(at("bound"), 0o755))
	for _, c := range []struct {
		name string
		path string
		make func(t *testing.T) // makes path name a file of 3 or 4 bytes
	}{
		{"created", "/c", func(t *testing.T) { write("c", "123") }},
		{"linked", "/l", func(t *testing.T) { check(os.Link(at("f"), at("l"))) }},
		{"renamed into place", "/r", func(t *testing.T) { write("r.tmp", "123"); check(os.Rename(at("r.tmp"), at("r"))) }},
		{"symlink made", "/s", func(t *testing.T) { check(os.Symlink("f", at("s"))) }},
		{"its directory made", "/m/x", func(t *testing.T) { write("m/x", "1234") }},
		{"a file named as a directory, made one", "/fd/x", func(t *testing.T) {
			write("fd", "1")
			if got, _ := openNewAs(root, "/fd/x", 0); got == "file of 4" {
				t.Fatalf("/fd/x before: %s", got)
			}
			check(os.Remove(at("fd")))
			write("fd/x", "1234")
		}},
		{"a directory on the way replaced by a symlink", "/gone/x", func(t *testing.T) {
			check(os.RemoveAll(at("gone")))
			check(os.Symlink("d", at("gone")))
		}},
		{"created through a bind mount of its directory", "/d/y", func(t *testing.T) {
			if err := unix.Mount(at("d"), at("bound"), "", unix.MS_BIND, ""); err != nil {
				t.Skipf("bind mount: %v", err)
			}
			defer unix.Unmount(at("bound"), unix.MNT_DETACH)
			write("bound/y", "1234")
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for i := range 2 { // the first walks the ordinary way, the second from the caches
				if got, waited := openNewAs(root, c.path, 0); got != "not found/none: not found: "+c.path || (i == 1 && waited) {
					t.Fatalf("before, %d: %s, waited %v; want not found, from the caches the second time", i, got, waited)
				}
			}
			c.make(t)
			got, _ := openNewAs(root, c.path, 0)
			if got != "file of 3" && got != "file of 4" {
				t.Fatalf("after: %s; want the file", got)
			}
		})
	}
}

// TestOpenNewNotMissingWhileReplaced: a name replaced atomically (a file
// renamed over it, its directory exchanged with another that has the
// name too) never is not found, raw or not, however the lookups and the
// renames interleave.
func TestOpenNewNotMissingWhileReplaced(t *testing.T) {
	_, root, _ := testCache(t, 0)
	dir := root.r.Name()
	at := func(name string) string { return filepath.Join(dir, name) }
	for _, name := range []string{"f", "d/f", "e/f"} {
		if err := os.MkdirAll(filepath.Dir(at(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(at(name), []byte("1234"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const rounds = 2000
	done := make(chan error, 1)
	go func() {
		for range rounds {
			if err := os.WriteFile(at("f.tmp"), []byte("1234"), 0o644); err != nil {
				done <- err
				return
			}
			if err := unix.Rename(at("f.tmp"), at("f")); err != nil {
				done <- err
				return
			}
			if err := unix.Renameat2(unix.AT_FDCWD, at("d"), unix.AT_FDCWD, at("e"), unix.RENAME_EXCHANGE); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	opens, failed := 0, false
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d opens during %d replacements", opens, rounds)
			return
		default:
		}
		for _, p := range []string{"/f", "/d/f"} {
			if got, _ := openNewAs(root, p, 0); got != "file of 4" && !failed {
				t.Errorf("%s while it is replaced: %s", p, got)
				failed = true // and wait for the renames to end
			}
			opens++
		}
	}
}
