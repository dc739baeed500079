package fdpass

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The channel's sendmsg and recvmsg go to the kernel with RawSyscall,
// without telling the Go scheduler: on a unix socket with MSG_DONTWAIT
// they cannot sleep. An ordinary system call made while the runtime's
// sysmon thread sleeps because every P was idle wakes it (entersyscall),
// and a woken sysmon then polls every 20 µs for a millisecond: in a worker
// whose new connection arrives on this channel, that was a fifth of its
// CPU (serve/raw.go has the rest of the story).

// rawSendmsg is sendmsg(2) of one buffer and its control message.
func rawSendmsg(fd int, p, oob []byte, flags int) error {
	var iov unix.Iovec
	var msg unix.Msghdr
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
		msg.Iov = &iov
		msg.SetIovlen(1)
	}
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	if e != 0 {
		return e
	}
	return nil
}

// rawRecvmsg is recvmsg(2) into one buffer and oob.
func rawRecvmsg(fd int, p, oob []byte, flags int) (n, oobn, recvflags int, err error) {
	var iov unix.Iovec
	var msg unix.Msghdr
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
		msg.Iov = &iov
		msg.SetIovlen(1)
	}
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	if e != 0 {
		return 0, 0, 0, e
	}
	return int(r), int(msg.Controllen), int(msg.Flags), nil
}
