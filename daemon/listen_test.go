package daemon

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/zfs-serve/zfs-serve/config"
)

// socketFile returns a listening socket as an *os.File named name, as
// activation.Files names the fds systemd passes.
func socketFile(t *testing.T, network, addr, name string) *os.File {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	named := os.NewFile(uintptr(fd), name)
	t.Cleanup(func() { named.Close() })
	return named
}

func TestSortSocketsByName(t *testing.T) {
	dir := t.TempDir()
	ctl1 := socketFile(t, "unix", filepath.Join(dir, "c1"), FDNameControl)
	zfs1 := socketFile(t, "tcp", "127.0.0.1:0", FDNameFiles)
	bogus := socketFile(t, "tcp", "127.0.0.1:0", "bogus")
	zfs2 := socketFile(t, "tcp", "127.0.0.1:0", FDNameFiles)
	prx := socketFile(t, "tcp", "127.0.0.1:0", "proxy-lb")
	ctl2 := socketFile(t, "unix", filepath.Join(dir, "c2"), FDNameControl)
	met1 := socketFile(t, "tcp", "127.0.0.1:0", FDNameMetrics)
	met2 := socketFile(t, "tcp", "127.0.0.1:0", FDNameMetrics)
	var logb bytes.Buffer
	a := sortSockets([]*os.File{ctl1, met1, zfs1, bogus, zfs2, prx, ctl2, met2}, slog.New(slog.NewTextHandler(&logb, nil)))

	if len(a.files) != 3 || a.files[0] != zfs1 || a.files[1] != zfs2 || a.files[2] != prx {
		t.Errorf("files = %v, want the two named %q and the one named proxy-lb in order", a.files, FDNameFiles)
	}
	if a.control != ctl1 {
		t.Errorf("control = %v, want the first socket named %q", a.control, FDNameControl)
	}
	if a.metrics != met1 {
		t.Errorf("metrics = %v, want the first socket named %q", a.metrics, FDNameMetrics)
	}
	if err := met2.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("the second metrics socket was not closed (Close: %v)", err)
	}
	if len(a.unknown) != 1 || a.unknown[0] != bogus {
		t.Errorf("unknown = %v, want the one named bogus", a.unknown)
	}
	if err := ctl2.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("the second control socket was not closed (Close: %v)", err)
	}
	if !strings.Contains(logb.String(), "level=ERROR") || !strings.Contains(logb.String(), "more than one socket named control") {
		t.Errorf("no error logged for the second control socket; log:\n%s", logb.String())
	}
}

func TestInheritedSocketsWithoutActivation(t *testing.T) {
	var logb bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logb, nil))

	t.Setenv("LISTEN_FDS", "")
	os.Unsetenv("LISTEN_FDS")
	a := inheritedSockets(log)
	if len(a.files) != 0 || a.control != nil || len(a.unknown) != 0 {
		t.Fatalf("without LISTEN_FDS: got %+v; want nothing", a)
	}
	if logb.Len() != 0 {
		t.Errorf("without LISTEN_FDS nothing should be logged; got:\n%s", logb.String())
	}

	// Variables meant for another process (sd_listen_fds checks
	// LISTEN_PID): ignored with a warning, and unset so that no worker
	// inherits them.
	t.Setenv("LISTEN_FDS", "2")
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDNAMES", "zfs:control")
	a = inheritedSockets(log)
	if len(a.files) != 0 || a.control != nil || len(a.unknown) != 0 {
		t.Fatalf("with LISTEN_PID=1: got %+v; want nothing", a)
	}
	if !strings.Contains(logb.String(), "level=WARN") || !strings.Contains(logb.String(), "LISTEN_FDS is set but passes no socket") {
		t.Errorf("no warning about LISTEN_FDS for another process; log:\n%s", logb.String())
	}
	for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s=%q still set after inheritedSockets", k, v)
		}
	}
}

func TestCanChownTo(t *testing.T) {
	for _, c := range []struct {
		name            string
		euid, egid, gid int
		groups          []int
		want            bool
	}{
		{"root", 0, 0, 100, nil, true},
		{"own group", 1000, 1000, 1000, nil, true},
		{"supplementary group", 1000, 1000, 100, []int{27, 100}, true},
		{"a group it is not in", 1000, 1000, 100, []int{27}, false},
	} {
		if got := canChownTo(c.euid, c.egid, c.groups, c.gid); got != c.want {
			t.Errorf("%s: %v", c.name, got)
		}
	}
}

// TestActivatedProxyListener: a socket-activated listener whose name
// starts with "proxy" requires the PROXY header; one named "zfs" does not.
func TestActivatedProxyListener(t *testing.T) {
	s := &Supervisor{log: slog.New(slog.NewTextHandler(io.Discard, nil)), cfg: config.Default()}
	a := activatedSockets{files: []*os.File{
		socketFile(t, "tcp", "127.0.0.1:0", FDNameFiles),
		socketFile(t, "tcp", "127.0.0.1:0", "proxy"),
		socketFile(t, "tcp", "127.0.0.1:0", "proxy-haproxy"),
	}}
	if err := s.openListeners(a); err != nil {
		t.Fatal(err)
	}
	defer s.closeListeners()
	for i, want := range []bool{false, true, true} {
		if l := s.listeners[i]; l.proxy.Load() != want || !l.activated {
			t.Errorf("listener %d (%s): proxy %v, want %v", i, l.name, l.proxy.Load(), want)
		}
	}
}

func TestTrustedPeer(t *testing.T) {
	nets, err := config.ParseTrusted([]string{"127.0.0.0/8", "10.1.2.3", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	v4 := func(a, b, c, d byte) syscall.Sockaddr {
		return &syscall.SockaddrInet4{Addr: [4]byte{a, b, c, d}, Port: 1}
	}
	v6 := func(s string) syscall.Sockaddr {
		return &syscall.SockaddrInet6{Addr: netip.MustParseAddr(s).As16(), Port: 1}
	}
	for _, tc := range []struct {
		sa   syscall.Sockaddr
		want bool
	}{
		{v4(127, 0, 0, 9), true},
		{v4(10, 1, 2, 3), true},
		{v4(10, 1, 2, 4), false},
		{v4(192, 0, 2, 1), false},
		{v6("::ffff:127.0.0.2"), true}, // IPv4-mapped, on a dual-stack socket
		{v6("2001:db8::5"), true},
		{v6("2001:db9::5"), false},
		{&syscall.SockaddrUnix{Name: "x"}, false},
	} {
		if got := trusted(tc.sa, nets); got != tc.want {
			t.Errorf("trusted(%v) = %v, want %v", tc.sa, got, tc.want)
		}
	}
}

// TestTrustedMappedEntry: a proxy_trusted entry written IPv4-mapped
// ("::ffff:10.1.2.3", as ss shows a peer of a dual-stack socket) names
// that IPv4 balancer, on an IPv4 socket and a dual-stack one alike;
// parsed as an IPv6 prefix it matched nothing (peers are matched
// unmapped), so the balancer was shut out while --check said OK.
func TestTrustedMappedEntry(t *testing.T) {
	nets, err := config.ParseTrusted([]string{"::ffff:10.1.2.3", "::ffff:192.0.2.0/120"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sa   syscall.Sockaddr
		want bool
	}{
		{&syscall.SockaddrInet4{Addr: [4]byte{10, 1, 2, 3}}, true},
		{&syscall.SockaddrInet6{Addr: netip.MustParseAddr("::ffff:10.1.2.3").As16()}, true},
		{&syscall.SockaddrInet4{Addr: [4]byte{192, 0, 2, 77}}, true},
		{&syscall.SockaddrInet4{Addr: [4]byte{10, 1, 2, 4}}, false},
		{&syscall.SockaddrInet4{Addr: [4]byte{192, 0, 3, 1}}, false},
	} {
		if got := trusted(tc.sa, nets); got != tc.want {
			t.Errorf("trusted(%v) = %v, want %v", tc.sa, got, tc.want)
		}
	}
}
