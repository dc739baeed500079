package daemon

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The supervisor's accept loop and its closes of handed-off connections go
// to the kernel with RawSyscall, without telling the Go scheduler: accept4
// on a non-blocking listener and close of a socket without SO_LINGER
// cannot sleep. An ordinary system call made while the runtime's sysmon
// sleeps wakes it (entersyscall), and a woken sysmon polls every 20 µs
// for a millisecond: on a stream of new connections that was a fifth of
// the supervisor's CPU (serve/raw.go tells the workers' side).

// rawAccept4 is syscall.Accept4 without the scheduler; the address is
// decoded for IPv4, IPv6 and unix sockets, the families the supervisor
// listens on (others give a nil Sockaddr).
func rawAccept4(fd, flags int) (int, syscall.Sockaddr, error) {
	var rsa syscall.RawSockaddrAny
	n := uint32(syscall.SizeofSockaddrAny)
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)), uintptr(flags), 0, 0)
	if e != 0 {
		return -1, nil, e
	}
	return int(r), decodeSockaddr(&rsa), nil
}

func decodeSockaddr(rsa *syscall.RawSockaddrAny) syscall.Sockaddr {
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		p := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		sa := &syscall.SockaddrInet4{Addr: p.Addr}
		b := (*[2]byte)(unsafe.Pointer(&p.Port))
		sa.Port = int(b[0])<<8 | int(b[1])
		return sa
	case syscall.AF_INET6:
		p := (*syscall.RawSockaddrInet6)(unsafe.Pointer(rsa))
		sa := &syscall.SockaddrInet6{Addr: p.Addr, ZoneId: p.Scope_id}
		b := (*[2]byte)(unsafe.Pointer(&p.Port))
		sa.Port = int(b[0])<<8 | int(b[1])
		return sa
	case syscall.AF_UNIX:
		// As package syscall decodes it: a leading NUL (an abstract name,
		// or no name at all) reads as '@', and the name ends at a NUL.
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

// rawCloseSocket is close(2) of a socket descriptor.
func rawCloseSocket(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}
