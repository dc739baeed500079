package rawcall

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// dropCache asks the kernel to forget the cached pages of the file at p,
// and skips the test where it cannot (tmpfs keeps them).
func dropCache(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fsync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if Resident(int(f.Fd()), 0, 1) {
		t.Skipf("the page cache of %s cannot be dropped here (tmpfs?)", p)
	}
}

// uncachedFile writes a file of size random bytes, drops its pages from
// the cache (dropCache) and returns a descriptor of it, closed at the
// test's end.
func uncachedFile(t *testing.T, size int) int {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, random(size), 0o644); err != nil {
		t.Fatal(err)
	}
	dropCache(t, p)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

func needCachestat(t *testing.T) {
	t.Helper()
	if err := ProbeCachestat(); err != nil {
		cachestatOff.Store(false) // the probe turned it off for this process
		t.Skipf("no cachestat(2) here: %v", err)
	}
}

func TestResident(t *testing.T) {
	needCachestat(t)
	const size = 1<<20 + 100 // not page aligned
	fd := uncachedFile(t, size)
	// No read-ahead: only what is read gets cached.
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_RANDOM); err != nil {
		t.Fatal(err)
	}
	half := make([]byte, size/2)
	if _, err := unix.Pread(fd, half, 0); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		off  int64
		n    int
		want bool
	}{
		{0, size / 2, true},
		{4095, 2, true},          // two pages, both read
		{size - 10, 10, false},   // the last page, never read
		{0, size, false},         // the whole file: its second half is not cached
		{0, 0, false},            // nothing to send is not "resident"
		{-1, 10, false},          // a bad offset
		{size + 4096, 10, false}, // past the end: no pages
	} {
		if got := Resident(fd, c.off, c.n); got != c.want {
			t.Errorf("Resident(%d, %d) = %v, want %v", c.off, c.n, got, c.want)
		}
	}
	rest := make([]byte, size-size/2)
	if _, err := unix.Pread(fd, rest, size/2); err != nil {
		t.Fatal(err)
	}
	if !Resident(fd, 0, size) {
		t.Errorf("Resident(whole file) = false after reading all of it")
	}
}

// TestCachestatOff: with cachestat off (a seccomp filter said
// EPERM), resident says false without asking the kernel, so every
// sendfile takes the scheduler's path.
func TestCachestatOff(t *testing.T) {
	needCachestat(t)
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !Resident(int(f.Fd()), 0, 5) {
		t.Fatal("a file just written is not resident")
	}
	cachestatOff.Store(true)
	defer cachestatOff.Store(false)
	if Resident(int(f.Fd()), 0, 5) {
		t.Error("resident = true with cachestat off")
	}
}

// TestResidentNotOwner: recent kernels (6.18 here; the 2025 fix
// "cachestat: fix page cache statistics permission checking") make
// cachestat(2) answer EPERM for a file the caller neither owns nor may
// write: what a worker running as the service user meets on most of the
// files it serves. That says nothing about other files, so it must not
// turn cachestat off for the process as a seccomp refusal (found by
// probeCachestat) does.
func TestResidentNotOwner(t *testing.T) {
	needCachestat(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to ask as another user")
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, random(64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if !Resident(fd, 0, 64<<10) {
		t.Fatal("a file just written is not resident")
	}
	// Ask as nobody: setfsuid on this thread only (a raw call; Go's
	// wrappers change every thread) drops the file capabilities too.
	// The thread is not unlocked, so it ends with the goroutine.
	type answer struct {
		refused, resident bool
	}
	done := make(chan answer)
	go func() {
		runtime.LockOSThread()
		unix.RawSyscall(unix.SYS_SETFSUID, 65534, 0, 0)
		var a answer
		r := unix.CachestatRange{Len: 1}
		var st unix.Cachestat_t
		_, _, e := unix.RawSyscall6(unix.SYS_CACHESTAT, uintptr(fd), uintptr(unsafe.Pointer(&r)), uintptr(unsafe.Pointer(&st)), 0, 0, 0)
		if a.refused = e == unix.EPERM; a.refused {
			a.resident = Resident(fd, 0, 64<<10)
		}
		unix.RawSyscall(unix.SYS_SETFSUID, 0, 0, 0)
		done <- a
	}()
	a := <-done
	if !a.refused {
		t.Skip("this kernel answers cachestat(2) about any file")
	}
	if a.resident {
		t.Error("resident = true for a file cachestat refuses")
	}
	if !Resident(fd, 0, 64<<10) {
		t.Error("one file cachestat refused turned it off for every file")
	}
}

// TestResidentInFlight: cachestat(2) counts a page whose read from disk
// is still under way (read-ahead puts it in the cache first), and a
// sendfile that meets it waits for the disk: raw, that would hold the
// worker for the whole read. resident must not call a range resident
// while its last page is not yet readable (read-ahead runs ahead of a
// sequential reader, so that is where a read in flight shows).
func TestResidentInFlight(t *testing.T) {
	needCachestat(t)
	if os.Geteuid() != 0 {
		t.Skip("mincore tells the truth about another's file only to its owner: needs root")
	}
	const size, chunk = 32 << 20, 512 << 10
	fd := uncachedFile(t, size)
	m, err := unix.Mmap(fd, 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	// Start reading the whole file from disk, and look at once, from the
	// end, whose read has least chance of being done.
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_WILLNEED); err != nil {
		t.Fatal(err)
	}
	var vec [1]byte
	for off := int64(size - chunk); off >= 0; off -= chunk {
		if !Resident(fd, off, chunk) {
			continue
		}
		// mincore says whether a page is up to date, not merely cached.
		last := off + chunk - pageSize
		if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[last])), uintptr(pageSize), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
			t.Fatalf("mincore: %v", e)
		}
		if vec[0]&1 == 0 {
			t.Fatalf("Resident(%d, %d) = true while its last page is still being read from disk", off, chunk)
		}
	}
}

// TestResidentFileSystems: a file system that cannot read without
// waiting (no RWF_NOWAIT: NFS, whose sendfile may first ask the server
// whether the file changed; FUSE, which asks its daemon) gets no raw
// sendfile, however much of the file is cached; tmpfs, which reads no
// disk, does.
func TestResidentFileSystems(t *testing.T) {
	needCachestat(t)
	const n = 64 << 10
	check := func(t *testing.T, p string, want bool) {
		t.Helper()
		if err := os.WriteFile(p, random(n), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.ReadAt(make([]byte, n), 0); err != nil {
			t.Fatal(err)
		}
		if got := Resident(int(f.Fd()), 0, n); got != want {
			t.Errorf("Resident(%s) = %v, want %v", p, got, want)
		}
	}
	t.Run("tmpfs", func(t *testing.T) {
		var st unix.Statfs_t
		if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
			t.Skip("no tmpfs at /dev/shm")
		}
		d, err := os.MkdirTemp("/dev/shm", "zfs-serve-test")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		check(t, filepath.Join(d, "f"), true)
	})
	t.Run("fuse", func(t *testing.T) {
		bindfs, err := exec.LookPath("bindfs")
		if err != nil || os.Geteuid() != 0 {
			t.Skip("needs bindfs (a FUSE file system) and root")
		}
		src, mnt := t.TempDir(), t.TempDir()
		if out, err := exec.Command(bindfs, src, mnt).CombinedOutput(); err != nil {
			t.Skipf("bindfs: %v: %s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", mnt, err, out)
			}
		})
		p := filepath.Join(mnt, "probe")
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = unix.Preadv2(int(f.Fd()), [][]byte{make([]byte, 1)}, 0, unix.RWF_NOWAIT)
		f.Close()
		if err != unix.EOPNOTSUPP {
			t.Skipf("FUSE reads without waiting on this kernel (RWF_NOWAIT: %v)", err)
		}
		check(t, filepath.Join(mnt, "f"), false)
	})
}
