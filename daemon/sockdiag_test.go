package daemon

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestHandshakesWaiting: a connection that TCP_DEFER_ACCEPT holds (its
// handshake done, nothing sent yet) is counted, at the listener's address
// and at the wildcard one, not at another; once its first bytes queue it
// for accept, it is not.
func TestHandshakesWaiting(t *testing.T) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 5) })
		return serr
	}}
	ln, err := lc.Listen(t.Context(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ap := netip.MustParseAddrPort(ln.Addr().String())
	count := func(ap netip.AddrPort) int {
		t.Helper()
		n, err := handshakesWaiting(ap)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(ap); n != 0 {
		t.Fatalf("%d waiting before any connection", n)
	}
	c, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, a := range []struct {
		ap   netip.AddrPort
		want int
	}{
		{ap, 1},
		{netip.AddrPortFrom(netip.IPv4Unspecified(), ap.Port()), 1},
		{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), ap.Port()), 0},
	} {
		if n := count(a.ap); n != a.want {
			t.Errorf("%v: %d waiting, want %d", a.ap, n, a.want)
		}
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if n := count(ap); n != 0 {
		t.Fatalf("%d waiting after the connection was accepted", n)
	}
}
