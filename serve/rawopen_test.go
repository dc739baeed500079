package serve

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/internal/rawcall"
	"github.com/zfs-serve/zfs-serve/wire"
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

// slowListener answers every fanotify open-permission event on the files
// of dir after wait, as a virus scanner or fapolicyd does from its own
// process; it is gone at the end of the test.
func slowListener(t *testing.T, dir string, wait time.Duration) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("fanotify permission events need root")
	}
	fan, err := unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		t.Skipf("fanotify: %v", err)
	}
	if err := unix.FanotifyMark(fan, unix.FAN_MARK_ADD, unix.FAN_OPEN_PERM|unix.FAN_EVENT_ON_CHILD, unix.AT_FDCWD, dir); err != nil {
		unix.Close(fan)
		t.Skipf("fanotify mark: %v", err)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 4096)
		for {
			select {
			case <-done:
				return
			default:
			}
			fds := []unix.PollFd{{Fd: int32(fan), Events: unix.POLLIN}}
			if n, _ := unix.Poll(fds, 50); n <= 0 {
				continue
			}
			n, err := unix.Read(fan, buf)
			if err != nil {
				continue
			}
			time.Sleep(wait) // the listener at work, not synchronisation
			for off := 0; off+int(unsafe.Sizeof(unix.FanotifyEventMetadata{})) <= n; {
				m := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[off]))
				r := unix.FanotifyResponse{Fd: m.Fd, Response: unix.FAN_ALLOW}
				unix.Write(fan, (*[unsafe.Sizeof(r)]byte)(unsafe.Pointer(&r))[:])
				unix.Close(int(m.Fd))
				off += int(m.Event_len)
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		<-stopped
		unix.Close(fan) // answers whatever is left: allowed
	})
}

// TestRawOpenOffWhenSlow: where opening a file waits for a fanotify
// permission listener (raw, the worker's thread waits with it),
// rawSlowMax such raw opens in a row turn raw opens off: the next miss is
// opened the ordinary way, and served.
func TestRawOpenOffWhenSlow(t *testing.T) {
	settleNow(t)
	fc, root, _ := testCache(t, 0)
	if !root.local || !root.cached {
		t.Skip("no raw opens on this root")
	}
	dir := root.r.Name()
	names := []string{"/f1", "/f2", "/f3", "/f4", "/f5"}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Lstat(filepath.Join(dir, n)) // cached dentries, and no open
	}
	slowListener(t, dir, 3*rawOpenSlow)
	for _, n := range names {
		fd, st, e, err := fc.open(root, n, nil)
		if err != nil || st.Size != int64(len(n)) {
			t.Fatalf("open %s: size %d, %v", n, st.Size, err)
		}
		fc.release(fd, e)
	}
	if n := fc.rawOpens.Load(); n != rawSlowMax {
		t.Errorf("%d of %d misses opened raw while each open waits for a listener, want %d", n, len(names), rawSlowMax)
	}
}

// TestNoteRawOpen: raw opens go off after rawSlowMax slow ones in a row,
// not after slow ones apart (a preempted thread), and stay off.
func TestNoteRawOpen(t *testing.T) {
	slow, fast := 2*rawOpenSlow, rawOpenSlow/10
	for _, c := range []struct {
		name string
		took []time.Duration
		off  bool
	}{
		{"fast", []time.Duration{fast, fast, fast}, false},
		{"one slow", []time.Duration{fast, slow, fast}, false},
		{"slow apart", []time.Duration{slow, fast, slow, slow, fast, slow}, false},
		{"slow in a row", []time.Duration{fast, slow, slow, slow}, true},
		{"off for good", []time.Duration{slow, slow, slow, fast, fast}, true},
	} {
		var r rootDir
		for _, d := range c.took {
			r.noteRawOpen(d)
		}
		if r.rawOff.Load() != c.off {
			t.Errorf("%s: raw opens off %v, want %v", c.name, r.rawOff.Load(), c.off)
		}
	}
}

// TestInlineRawReadKeepsAtime: a small file's bytes are read raw only
// where the read leaves its access time as it is; a read that updates it
// writes the inode (a journal handle on ext4) and is made the ordinary way.
func TestInlineRawReadKeepsAtime(t *testing.T) {
	settleNow(t)
	if err := rawcall.ProbeCachestat(); err != nil {
		t.Skipf("no raw reads without cachestat: %v", err)
	}
	now := time.Now()
	for _, c := range []struct {
		name         string
		atime, mtime time.Time
		raw          bool
	}{
		{"read since its last change", now.Add(time.Minute), now.Add(-time.Hour), true},
		{"changed since read", now.Add(-time.Hour), now.Add(-time.Minute), false},
		{"read a day ago", now.Add(-25 * time.Hour), now.Add(-48 * time.Hour), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			fc, root, _ := testCache(t, 0)
			if !root.local || root.atime != atimeRelative {
				t.Skipf("the root is not on a local relatime mount (rule %d)", root.atime)
			}
			fc.inlineMax, fc.now = 1<<10, time.Now
			p := filepath.Join(root.r.Name(), "f")
			if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, c.atime, c.mtime); err != nil {
				t.Fatal(err)
			}
			fd, _, e, err := fc.open(root, "/f", nil)
			if err != nil {
				t.Fatal(err)
			}
			fc.release(fd, e)
			if e == nil || string(e.body) != "hello" {
				t.Fatalf("entry %v: the file's bytes not kept", e != nil)
			}
			if n := fc.rawReads.Load(); (n > 0) != c.raw {
				t.Errorf("%d raw reads, want raw %v", n, c.raw)
			}
		})
	}
}

// TestAtimeStays: the kernel's relatime rule, to the second.
func TestAtimeStays(t *testing.T) {
	ts := func(sec, nsec int64) unix.Timespec { return unix.Timespec{Sec: sec, Nsec: nsec} }
	const day = 24 * 60 * 60
	for _, c := range []struct {
		name  string
		rule  atimeRule
		st    unix.Stat_t
		now   time.Time
		stays bool
	}{
		{"noatime", atimeNever, unix.Stat_t{Atim: ts(1, 0), Mtim: ts(5, 0), Ctim: ts(5, 0)}, time.Unix(10*day, 0), true},
		{"strictatime", atimeStrict, unix.Stat_t{Atim: ts(9, 0), Mtim: ts(5, 0), Ctim: ts(5, 0)}, time.Unix(10, 0), false},
		{"read since the change", atimeRelative, unix.Stat_t{Atim: ts(9, 0), Mtim: ts(5, 0), Ctim: ts(5, 0)}, time.Unix(10, 0), true},
		{"changed since read", atimeRelative, unix.Stat_t{Atim: ts(9, 0), Mtim: ts(9, 1), Ctim: ts(5, 0)}, time.Unix(10, 0), false},
		{"ctime as new", atimeRelative, unix.Stat_t{Atim: ts(9, 5), Mtim: ts(5, 0), Ctim: ts(9, 5)}, time.Unix(10, 0), false},
		{"a day old by the seconds", atimeRelative, unix.Stat_t{Atim: ts(100, 900_000_000), Mtim: ts(5, 0), Ctim: ts(5, 0)}, time.Unix(100+day, 500_000_000), false},
		{"under a day", atimeRelative, unix.Stat_t{Atim: ts(100, 0), Mtim: ts(5, 0), Ctim: ts(5, 0)}, time.Unix(99+day, 999_999_999), true},
	} {
		root := &rootDir{atime: c.rule}
		if got := atimeStays(root, &c.st, c.now); got != c.stays {
			t.Errorf("%s: atimeStays %v, want %v", c.name, got, c.stays)
		}
	}
}

// TestOpenNewFileOnTheWay: a name under a file ("file/x", and the index
// file of "file/", which an HTTP request for a folder looks up first) is
// not found from the raw walks alone, without mayWait: RESOLVE_CACHED
// fails such a walk with EAGAIN, and the lookup of its folder ("file/")
// says ENOTDIR. Its answer is the ordinary walk's.
func TestOpenNewFileOnTheWay(t *testing.T) {
	_, root, _ := testCache(t, 0)
	if !root.local || !root.cached {
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

// TestSendfileRawKeepsAtime: a body's sendfile is raw only where reading
// the file leaves its access time as it is; where the read updates it (a
// write of the inode), the first call is made the ordinary way, and the
// rest of the body, the access time then fresh, raw again.
func TestSendfileRawKeepsAtime(t *testing.T) {
	if err := rawcall.ProbeCachestat(); err != nil {
		t.Skipf("no raw sendfile without cachestat: %v", err)
	}
	now := time.Now()
	for _, c := range []struct {
		name         string
		atime, mtime time.Time
		raw          bool // the first call
	}{
		{"read since its last change", now.Add(time.Minute), now.Add(-time.Hour), true},
		{"changed since read", now.Add(-time.Hour), now.Add(-time.Minute), false},
		{"read a day ago", now.Add(-25 * time.Hour), now.Add(-48 * time.Hour), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ts := newTestServer(t, config.ModeSendfile)
			if !ts.srv.root.local || ts.srv.root.atime != atimeRelative {
				t.Skipf("the root is not on a local relatime mount (rule %d)", ts.srv.root.atime)
			}
			data := random(3 * int(ts.srv.opts.Chunk)) // three chunks, more than a small file
			ts.write(t, "f", data)
			p := filepath.Join(ts.root, "f")
			os.ReadFile(p) // its pages in the cache
			if err := os.Chtimes(p, c.atime, c.mtime); err != nil {
				t.Fatal(err)
			}
			r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"})
			if r.Status != wire.StatusOK || !bytes.Equal(body, data) {
				t.Fatalf("status %v, %d bytes: want the file", r.Status, len(body))
			}
			raw, plain := ts.srv.rawSendfiles.Load(), ts.srv.plainSendfiles.Load()
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			updated := st.Atim.Sec != c.atime.Unix()
			switch {
			case c.raw && (plain != 0 || raw == 0 || updated):
				t.Errorf("sendfile calls: %d raw, %d ordinary; access time updated %v: want all raw, the access time as it was", raw, plain, updated)
			case !c.raw && (plain != 1 || raw == 0 || !updated):
				t.Errorf("sendfile calls: %d raw, %d ordinary; access time updated %v: want the first ordinary and the rest raw, the access time updated", raw, plain, updated)
			}
		})
	}
}

// TestSendfileRawAtimeOtherRules: on a strictatime mount every read updates
// the access time, the body's first as much as its later ones, so none of
// a body's sendfile is raw; and a file on another file system under the
// root goes by its own mount's rule, not the root's, so none of its
// sendfile is raw either (here a strictatime tmpfs under a relatime root,
// whose file's access time is fresh by relatime's rule).
func TestSendfileRawAtimeOtherRules(t *testing.T) {
	if err := rawcall.ProbeCachestat(); err != nil {
		t.Skipf("no raw sendfile without cachestat: %v", err)
	}
	mountStrict := func(t *testing.T, dir string) {
		t.Helper()
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_STRICTATIME, "size=16m"); err != nil {
			t.Skipf("mount a tmpfs: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	}
	for _, c := range []struct {
		name string
		// setup mounts what it needs and returns the server and the
		// file's directory under its root ("" for the root).
		setup func(t *testing.T) (*testServer, string)
	}{
		{"strictatime root", func(t *testing.T) (*testServer, string) {
			dir := t.TempDir()
			mountStrict(t, dir)
			ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.Root = dir })
			ts.root = dir
			if ts.srv.root.atime != atimeStrict {
				t.Skipf("the tmpfs root's rule is %d, not strict", ts.srv.root.atime)
			}
			return ts, ""
		}},
		{"strictatime mount under a relatime root", func(t *testing.T) (*testServer, string) {
			ts := newTestServer(t, config.ModeSendfile)
			if ts.srv.root.atime != atimeRelative {
				t.Skipf("the root is not on a relatime mount (rule %d)", ts.srv.root.atime)
			}
			sub := filepath.Join(ts.root, "sub")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			mountStrict(t, sub)
			return ts, "sub"
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ts, dir := c.setup(t)
			data := random(3 * int(ts.srv.opts.Chunk))
			p := filepath.Join(ts.root, dir, "f")
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			// Read since its last change: relatime's rule would keep it.
			if err := os.Chtimes(p, now.Add(time.Minute), now.Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
			r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/" + filepath.ToSlash(filepath.Join(dir, "f"))})
			if r.Status != wire.StatusOK || !bytes.Equal(body, data) {
				t.Fatalf("status %v, %d bytes: want the file", r.Status, len(body))
			}
			if raw, plain := ts.srv.rawSendfiles.Load(), ts.srv.plainSendfiles.Load(); raw != 0 || plain == 0 {
				t.Errorf("sendfile calls: %d raw, %d ordinary: want none raw", raw, plain)
			}
		})
	}
}

// TestSendfileRawFutureMtime: on a relatime mount a file whose mtime is in
// the future (an archive's, another machine's clock) has its access time
// updated by every read, since the read's access time is never later than
// that mtime: no call of its body is raw, not even after the first.
func TestSendfileRawFutureMtime(t *testing.T) {
	if err := rawcall.ProbeCachestat(); err != nil {
		t.Skipf("no raw sendfile without cachestat: %v", err)
	}
	ts := newTestServer(t, config.ModeSendfile)
	if ts.srv.root.atime != atimeRelative {
		t.Skipf("the root is not on a relatime mount (rule %d)", ts.srv.root.atime)
	}
	data := random(3 * int(ts.srv.opts.Chunk))
	ts.write(t, "f", data)
	p := filepath.Join(ts.root, "f")
	os.ReadFile(p) // its pages in the cache
	now := time.Now()
	if err := os.Chtimes(p, now.Add(-time.Hour), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"})
	if r.Status != wire.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("status %v, %d bytes: want the file", r.Status, len(body))
	}
	if raw, plain := ts.srv.rawSendfiles.Load(), ts.srv.plainSendfiles.Load(); raw != 0 || plain == 0 {
		t.Errorf("sendfile calls: %d raw, %d ordinary: want none raw", raw, plain)
	}
}
