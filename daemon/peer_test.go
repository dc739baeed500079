package daemon

import (
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// FuzzAddrPortString: the supervisor's allocation-free form of a peer's
// address, which sockaddrString gives for IP peers too, is package net's
// (net.JoinHostPort of net.IP.String), for every IPv4 and IPv6 address
// and port, IPv4-mapped and zoned ones included.
func FuzzAddrPortString(f *testing.F) {
	f.Add([]byte{127, 0, 0, 1}, uint16(39904), uint32(0))
	f.Add([]byte{0, 0, 0, 0}, uint16(0), uint32(0))
	f.Add(netip.MustParseAddr("::1").AsSlice(), uint16(443), uint32(0))
	f.Add(netip.MustParseAddr("::ffff:192.0.2.7").AsSlice(), uint16(65535), uint32(0))
	f.Add(netip.MustParseAddr("::192.0.2.7").AsSlice(), uint16(80), uint32(0))
	f.Add(netip.MustParseAddr("fe80::1").AsSlice(), uint16(8080), uint32(3))
	f.Add(netip.MustParseAddr("2001:db8::1:0:0:1").AsSlice(), uint16(1), uint32(0))
	f.Fuzz(func(t *testing.T, ip []byte, port uint16, zone uint32) {
		var sa syscall.Sockaddr
		var ap netip.AddrPort
		switch len(ip) {
		case 4:
			a := [4]byte(ip)
			sa = &syscall.SockaddrInet4{Addr: a, Port: int(port)}
			ap = netip.AddrPortFrom(netip.AddrFrom4(a), port)
		case 16:
			a := [16]byte(ip)
			sa = &syscall.SockaddrInet6{Addr: a, Port: int(port), ZoneId: zone}
			ap = netip.AddrPortFrom(netip.AddrFrom16(a), port)
		default:
			return
		}
		want := net.JoinHostPort(net.IP(ip).String(), strconv.Itoa(int(port)))
		if got := addrPortString(ap); got != want {
			t.Fatalf("addrPortString(%v) = %q, package net %q", ap, got, want)
		}
		if got := sockaddrString(sa); got != want {
			t.Fatalf("sockaddrString(%#v) = %q, package net %q", sa, got, want)
		}
	})
}

// TestAddrPortStringAllocs: one allocation, the string itself.
func TestAddrPortStringAllocs(t *testing.T) {
	for _, s := range []string{"127.0.0.1:39904", "[2001:db8::1]:443"} {
		ap := netip.MustParseAddrPort(s)
		if n := testing.AllocsPerRun(100, func() { _ = addrPortString(ap) }); n > 1 {
			t.Errorf("%s: %v allocations, want 1", s, n)
		}
	}
}

// TestAcceptPeerUnix: the peer string of each connection in one batch is
// its own, as getpeername gives it, when the dispatcher's raw sockaddr
// is reused: a unix client bound to no name, or to a shorter abstract
// one, after a longer name (the kernel writes only the address's length
// into the buffer, and an abstract name has no terminating NUL).
func TestAcceptPeerUnix(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var lfd int
	sc, _ := ln.(syscall.Conn).SyscallConn()
	sc.Control(func(fd uintptr) { lfd = int(fd) })
	long := filepath.Join(dir, "a-rather-long-client-socket-name")
	for _, local := range []string{long, "", "@zfs-serve-peer-test-long-abstract", "@zfs-p", long + "2", "@zfs-q"} {
		var laddr net.Addr
		if local != "" {
			laddr = &net.UnixAddr{Name: local, Net: "unix"}
		}
		d := net.Dialer{LocalAddr: laddr}
		cl, err := d.Dial("unix", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
	}
	d := &dispatcher{}
	var fds []int
	for deadline := time.Now().Add(10 * time.Second); len(fds) < 6 && time.Now().Before(deadline); {
		if err := d.accept(lfd); err != nil {
			t.Fatal(err)
		}
		for i, fd := range d.fds {
			defer syscall.Close(fd)
			fds = append(fds, fd)
			sa, err := syscall.Getpeername(fd)
			if err != nil {
				t.Fatal(err)
			}
			want := sockaddrString(sa)
			if d.peers[i] != want {
				t.Errorf("connection %d: peer %q, getpeername %q", len(fds), d.peers[i], want)
			}
		}
	}
	if len(fds) != 6 {
		t.Fatalf("accepted %d connections, want 6", len(fds))
	}
}
