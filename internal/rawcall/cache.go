package rawcall

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

var pageSize = int64(os.Getpagesize())

// cachestatOff is set by ProbeCachestat when cachestat(2) is missing
// (ENOSYS: a kernel before 6.5) or forbidden (EPERM: a seccomp filter that
// does not know it; the packaged unit allows it by name). Every sendfile
// then takes the scheduler's path, as before raw calls.
var cachestatOff atomic.Bool

// ProbeCachestat asks the kernel for cachestat(2) on no file: EBADF means
// the call exists and is allowed. Any other answer turns cachestat off for
// the process (Resident then says false without asking) and is returned.
func ProbeCachestat() error {
	var r unix.CachestatRange
	var st unix.Cachestat_t
	bad := -1
	_, _, e := unix.RawSyscall6(unix.SYS_CACHESTAT, uintptr(bad), uintptr(unsafe.Pointer(&r)), uintptr(unsafe.Pointer(&st)), 0, 0, 0)
	if e == unix.EBADF {
		return nil
	}
	cachestatOff.Store(true)
	if e == 0 {
		return errors.New("cachestat(2) accepted an invalid descriptor")
	}
	return fmt.Errorf("cachestat(2): %w", e)
}

// Resident reports whether every page of fd's range [off, off+n) is in the
// page cache, so that sendfile from it reads no disk. It errs towards
// false: a range past the end of the file, an error, or a file system
// without cachestat (EOPNOTSUPP: hugetlbfs) all say "not resident". So
// does a file the worker neither owns nor may write: recent kernels
// answer EPERM for it (the 2025 fix "cachestat: fix page cache statistics
// permission checking"). That EPERM is about the file, not the call (the
// probe found out about seccomp), so it leaves cachestat on for others.
func Resident(fd int, off int64, n int) bool {
	return cached(fd, off, n) && readable(fd, off+int64(n)-1)
}

// cached reports whether cachestat(2) counts every page of fd's range
// [off, off+n) in the page cache (read or still being read).
func cached(fd int, off int64, n int) bool {
	if n <= 0 || off < 0 || cachestatOff.Load() {
		return false
	}
	r := unix.CachestatRange{Off: uint64(off), Len: uint64(n)}
	var st unix.Cachestat_t
	_, _, e := unix.RawSyscall6(unix.SYS_CACHESTAT, uintptr(fd), uintptr(unsafe.Pointer(&r)), uintptr(unsafe.Pointer(&st)), 0, 0, 0)
	if e != 0 {
		return false
	}
	first := off / pageSize
	last := (off + int64(n) - 1) / pageSize
	return st.Cache >= uint64(last-first+1)
}

// readable reports whether the byte of fd at off can be read without
// waiting for the disk. cachestat counts a page that read-ahead has put in
// the cache while its read is still under way, and a sendfile that meets
// such a page waits for the disk (measured: 2-3 ms here, a few chunks of
// every uncached 64 MiB file sent in sequence). Read-ahead runs ahead of a
// sequential reader, so a read in flight in a chunk shows in its last
// page: that one is asked with preadv2(RWF_NOWAIT), which answers EAGAIN
// for a page not up to date instead of waiting. (Pages in the middle are
// not asked: reads complete in order often enough.)
//
// A file system without RWF_NOWAIT (EOPNOTSUPP) may wait whatever its
// cache holds: NFS's sendfile first asks the server whether the file
// changed once its attributes are a few seconds old (a hard mount whose
// server is gone: for ever), FUSE asks its daemon. Only memory file
// systems, which read no disk, are taken at cachestat's word.
func readable(fd int, off int64) bool {
	var b [1]byte
	iov := unix.Iovec{Base: &b[0], Len: 1}
	r, _, e := unix.RawSyscall6(unix.SYS_PREADV2, uintptr(fd), uintptr(unsafe.Pointer(&iov)), 1, uintptr(off), 0, unix.RWF_NOWAIT)
	switch e {
	case 0:
		return r == 1
	case unix.EOPNOTSUPP:
		var st unix.Statfs_t
		if _, _, e := unix.RawSyscall(unix.SYS_FSTATFS, uintptr(fd), uintptr(unsafe.Pointer(&st)), 0); e != 0 {
			return false
		}
		return st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC
	}
	return false
}
