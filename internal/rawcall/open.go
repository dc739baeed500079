package rawcall

import (
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ResolveCached is openat2's RESOLVE_CACHED (Linux 5.12; not in x/sys/unix
// yet): the walk uses only the kernel's caches, and fails with EAGAIN
// where it would have to read or revalidate.
const ResolveCached = 0x20

// OpenCached opens for reading the regular file that path names beneath
// dirfd, if nothing on the way waits: openat2(2) of path with how, which
// must ask for O_PATH and ResolveCached (so a walk that would read a
// directory block, or revalidate a dentry with a server, fails at once
// with EAGAIN instead of waiting), fstat(2) of what it found into st, and,
// only if that is a regular file, an open of it with flags through
// /proc/self/fd (procFD; the inode the lookup found, whatever happens to
// path meanwhile: a device or a FIFO swapped in is never opened for
// reading).
// It is raw: use it only on a local file system (Local), with
// RESOLVE_NO_XDEV in how, so that opening the file reads nothing either.
// Any error (EAGAIN, EXDEV for a symlink out, ENOTSUP for what is not a
// regular file, st then holding its fstat...) is for the caller to take
// the ordinary path, which gives each its proper answer; nothing is left
// open then. ENOENT and ENOTDIR are the exception (Missing): they come
// from the walk alone.
func OpenCached(dirfd int, path string, how *unix.OpenHow, flags int, st *unix.Stat_t) (int, error) {
	pfd, err := lookup(dirfd, path, how, st)
	if err != nil {
		return -1, err
	}
	defer Close(pfd)
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return -1, unix.ENOTSUP
	}
	proc := procFD()
	if proc < 0 {
		return -1, unix.ENOSYS // no /proc: not ENOENT, which says the name is missing
	}
	var name [16]byte
	b := strconv.AppendInt(name[:0], int64(pfd), 10)
	_ = append(b, 0) // within name: at most 10 digits + NUL
	fd, _, e := unix.RawSyscall6(unix.SYS_OPENAT, uintptr(proc), uintptr(unsafe.Pointer(&name[0])), uintptr(flags), 0, 0, 0)
	if Missing(e) {
		// The reopen of a descriptor held open cannot find it missing;
		// whatever this is, it is not the walk's answer.
		return -1, unix.ESTALE
	}
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// Missing reports whether err, from OpenCached, says that the name does
// not exist: a component is missing (ENOENT: a negative dentry, or a
// dangling symlink) or is not a directory (ENOTDIR). A walk limited to the
// caches (ResolveCached) fails with EAGAIN wherever it would have to ask
// the file system, so these are the cached dentries' answer, the same the
// ordinary walk gives (Local file systems only: their dentries need no
// revalidation, and RESOLVE_NO_XDEV stops a walk before another mount).
func Missing(err error) bool {
	return err == unix.ENOENT || err == unix.ENOTDIR
}

// OpenProc opens this process's /proc/self/fd for OpenCached's reopens,
// once (OpenCached does at its first call otherwise); a worker calls it
// as it starts, so that the descriptor is there from the start. It
// reports whether /proc is there.
func OpenProc() bool { return procFD() >= 0 }

// procFD is this process's /proc/self/fd, opened (the ordinary way) at
// the first call, for OpenCached's reopens: a raw open of a name beneath
// it walks procfs alone, not the process's root directory and the file
// systems on the way to /proc (a network or FUSE root, say, or another
// mount over /proc). -1: /proc is not there.
var procFD = sync.OnceValue(func() int {
	fd, err := unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
})

// PreadNowait reads p at off from the page cache, never from the disk:
// only if cachestat(2) finds every page of the range cached, then with
// preadv2(2) RWF_NOWAIT. (RWF_NOWAIT alone is not enough: where a page
// is missing, the kernel starts read-ahead, allocating the pages, mapping
// the blocks and submitting their reads, which may wait for a request
// slot or an I/O throttle, all before it answers EAGAIN.) Where a page is
// not cached, or cachestat is missing, it fails with EAGAIN (or reads
// short), for the caller to read the rest the ordinary way. At or past
// the end of the file it reads 0 bytes. fd's file must be on a local file
// system (Local): its fstat, which bounds the range asked of cachestat,
// is raw too.
func PreadNowait(fd int, p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var st unix.Stat_t
	if err := Fstat(fd, &st); err != nil {
		return 0, err
	}
	if off >= st.Size {
		return 0, nil
	}
	if int64(len(p)) > st.Size-off {
		p = p[:st.Size-off]
	}
	if !cached(fd, off, len(p)) {
		return 0, unix.EAGAIN
	}
	iov := unix.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	lo, hi := uintptr(off), uintptr(uint64(off)>>(8*unsafe.Sizeof(uintptr(0))-1)>>1)
	n, _, e := unix.RawSyscall6(unix.SYS_PREADV2, uintptr(fd), uintptr(unsafe.Pointer(&iov)), 1, lo, hi, unix.RWF_NOWAIT)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Fstat is fstat(2) of a descriptor of a file on a local file system
// (Local), whose inode is in memory.
func Fstat(fd int, st *unix.Stat_t) error {
	if _, _, e := unix.RawSyscall(unix.SYS_FSTAT, uintptr(fd), uintptr(unsafe.Pointer(st)), 0); e != 0 {
		return e
	}
	return nil
}

// cString is s NUL-terminated, in buf if it fits (buf must be zeroed and
// live as long as the result is used), else on the heap.
func cString(buf *[256]byte, s string) (*byte, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return nil, unix.EINVAL
		}
	}
	if len(s) < len(buf) {
		copy(buf[:], s) // NUL-terminated by the zeroes after it
		return &buf[0], nil
	}
	return unix.BytePtrFromString(s)
}
