// Package rawcall makes the system calls of zfs-serve's hot paths with
// syscall.RawSyscall, without telling the Go scheduler, where the kernel
// cannot sleep for long.
//
// An ordinary system call (syscall.Syscall) tells the scheduler it is in
// the kernel. If it is still there at the runtime's sysmon thread's next
// tick (20 µs), sysmon hands the P to another thread, which wakes, finds
// nothing to run and sleeps again; and a call made while sysmon sleeps
// because every P was idle wakes it, after which sysmon polls every 20 µs
// for a millisecond. A worker runs one P: per 1 GiB sent with 512 KiB
// sendfile calls (each ~150 µs over loopback, where the receiver's side
// runs inline) that was ~1,700 context switches, and on a stream of new
// connections sysmon took a fifth of the worker's and the supervisor's
// CPU (bench/findings.md, "Raw system calls").
//
// A raw call holds its P until it returns: no other goroutine of that
// process runs meanwhile (with one P), as in an nginx worker. So only
// calls that cannot wait are raw: reads, sends and accepts on
// non-blocking sockets with MSG_DONTWAIT where it applies, sends from
// the process's own memory or from a pipe, closes of sockets without
// SO_LINGER, epoll_ctl and epoll_wait with no timeout on an epoll set of
// the process's own, and sendfile of a range that Resident finds in the page
// cache. Anything that may wait on a disk (sendfile of pages not cached,
// writes from a file mapping, pread, opens and stats) stays ordinary, so
// that other connections keep being served while the disk works, except
// where the kernel itself refuses to wait: OpenCached and Lookup walk
// with RESOLVE_CACHED on a local file system, PreadNowait reads with
// RWF_NOWAIT pages that cachestat finds cached. (Lookup, the open-file
// cache's revalidation of a path it looked up a second earlier, is raw
// on kernels without RESOLVE_CACHED too.) What the kernel does not
// refuse is the caller's to avoid: an open for reading waits for a
// fanotify permission listener or IMA, a read that updates the file's
// access time writes its inode.
//
// Buffers passed in are used only for the duration of the call. A
// goroutine in a raw call never reaches a safe point, so its stack can
// neither grow nor be moved or shrunk by the garbage collector until the
// call returns.
package rawcall

import (
	"net/netip"
	"slices"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Recv reads from a socket without waiting: recvfrom(2) with
// MSG_DONTWAIT and no address. It is read(2) by a shorter way through the
// kernel (no file-position lock, no vfs_read): 3.37 against 3.51 µs for a
// 150-byte request on this box's loopback (bench/findings.md).
func Recv(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Sendmsg is sendmsg(2) of msg on a non-blocking socket; flags must
// include MSG_DONTWAIT.
func Sendmsg(fd int, msg *unix.Msghdr, flags int) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(msg)), uintptr(flags))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// RecvmsgHdr is recvmsg(2) into msg, which the caller has pointed at its
// buffers (and keeps, so that they are not reallocated per call), on a
// non-blocking socket or with MSG_DONTWAIT in flags. The kernel sets
// msg.Controllen and msg.Flags.
func RecvmsgHdr(fd int, msg *unix.Msghdr, flags int) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(msg)), uintptr(flags))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// Peek reports whether a byte waits in the non-blocking socket fd.
func Peek(fd int) bool {
	var b [1]byte
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return e == 0 && n > 0
}

// Waiting reports whether a read of the non-blocking socket fd would not
// wait: a byte waits, the peer has closed it, or it has an error.
func Waiting(fd int) bool {
	var b [1]byte
	_, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return e != unix.EAGAIN
}

// Shutdown is shutdown(2) of a socket, which queues a FIN and never waits.
func Shutdown(fd, how int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0)
	if e != 0 {
		return e
	}
	return nil
}

// Close is close(2) of a socket, which without SO_LINGER never waits (or
// of another descriptor whose close does not wait either, such as an
// O_PATH one).
func Close(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// CloseAll closes the descriptors of fds that are not negative, as Close
// does, sorting fds in place: each run of two or more consecutive numbers
// goes in one close_range(2), which closes exactly that run because every
// number in it is one of fds. A kernel or filter without close_range
// gets one close(2) each, from its first refusal on. Without flags,
// close_range closes the whole run or, refused, none of it. fds must not
// repeat a descriptor.
func CloseAll(fds []int) {
	closeRuns(fds, func(lo, hi int) {
		if lo < hi && !noCloseRange.Load() {
			_, _, e := unix.RawSyscall(unix.SYS_CLOSE_RANGE, uintptr(lo), uintptr(hi), 0)
			if e == 0 {
				return
			}
			noCloseRange.Store(true)
		}
		for fd := lo; fd <= hi; fd++ {
			Close(fd)
		}
	})
}

// noCloseRange: close_range was refused (a kernel before 5.9, a seccomp
// filter), so CloseAll closes one by one.
var noCloseRange atomic.Bool

// closeRuns sorts fds and calls fn once for each run of consecutive
// numbers in it, negative ones left out.
func closeRuns(fds []int, fn func(lo, hi int)) {
	slices.Sort(fds)
	for i := 0; i < len(fds); {
		j := i + 1
		for j < len(fds) && fds[j] == fds[j-1]+1 {
			j++
		}
		if fds[i] >= 0 {
			fn(fds[i], fds[j-1])
		} else if fds[j-1] >= 0 {
			// A run from -1 up: its non-negative part.
			j = i + 1
		}
		i = j
	}
}

// Splice is splice(2) from a pipe holding file pages to a non-blocking
// socket, with SPLICE_F_NONBLOCK in flags.
func Splice(pipe, sock, n, flags int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(pipe), 0, uintptr(sock), 0, uintptr(n), uintptr(flags))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// Sendfile is sendfile(2) to a non-blocking socket from a range of in
// that Resident found in the page cache.
func Sendfile(out, in int, off *int64, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDFILE, uintptr(out), uintptr(in), uintptr(unsafe.Pointer(off)), uintptr(n), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// Accept4 is syscall.Accept4 on a non-blocking listener, the peer's
// address left raw in rsa: AddrPort reads an IP one without an
// allocation, Sockaddr decodes any as package syscall does. rsa is
// cleared first: the kernel writes only the address's length (2 bytes for
// an unbound unix client, an abstract name without a NUL), and a reused
// rsa would otherwise lend the rest of an earlier peer's name.
func Accept4(fd, flags int, rsa *syscall.RawSockaddrAny) (int, error) {
	*rsa = syscall.RawSockaddrAny{}
	n := uint32(syscall.SizeofSockaddrAny)
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(rsa)), uintptr(unsafe.Pointer(&n)), uintptr(flags), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// AddrPort is the IPv4 or IPv6 address in rsa (an IPv6 one without its
// zone), and false for any other family.
func AddrPort(rsa *syscall.RawSockaddrAny) (netip.AddrPort, bool) {
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		p := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		b := (*[2]byte)(unsafe.Pointer(&p.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(p.Addr), uint16(b[0])<<8|uint16(b[1])), true
	case syscall.AF_INET6:
		p := (*syscall.RawSockaddrInet6)(unsafe.Pointer(rsa))
		b := (*[2]byte)(unsafe.Pointer(&p.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(p.Addr), uint16(b[0])<<8|uint16(b[1])), true
	}
	return netip.AddrPort{}, false
}

// Sockaddr decodes the address in rsa for IPv4, IPv6 and unix sockets
// (others give nil), as package syscall decodes it.
func Sockaddr(rsa *syscall.RawSockaddrAny) syscall.Sockaddr {
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		p := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		b := (*[2]byte)(unsafe.Pointer(&p.Port))
		return &syscall.SockaddrInet4{Addr: p.Addr, Port: int(b[0])<<8 | int(b[1])}
	case syscall.AF_INET6:
		p := (*syscall.RawSockaddrInet6)(unsafe.Pointer(rsa))
		b := (*[2]byte)(unsafe.Pointer(&p.Port))
		return &syscall.SockaddrInet6{Addr: p.Addr, ZoneId: p.Scope_id, Port: int(b[0])<<8 | int(b[1])}
	case syscall.AF_UNIX:
		// A leading NUL (an abstract name, or no name at all) reads as
		// '@', and the name ends at a NUL.
		p := (*syscall.RawSockaddrUnix)(unsafe.Pointer(rsa))
		b := make([]byte, 0, len(p.Path))
		for i, c := range p.Path {
			if c == 0 {
				if i > 0 {
					break
				}
				c = '@'
			}
			b = append(b, byte(c))
		}
		return &syscall.SockaddrUnix{Name: string(b)}
	}
	return nil
}

// Nonblocking reports whether fd is a descriptor in non-blocking mode.
func Nonblocking(fd int) bool {
	fl, _, e := unix.RawSyscall(unix.SYS_FCNTL, uintptr(fd), unix.F_GETFL, 0)
	return e == 0 && fl&unix.O_NONBLOCK != 0
}

// EpollCtl is epoll_ctl(2), which on a set of the process's own never
// waits.
func EpollCtl(ep, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(ep), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// EpollPoll is epoll_pwait(2) with a timeout of 0: the events ready now,
// without waiting.
func EpollPoll(ep int, events []unix.EpollEvent) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
