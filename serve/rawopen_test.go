package serve

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// openAnswer is what an open of a path came to: a file's size, or the
// refusal's status, kind and message.
func openAnswer(fd int, st *unix.Stat_t, err error) string {
	if err != nil {
		var re *reqError
		if errors.As(err, &re) {
			return re.status.String() + "/" + re.kind.String() + ": " + re.msg
		}
		return "error: " + err.Error()
	}
	unix.Close(fd)
	return "file of " + string(rune('0'+st.Size%10))
}

// TestOpenNewMatchesOpenFile: a miss opened raw where it can (openNew)
// gives every path the answer the ordinary open (openFile) gives it:
// each kind of bad path, a symlink out, a loop, names too long, a NUL,
// a FIFO, a device, a socket, a directory, and a file the worker may not
// read; and opens nothing that it leaves open.
func TestOpenNewMatchesOpenFile(t *testing.T) {
	_, root, _ := testCache(t, 0)
	dir := root.r.Name()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, n int, mode os.FileMode) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, n), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
	}
	write("f", 5, 0o644)
	write("d/g", 3, 0o644)
	write("secret", 7, 0o600)
	write("nosearch/h", 2, 0o644)
	os.Chmod(filepath.Join(dir, "nosearch"), 0o700)
	write(strings.Repeat("a/", 150)+"deep", 4, 0o644) // > 256 bytes
	os.Symlink("/etc/passwd", filepath.Join(dir, "out"))
	os.Symlink("../"+filepath.Base(dir)+"/f", filepath.Join(dir, "outin"))
	os.Symlink("f", filepath.Join(dir, "in"))
	os.Symlink("loop", filepath.Join(dir, "loop"))
	os.Symlink("/proc/self/root/etc/passwd", filepath.Join(dir, "magic"))
	os.Symlink("nope", filepath.Join(dir, "dangling"))
	unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644)
	unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
	if l, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0); err == nil {
		unix.Bind(l, &unix.SockaddrUnix{Name: filepath.Join(dir, "sock")})
		t.Cleanup(func() { unix.Close(l) })
	}
	paths := []string{"/f", "f", "//./f", "/d/g", "/d/./g", "/d/../f", "/..", "/../f", "/d/", "/d", "/f/", "/f/.",
		"/in", "/in/", "/out", "/outin", "/loop", "/magic", "/fifo", "/null", "/sock", "/nope", "/d/nope", "/f/x",
		"/d/nope/x", "/f/x/y", "/in/x", "/dangling", "/dangling/x", "/d/../nope", "/nosearch/nope", "/out/x",
		"/secret", "/nosearch/h", "/" + strings.Repeat("a/", 150) + "deep", "/" + strings.Repeat("a/", 2100) + "deep",
		"/" + strings.Repeat("n", 300), "/f\x00x", "/%2e%2e/f", "/."}
	// A first raw open opens /proc/self/fd for the process's life.
	if fd, _, _, err := openNew(root, "/f", func() {}); err == nil {
		unix.Close(fd)
	}
	before := countFDs(t)
	for _, user := range []int{0, 65534} {
		for _, p := range paths {
			// Both on this goroutine's own thread, whose fsuid may be changed.
			runtime.LockOSThread()
			if user != 0 {
				unix.Setfsgid(user)
				unix.Setfsuid(user)
			}
			// Walk it once the ordinary way so that its dentries are cached.
			if fd, _, err := openFile(root, p); err == nil {
				unix.Close(fd)
			}
			fd, st, raw, err := openNew(root, p, func() {})
			got := openAnswer(fd, st, err)
			fd, st, err = openFile(root, p)
			want := openAnswer(fd, st, err)
			if user != 0 {
				unix.Setfsuid(0)
				unix.Setfsgid(0)
			}
			runtime.UnlockOSThread()
			if got != want {
				t.Errorf("user %d, %.40q: raw %v: %s; ordinary: %s", user, p, raw, got, want)
			}
		}
	}
	if after := countFDs(t); after != before {
		t.Errorf("%d descriptors open after, %d before", after, before)
	}
}

// countFDs counts this process's descriptors of files: not its sockets,
// pipes or anonymous inodes, which the connections of the package's
// earlier tests may still be closing on their own time (a socket closed
// between two counts made a leak check fail, or hid a leak).
func countFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	n := 0
	for _, e := range es {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || strings.HasPrefix(l, "socket:") || strings.HasPrefix(l, "pipe:") || strings.HasPrefix(l, "anon_inode:") {
			continue // closed since ReadDir, or not a file's
		}
		n++
	}
	return n
}

// TestOpenNewFileOnTheWay: a name under a file ("file/x", and the index
// file of "file/", which an HTTP request for a folder looks up first) is
// not found from the raw walks alone, without mayWait: RESOLVE_CACHED
// fails such a walk with EAGAIN, and the lookup of its folder ("file/")
// says ENOTDIR. Its answer is the ordinary walk's.
func TestOpenNewFileOnTheWay(t *testing.T) {
	_, root, _ := testCache(t, 0)
	if !root.fs().local || !root.fs().cached {
		t.Skip("no raw opens on this root")
	}
	dir := root.r.Name()
	if err := os.MkdirAll(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "f"), []byte("f"), 0o644)
	os.WriteFile(filepath.Join(dir, "d", "g"), []byte("g"), 0o644)
	os.Symlink("f", filepath.Join(dir, "in"))
	for _, p := range []string{"/f/x", "/f/index.html", "/f/x/", "/d/g/index.html", "/in/x", "f/x", "//f//x"} {
		// Its dentries cached, as a served tree's are.
		if fd, _, err := openFile(root, p); err == nil {
			unix.Close(fd)
		}
		waited := false
		fd, st, _, err := openNew(root, p, func() { waited = true })
		got := openAnswer(fd, st, err)
		fd, st, err = openFile(root, p)
		if want := openAnswer(fd, st, err); got != want || waited {
			t.Errorf("%s: %s, waited %v; ordinary: %s", p, got, waited, want)
		}
	}
}

// TestOpenNewRaces: while the path is swapped, by rename, between a
// regular file and a FIFO, and a directory on it between a directory and
// a symlink out of the root, a miss opens only a regular file within the
// root, whose stat is its descriptor's.
func TestOpenNewRaces(t *testing.T) {
	_, root, _ := testCache(t, 0)
	dir := root.r.Name()
	outside := t.TempDir()
	secret := filepath.Join(outside, "f")
	if err := os.WriteFile(secret, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	var secretSt unix.Stat_t
	if err := unix.Stat(secret, &secretSt); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "file"), []byte("file"), 0o644))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	must(os.Mkdir(filepath.Join(dir, "realdir"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "realdir", "f"), []byte("inside"), 0o644))
	must(os.Symlink(outside, filepath.Join(dir, "outlink")))
	must(os.Rename(filepath.Join(dir, "file"), filepath.Join(dir, "x")))
	must(os.Rename(filepath.Join(dir, "realdir"), filepath.Join(dir, "d")))
	const rounds = 2000
	done := make(chan struct{})
	go func() {
		defer close(done)
		// swap moves what name holds to out and what in holds to name.
		swap := func(name, out, in string) {
			unix.Rename(filepath.Join(dir, name), filepath.Join(dir, out))
			unix.Rename(filepath.Join(dir, in), filepath.Join(dir, name))
		}
		xIsFile, dIsDir := true, true
		for range rounds {
			// Swap x with the other of file/fifo, d with the other of dir/link.
			if xIsFile {
				swap("x", "file", "fifo")
			} else {
				swap("x", "fifo", "file")
			}
			xIsFile = !xIsFile
			if dIsDir {
				swap("d", "realdir", "outlink")
			} else {
				swap("d", "outlink", "realdir")
			}
			dIsDir = !dIsDir
		}
	}()
	opened, raws := 0, 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		for _, p := range []string{"/x", "/d/f"} {
			fd, st, raw, err := openNew(root, p, func() {})
			if err != nil {
				continue
			}
			opened++
			if raw {
				raws++
			}
			var fst unix.Stat_t
			must(unix.Fstat(fd, &fst))
			unix.Close(fd)
			if fst.Mode&unix.S_IFMT != unix.S_IFREG || fst.Ino != st.Ino || fst.Dev != st.Dev {
				t.Fatalf("%s: opened mode %#o inode %d, stat says inode %d", p, fst.Mode, fst.Ino, st.Ino)
			}
			if fst.Ino == secretSt.Ino && fst.Dev == secretSt.Dev {
				t.Fatalf("%s: opened the file outside the root", p)
			}
		}
	}
	t.Logf("%d opens (%d raw) during %d swaps", opened, raws, rounds)
}
