package rawcall

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cachedHow is how the file cache asks OpenCached to look a path up.
var cachedHow = unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC,
	Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV | ResolveCached}

const readFlags = unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK

func openDir(t *testing.T, dir string) int {
	t.Helper()
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(dfd) })
	return dfd
}

// needResolveCached skips where the kernel does not know RESOLVE_CACHED
// (before 5.12: EINVAL), as the file cache then never calls OpenCached.
func needResolveCached(t *testing.T, dfd int) {
	t.Helper()
	var st unix.Stat_t
	if err := Lookup(dfd, ".", &cachedHow, &st); err == unix.EINVAL || err == unix.ENOSYS {
		t.Skipf("no openat2 RESOLVE_CACHED here: %v", err)
	}
}

// TestOpenCached: a regular file opens for reading (non-blocking,
// close-on-exec), and everything else fails without opening anything for
// reading: a missing name, a symlink out of the root, "..", a directory,
// a FIFO (whose writer must not be released) and a NUL in the path.
func TestOpenCached(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"f": "hello", strings.Repeat("d/", 200) + "f": "deep"} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", filepath.Join(dir, "in")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	dfd := openDir(t, dir)
	needResolveCached(t, dfd)
	// Look every name up once the ordinary way, as the file cache's
	// fallback would have, so that the walk finds them cached.
	for _, n := range []string{"f", "in", "out", "fifo", "missing", "d"} {
		os.Lstat(filepath.Join(dir, n))
	}
	os.ReadFile(filepath.Join(dir, strings.Repeat("d/", 200)+"f"))
	procFD() // open for the process's life, not per call
	before := openFDs(t)
	for _, c := range []struct {
		path string
		body string // "" = must fail
	}{
		{"f", "hello"},
		{"in", "hello"}, // a symlink within the root (or EAGAIN)
		{strings.Repeat("d/", 200) + "f", "deep"},
		{"missing", ""},
		{"out", ""},
		{"../f", ""},
		{"d", ""},
		{"fifo", ""},
		{"f\x00x", ""},
	} {
		var st unix.Stat_t
		fd, err := OpenCached(dfd, c.path, &cachedHow, readFlags, &st)
		if c.body == "" {
			if err == nil {
				unix.Close(fd)
				t.Errorf("OpenCached(%.20q) opened it, want an error", c.path)
			}
			continue
		}
		if err == unix.EAGAIN && c.path == "in" {
			continue // a symlink's target may need its inode's link read: the ordinary path then
		}
		if err != nil {
			t.Errorf("OpenCached(%.20q): %v", c.path, err)
			continue
		}
		buf := make([]byte, 64)
		n, _ := unix.Read(fd, buf)
		fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		fdfl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		unix.Close(fd)
		if string(buf[:n]) != c.body || st.Size != int64(len(c.body)) {
			t.Errorf("OpenCached(%.20q): read %q, size %d; want %q", c.path, buf[:n], st.Size, c.body)
		}
		if fl&unix.O_NONBLOCK == 0 || fl&unix.O_ACCMODE != unix.O_RDONLY || fdfl&unix.FD_CLOEXEC == 0 {
			t.Errorf("OpenCached(%.20q): flags %#x, fd flags %#x: want read-only, non-blocking, close-on-exec", c.path, fl, fdfl)
		}
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open after, %d before", after, before)
	}
	// The FIFO was never opened for reading: a writer still finds no reader.
	if fd, err := unix.Open(filepath.Join(dir, "fifo"), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err != unix.ENXIO {
		if err == nil {
			unix.Close(fd)
		}
		t.Errorf("open of the FIFO for writing: %v, want ENXIO (no reader)", err)
	}
}

// TestOpenCachedNotCached: a path whose dentries the kernel does not hold
// fails with EAGAIN, without reading the directory, and opens once an
// ordinary lookup has brought them in.
func TestOpenCachedNotCached(t *testing.T) {
	dir := coldExt4(t, func(dir string) {
		if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "sub", "f"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	dfd := openDir(t, dir)
	needResolveCached(t, dfd)
	var st unix.Stat_t
	fd, err := OpenCached(dfd, "sub/f", &cachedHow, readFlags, &st)
	if err == nil {
		unix.Close(fd)
		t.Fatal("OpenCached found a path of a file system just mounted in the cache")
	}
	if err != unix.EAGAIN {
		t.Fatalf("OpenCached of a path not cached: %v, want EAGAIN", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sub", "f")); err != nil {
		t.Fatal(err)
	}
	fd, err = OpenCached(dfd, "sub/f", &cachedHow, readFlags, &st)
	if err != nil {
		t.Fatalf("OpenCached after an ordinary lookup: %v", err)
	}
	unix.Close(fd)
}

// coldExt4 makes a small ext4 file system (a loop device over an image in
// a temporary folder), lets fill write to it, then mounts it again and
// returns where: none of its dentries are in the kernel's caches then,
// and no other file system's were dropped for it. It skips without root,
// mkfs.ext4 or loop devices.
func coldExt4(t *testing.T, fill func(dir string)) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a file system needs root")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4 (e2fsprogs)")
	}
	img, mnt := filepath.Join(t.TempDir(), "fs.img"), t.TempDir()
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	mount := func() {
		if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
			t.Skipf("mount -o loop: %v: %s", err, out)
		}
	}
	umount := func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Fatalf("umount: %v: %s", err, out)
		}
	}
	mount()
	fill(mnt)
	umount()
	mount()
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	return mnt
}

// TestPreadNowait: pages in the cache are read; a file whose pages are
// not gives EAGAIN (and reads nothing), and is read once they are.
func TestPreadNowait(t *testing.T) {
	fd := uncachedFile(t, 64<<10)
	buf := make([]byte, 64<<10)
	if n, err := PreadNowait(fd, buf, 0); err != unix.EAGAIN {
		t.Fatalf("PreadNowait of uncached pages: %d, %v; want EAGAIN", n, err)
	}
	want := make([]byte, len(buf))
	if _, err := unix.Pread(fd, want, 0); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 4096, 1000} {
		n, err := PreadNowait(fd, buf, off)
		if err != nil || !bytes.Equal(buf[:n], want[off:off+int64(n)]) || n != len(want)-int(off) {
			t.Errorf("PreadNowait at %d: %d, %v; want %d bytes as read", off, n, err, len(want)-int(off))
		}
	}
	if n, err := PreadNowait(fd, nil, 0); n != 0 || err != nil {
		t.Errorf("PreadNowait of nothing: %d, %v", n, err)
	}
}

// TestPreadNowaitStartsNoRead: a read of pages not cached starts no read
// from the disk either. preadv2(RWF_NOWAIT) alone answers EAGAIN only
// after it has put read-ahead pages in the cache and submitted their
// reads, in the raw call.
func TestPreadNowaitStartsNoRead(t *testing.T) {
	needCachestat(t)
	const size = 64 << 10
	fd := uncachedFile(t, size)
	buf := make([]byte, 4096)
	if n, err := PreadNowait(fd, buf, 0); err != unix.EAGAIN {
		t.Fatalf("PreadNowait of uncached pages: %d, %v; want EAGAIN", n, err)
	}
	// Pages whose read is under way are in the cache already.
	r := unix.CachestatRange{Off: 0, Len: size}
	var cs unix.Cachestat_t
	if _, _, e := unix.RawSyscall6(unix.SYS_CACHESTAT, uintptr(fd), uintptr(unsafe.Pointer(&r)), uintptr(unsafe.Pointer(&cs)), 0, 0, 0); e != 0 {
		t.Fatal(e)
	}
	if cs.Cache != 0 {
		t.Errorf("%d pages in the cache after PreadNowait of an uncached file, want 0 (no read started)", cs.Cache)
	}
}

// TestPreadNowaitFarOffset: an offset past 4 GiB reaches the kernel whole
// (preadv2 takes it in two halves).
func TestPreadNowaitFarOffset(t *testing.T) {
	needCachestat(t)
	f, err := os.Create(filepath.Join(t.TempDir(), "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const off = 5<<30 + 3
	if _, err := f.WriteAt([]byte("far"), off); err != nil {
		t.Skipf("a sparse file of 5 GiB: %v", err)
	}
	buf := make([]byte, 8)
	n, err := PreadNowait(int(f.Fd()), buf, off)
	if err != nil || string(buf[:n]) != "far" {
		t.Fatalf("PreadNowait at 5 GiB: %q, %v; want \"far\"", buf[:n], err)
	}
	if n, err := PreadNowait(int(f.Fd()), buf, off+3); n != 0 || err != nil {
		t.Errorf("PreadNowait at the end: %d, %v; want 0, nil", n, err)
	}
}

// TestOpenCachedProcNotWalked: the reopen goes through the /proc/self/fd
// the first call opened, not through the path /proc/self/fd/N, whose walk
// starts at the process's root and crosses whatever is mounted on the
// way: here a tmpfs over /proc (in a mount namespace of one thread).
func TestOpenCachedProcNotWalked(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a mount namespace needs root")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	dfd := openDir(t, dir)
	needResolveCached(t, dfd)
	os.Lstat(filepath.Join(dir, "f"))
	var st unix.Stat_t
	fd, err := OpenCached(dfd, "f", &cachedHow, readFlags, &st) // a worker's first miss
	if err != nil {
		t.Fatalf("OpenCached: %v", err)
	}
	unix.Close(fd)
	type result struct {
		skip string
		err  error
	}
	done := make(chan result)
	go func() {
		// Never unlocked: the thread, and its namespace, end with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			done <- result{skip: "unshare: " + err.Error()}
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			done <- result{skip: "private mounts: " + err.Error()}
			return
		}
		if err := unix.Mount("tmpfs", "/proc", "tmpfs", 0, "size=64k"); err != nil {
			done <- result{skip: "tmpfs over /proc: " + err.Error()}
			return
		}
		var st unix.Stat_t
		fd, err := OpenCached(dfd, "f", &cachedHow, readFlags, &st)
		if err == nil {
			unix.Close(fd)
		}
		done <- result{err: err}
	}()
	r := <-done
	if r.skip != "" {
		t.Skip(r.skip)
	}
	if r.err != nil {
		t.Errorf("OpenCached with another file system over /proc: %v", r.err)
	}
}
