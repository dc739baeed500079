package rawcall

import (
	"net"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"
)

// TestAccept4: the raw accept decodes the peer's address as the kernel
// reports it (getpeername through package syscall), for every family the
// supervisor listens on, unix clients bound to a path, to an abstract
// name, or not at all.
func TestAccept4(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ network, addr, local string }{
		{"tcp4", "127.0.0.1:0", ""},
		{"tcp6", "[::1]:0", ""},
		{"unix", filepath.Join(dir, "s1"), ""},
		{"unix", filepath.Join(dir, "s2"), filepath.Join(dir, "client")},
		{"unix", filepath.Join(dir, "s3"), "@zfs-serve-raw-accept-client"},
	} {
		t.Run(c.network+" "+c.local, func(t *testing.T) {
			ln, err := net.Listen(c.network, c.addr)
			if err != nil {
				t.Skipf("listen: %v", err)
			}
			defer ln.Close()
			var lfd int
			sc, _ := ln.(syscall.Conn).SyscallConn()
			sc.Control(func(fd uintptr) { lfd = int(fd) })
			var laddr net.Addr
			if c.local != "" {
				laddr = &net.UnixAddr{Name: c.local, Net: "unix"}
			}
			d := net.Dialer{LocalAddr: laddr}
			cl, err := d.Dial(c.network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			var nfd int
			var rsa syscall.RawSockaddrAny
			for deadline := time.Now().Add(10 * time.Second); ; {
				nfd, err = Accept4(lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, &rsa)
				if err != syscall.EAGAIN || time.Now().After(deadline) {
					break
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			defer syscall.Close(nfd)
			sa := Sockaddr(&rsa)
			want, err := syscall.Getpeername(nfd)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(sa, want) {
				t.Errorf("rawAccept4 gave %#v, getpeername %#v", sa, want)
			}
			ap, ok := AddrPort(&rsa)
			switch w := want.(type) {
			case *syscall.SockaddrInet4:
				if !ok || ap.Addr().As4() != w.Addr || int(ap.Port()) != w.Port {
					t.Errorf("AddrPort gave %v %v, getpeername %#v", ap, ok, want)
				}
			case *syscall.SockaddrInet6:
				if !ok || ap.Addr().As16() != w.Addr || int(ap.Port()) != w.Port {
					t.Errorf("AddrPort gave %v %v, getpeername %#v", ap, ok, want)
				}
			default:
				if ok {
					t.Errorf("AddrPort gave %v for %#v", ap, want)
				}
			}
			if u, ok := sa.(*syscall.SockaddrUnix); c.local != "" && (!ok || u.Name != c.local) {
				t.Errorf("client %q, got %#v", c.local, sa)
			}
		})
	}
}
