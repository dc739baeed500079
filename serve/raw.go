package serve

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket calls that cannot sleep go to the kernel with syscall.RawSyscall,
// without telling the Go scheduler (entersyscall/exitsyscall). A worker
// runs one P (daemon/worker.go setProcs); when a call tells the scheduler
// and stays in the kernel for a sysmon tick (20 µs: a 512 KiB sendfile
// over loopback runs the receiver's side inline and takes ~150 µs), sysmon
// hands the P to another thread, which wakes, finds nothing to run and
// sleeps again, and sysmon itself keeps waking every 20 µs while that
// happens. Per 1 GiB sent that was ~1,700 context switches and ~1,500
// nanosleeps (docs: bench/findings.md "Raw system calls").
//
// A raw call holds the worker's P until it returns, so it is used only
// where the kernel cannot sleep for long: reads and sends on the
// connection's non-blocking socket from the worker's own memory or from a
// pipe (splice mode's second half), and
// sendfile of a range that cachestat(2) says is in the page cache and
// whose last page is up to date (resident). A send
// from a file mapping (mmap mode) may fault pages in from disk, and a
// sendfile of pages not cached reads the disk: both take the scheduler's
// path, so that other connections keep being served while the disk works.

// rawRead is read(2) on a non-blocking socket.
func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawSendmsg is sendmsg(2) of msg on a non-blocking socket; flags must
// include MSG_DONTWAIT.
func rawSendmsg(fd int, msg *unix.Msghdr, flags int) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(msg)), uintptr(flags))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawPeek reports whether a byte waits in the non-blocking socket fd.
func rawPeek(fd int) bool {
	var b [1]byte
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return e == 0 && n > 0
}

// rawShutdown is shutdown(2) of a socket, which queues a FIN and never
// waits.
func rawShutdown(fd, how int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0)
	if e != 0 {
		return e
	}
	return nil
}

// rawClose is close(2) of a socket, which without SO_LINGER never waits.
func rawClose(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// rawSendfile is sendfile(2) to a non-blocking socket from a range of in
// that is in the page cache (see resident).
func rawSendfile(out, in int, off *int64, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDFILE, uintptr(out), uintptr(in), uintptr(unsafe.Pointer(off)), uintptr(n), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// rawSplice is splice(2) from a pipe holding file pages to a non-blocking
// socket, with SPLICE_F_NONBLOCK in flags.
func rawSplice(pipe, sock, n, flags int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(pipe), 0, uintptr(sock), 0, uintptr(n), uintptr(flags))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// cachestatOff is set by probeCachestat when cachestat(2) is missing
// (ENOSYS: a kernel before 6.5) or forbidden (EPERM: a seccomp filter that
// does not know it; the packaged unit allows it by name). Every sendfile
// then takes the scheduler's path, as before raw calls.
var cachestatOff atomic.Bool

// probeCachestat asks the kernel for cachestat(2) on no file: EBADF means
// the call exists and is allowed. Any other answer turns cachestat off for
// the process and is returned.
func probeCachestat() error {
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

// resident reports whether every page of fd's range [off, off+n) is in the
// page cache, so that sendfile from it reads no disk. It errs towards
// false: a range past the end of the file, an error, or a file system
// without cachestat (EOPNOTSUPP: hugetlbfs) all say "not resident". So
// does a file the worker neither owns nor may write: recent kernels
// answer EPERM for it (the 2025 fix "cachestat: fix page cache statistics
// permission checking"). That EPERM is about the file, not the call (the
// probe found out about seccomp), so it leaves cachestat on for others.
func resident(fd int, off int64, n int) bool {
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
	if st.Cache < uint64(last-first+1) {
		return false
	}
	return readable(fd, off+int64(n)-1)
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

// nonblocking reports whether fd is a descriptor in non-blocking mode.
func nonblocking(fd int) bool {
	fl, _, e := unix.RawSyscall(unix.SYS_FCNTL, uintptr(fd), unix.F_GETFL, 0)
	return e == 0 && fl&unix.O_NONBLOCK != 0
}
