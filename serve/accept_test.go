package serve

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// listenerCopy returns a TCP listener and a non-blocking duplicate of its
// socket, as a worker gets it from the supervisor.
func listenerCopy(t *testing.T) (net.Listener, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd, derr := -1, error(nil)
	rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if derr != nil {
		t.Fatal(derr)
	}
	return ln, fd
}

func dial(t *testing.T, addr string, n int) {
	t.Helper()
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
}

// TestListenerAcceptBounded: one Accept takes at most max connections of
// those queued, the next takes the rest, and each fd is a non-blocking
// socket.
func TestListenerAcceptBounded(t *testing.T) {
	ln, fd := listenerCopy(t)
	l, err := NewListener(fd, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dial(t, ln.Addr().String(), 5)
	var got []int
	collect := func(fd int, sa syscall.Sockaddr) {
		if _, ok := sa.(*syscall.SockaddrInet4); !ok {
			t.Errorf("peer %T, want IPv4", sa)
		}
		got = append(got, fd)
	}
	if n, err := l.Accept(2, collect); n != 2 || err != nil {
		t.Fatalf("Accept(2) = %d, %v; want 2", n, err)
	}
	for len(got) < 5 {
		if _, err := l.Accept(10, collect); err != nil {
			t.Fatal(err)
		}
	}
	for _, fd := range got {
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil || fl&unix.O_NONBLOCK == 0 {
			t.Errorf("accepted fd %d flags %#x, %v: want O_NONBLOCK", fd, fl, err)
		}
		unix.Close(fd)
	}
	if st := l.Stats(); st.Accepted != 5 {
		t.Errorf("stats %+v, want 5 accepted", st)
	}
}

// TestListenerCloseStopsAccept: Close ends an Accept that waits for a
// connection, and every later one, with ErrListenerClosed, and leaves the
// socket itself open (another process may hold it).
func TestListenerCloseStopsAccept(t *testing.T) {
	ln, fd := listenerCopy(t)
	l, err := NewListener(fd, "test")
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := l.Accept(1, func(fd int, _ syscall.Sockaddr) { unix.Close(fd) })
		res <- err
	}()
	l.Close()
	if err := <-res; !errors.Is(err, ErrListenerClosed) {
		t.Errorf("waiting Accept after Close: %v, want ErrListenerClosed", err)
	}
	if n, err := l.Accept(1, nil); n != 0 || !errors.Is(err, ErrListenerClosed) {
		t.Errorf("Accept after Close = %d, %v", n, err)
	}
	dial(t, ln.Addr().String(), 1)
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("the socket closed with its copy: %v", err)
	}
	c.Close()
}

// TestNewListenerBlocking: a blocking socket is refused (and closed): it
// would stall the accept loop's thread.
func TestNewListenerBlocking(t *testing.T) {
	_, fd := listenerCopy(t)
	if err := unix.SetNonblock(fd, false); err != nil {
		t.Fatal(err)
	}
	if _, err := NewListener(fd, "test"); err == nil {
		t.Fatal("a blocking socket was accepted")
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("the refused fd is still open: %v", err)
	}
}

// TestListenerAcceptLimited: AcceptLimited takes a slot before each
// accept4, stops without waiting when take refuses (the rest stays
// queued), and gives back the slot of an accept4 that found nothing.
func TestListenerAcceptLimited(t *testing.T) {
	ln, fd := listenerCopy(t)
	l, err := NewListener(fd, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dial(t, ln.Addr().String(), 3)
	slots, taken, put := 2, 0, 0
	take := func() bool {
		if taken == slots {
			return false
		}
		taken++
		return true
	}
	give := func() { taken--; put++ }
	var fds []int
	collect := func(fd int, _ syscall.Sockaddr) { fds = append(fds, fd) }
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	if n, err := l.AcceptLimited(64, take, give, collect); n != 2 || err != nil || put != 0 {
		t.Fatalf("AcceptLimited with 2 slots = %d, %v (%d slots given back); want 2", n, err, put)
	}
	slots = 10
	for len(fds) < 3 {
		if _, err := l.AcceptLimited(64, take, give, collect); err != nil {
			t.Fatal(err)
		}
	}
	if taken != 3 || put == 0 {
		t.Fatalf("%d slots held for 3 connections, %d given back; want 3 and the empty accepts' back", taken, put)
	}
}
