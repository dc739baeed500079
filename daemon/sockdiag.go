package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpListen is TCP_LISTEN of the kernel's TCP states (include/net/tcp_states.h).
const tcpListen = 10

// listeningCookies lists, by socket cookie, the TCP sockets of this
// user in this network namespace that listen on ap's port at ap's
// address or at a wildcard one (0.0.0.0 or ::, which Go binds for
// "0.0.0.0" too): every socket of a zfs-serve that a connection to ap
// could reach (another user's could be a v6-only one that no IPv4
// client reaches, and cannot be a zfs-serve sharing our port). It asks the kernel's sock_diag
// interface (NETLINK_SOCK_DIAG, no privilege needed) for each address
// family; the kernel filters listeners by port, so the answers are small
// however many connections the machine has.
func listeningCookies(ap netip.AddrPort) ([]uint64, error) {
	var out []uint64
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		cs, err := listeningFamily(family, ap)
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
	}
	return out, nil
}

// listeningFamily is listeningCookies for the sockets of one family.
func listeningFamily(family uint8, ap netip.AddrPort) ([]uint64, error) {
	want, uid := ap.Addr().Unmap(), os.Geteuid()
	var out []uint64
	err := diagDump(family, 1<<tcpListen, ap.Port(), func(src netip.Addr, d []byte) {
		if int(binary.NativeEndian.Uint32(d[64:])) != uid || src != want && !src.IsUnspecified() {
			return
		}
		out = append(out, uint64(binary.NativeEndian.Uint32(d[44:]))|uint64(binary.NativeEndian.Uint32(d[48:]))<<32)
	})
	return out, err
}

// TCP states of connections whose handshake a listener has not finished
// (include/net/tcp_states.h): TCP_SYN_RECV, and TCP_NEW_SYN_RECV, the
// state of the request sockets that hold them.
const (
	tcpSynRecv    = 3
	tcpNewSynRecv = 12
)

// handshakesWaiting counts the connections to ap's port, at ap's address
// (any address if ap's is a wildcard one), that no listener has queued for
// accept yet: a handshake not yet done, or done and held by
// TCP_DEFER_ACCEPT until the first bytes come. sock_diag reports them
// without an owner (uid 0, no inode), so those of another socket in the
// port's SO_REUSEPORT group count too.
func handshakesWaiting(ap netip.AddrPort) (int, error) {
	want := ap.Addr().Unmap()
	n := 0
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		err := diagDump(family, 1<<tcpSynRecv|1<<tcpNewSynRecv, ap.Port(), func(src netip.Addr, _ []byte) {
			if want.IsUnspecified() || src == want {
				n++
			}
		})
		if err != nil {
			return 0, err
		}
	}
	return n, nil
}

// diagDump asks sock_diag (NETLINK_SOCK_DIAG, no privilege needed) for
// the TCP sockets of family in states (a mask of 1<<state) whose local
// port is port, and calls fn with each one's local address and its
// struct inet_diag_msg (at least 72 bytes).
func diagDump(family uint8, states uint32, port uint16, fn func(src netip.Addr, msg []byte)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("sock_diag: %w", err)
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
	ne.PutUint32(r[4:], states)
	binary.BigEndian.PutUint16(r[8:], port)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	buf := make([]byte, 32<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("sock_diag: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(ne.Uint32(m.Data)); e != 0 {
						return fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				return errors.New("sock_diag: error message")
			}
			// struct inet_diag_msg: family, state, timer, retrans, the
			// sockid (sport, dport, src[16], dst[16], if, cookie[2]),
			// expires, rqueue, wqueue, uid, inode.
			d := m.Data
			if len(d) < 72 || d[0] != family || binary.BigEndian.Uint16(d[4:]) != port {
				continue
			}
			var src netip.Addr
			if family == unix.AF_INET {
				src = netip.AddrFrom4([4]byte(d[8:12]))
			} else {
				src = netip.AddrFrom16([16]byte(d[8:24])).Unmap()
			}
			fn(src, d)
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
