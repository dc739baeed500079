package daemon

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpListen is TCP_LISTEN of the kernel's TCP states (include/net/tcp_states.h).
const tcpListen = 10

// listeningCookies lists the TCP sockets listening on exactly ap (same
// address family, address and port) in this network namespace, by socket
// cookie, with the kernel's sock_diag interface (NETLINK_SOCK_DIAG, no
// privilege needed). The kernel filters listeners by port, so the answer
// is small however many connections the machine has.
func listeningCookies(ap netip.AddrPort) ([]uint64, error) {
	family := uint8(unix.AF_INET)
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	// struct nlmsghdr, then struct inet_diag_req_v2: family, protocol,
	// ext, pad, states, then struct inet_diag_sockid (sport first, in
	// network order; the rest zero).
	const reqLen = unix.SizeofNlMsghdr + 56
	req := make([]byte, reqLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], reqLen)
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1)
	r := req[unix.SizeofNlMsghdr:]
	r[0], r[1] = family, unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 1<<tcpListen)
	binary.BigEndian.PutUint16(r[8:], ap.Port())
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	want := ap.Addr().Unmap().As16()
	var out []uint64
	buf := make([]byte, 32<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(ne.Uint32(m.Data)); e != 0 {
						return nil, fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				return nil, fmt.Errorf("sock_diag: error message")
			}
			// struct inet_diag_msg: family, state, timer, retrans, then
			// the sockid: sport, dport, src[16], dst[16], if, cookie[2].
			d := m.Data
			if len(d) < 4+48 || d[0] != family {
				continue
			}
			var src [16]byte
			if family == unix.AF_INET {
				src = netip.AddrFrom4([4]byte(d[8:12])).As16()
			} else {
				src = [16]byte(d[8:24])
			}
			if binary.BigEndian.Uint16(d[4:]) != ap.Port() || src != want {
				continue
			}
			out = append(out, uint64(ne.Uint32(d[44:]))|uint64(ne.Uint32(d[48:]))<<32)
		}
	}
}

// socketCookie is the kernel's cookie of the socket c, as sock_diag
// reports it.
func socketCookie(c syscall.Conn) (uint64, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cookie uint64
	var serr error
	if err := rc.Control(func(fd uintptr) { cookie, serr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE) }); err != nil {
		return 0, err
	}
	return cookie, serr
}
