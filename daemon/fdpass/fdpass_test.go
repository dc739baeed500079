package fdpass

import (
	"errors"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// connPair is a connected channel, both ends wrapped, closed at cleanup.
func connPair(t *testing.T) (a, b *net.UnixConn) {
	t.Helper()
	a, remote, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	b, err = FileConn(remote, "b")
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestSendRecv(t *testing.T) {
	a, b := connPair(t)

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := Send(a, []byte("hello"), int(r.Fd()), int(w.Fd())); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, 64), make([]byte, OOBSpace)
	n, fds, err := Recv(b, buf, oob)
	if err != nil || string(buf[:n]) != "hello" || len(fds) != 2 {
		t.Fatalf("Recv = %q, %v, %v", buf[:n], fds, err)
	}
	for _, fd := range fds {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("received fd %d is not close-on-exec (flags %#x, %v)", fd, flags, err)
		}
	}
	// The received write end works: data written to it comes out of r.
	if _, err := unix.Write(fds[1], []byte("x")); err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	if _, err := r.Read(one); err != nil || one[0] != 'x' {
		t.Fatalf("read through passed fd: %q %v", one, err)
	}
	closeAll(fds)

	// Peer close reads as a zero-length message.
	a.Close()
	n, fds, err = Recv(b, buf, oob)
	if n != 0 || fds != nil || err != nil {
		t.Fatalf("after close: %d %v %v", n, fds, err)
	}
}

func TestRecvTruncatedClosesFDs(t *testing.T) {
	a, b := connPair(t)
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fds := make([]int, 8)
	for i := range fds {
		fds[i] = int(f.Fd())
	}
	before := openFDs(t)
	if err := Send(a, []byte("msg"), fds...); err != nil {
		t.Fatal(err)
	}
	// Room for only two fds: the kernel delivers those and sets MSG_CTRUNC.
	buf := make([]byte, 8)
	n, got, err := Recv(b, buf, make([]byte, unix.CmsgSpace(2*4)))
	if !errors.Is(err, ErrTruncated) || got != nil {
		t.Fatalf("Recv = %v, %v; want ErrTruncated", got, err)
	}
	// The payload survives, so the receiver can report what it lost.
	if string(buf[:n]) != "msg" {
		t.Fatalf("payload %q with ErrTruncated, want %q", buf[:n], "msg")
	}
	if after := openFDs(t); after != before {
		t.Fatalf("fd count %d -> %d: truncated fds leaked", before, after)
	}
}

func TestRecvTooLong(t *testing.T) {
	a, b := connPair(t)
	if err := Send(a, []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if err := Send(a, []byte("next")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, _, err := Recv(b, buf, make([]byte, OOBSpace)); !errors.Is(err, ErrTooLong) {
		t.Fatalf("Recv of a 10-byte message into 4 bytes: %v, want ErrTooLong", err)
	}
	// The stream stays in step: the next message is whole.
	n, _, err := Recv(b, buf, make([]byte, OOBSpace))
	if err != nil || string(buf[:n]) != "next" {
		t.Fatalf("after a too-long message: %q, %v", buf[:n], err)
	}
}

// TestSenders: Send and TrySend carry a message and its fds alike, and
// leave the caller's fds open.
func TestSenders(t *testing.T) {
	for _, tt := range []struct {
		name string
		send func(*net.UnixConn, []byte, ...int) error
	}{{"Send", Send}, {"TrySend", TrySend}} {
		t.Run(tt.name, func(t *testing.T) {
			a, b := connPair(t)
			f, err := os.Open("/dev/null")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := tt.send(a, []byte("m"), int(f.Fd())); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 8)
			n, fds, err := Recv(b, buf, make([]byte, OOBSpace))
			if err != nil || string(buf[:n]) != "m" || len(fds) != 1 {
				t.Fatalf("Recv = %q, %v, %v", buf[:n], fds, err)
			}
			closeAll(fds)
			if _, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil {
				t.Errorf("the sender's fd was closed: %v", err)
			}
			if err := tt.send(a, []byte("m"), make([]int, MaxFDs+1)...); err == nil {
				t.Error("sent more than MaxFDs")
			}
		})
	}
}

// TestTrySendFullQueue: with the peer's queue full, TrySend fails at once
// with EAGAIN and keeps the caller's fds open; Send waits for room and
// then sends, in order.
func TestTrySendFullQueue(t *testing.T) {
	a, b := connPair(t)
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sent := 0
	for ; sent < 1<<20; sent++ {
		err = TrySend(a, []byte("fill"))
		if err != nil {
			break
		}
	}
	if !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("TrySend to a full queue after %d messages: %v, want EAGAIN", sent, err)
	}
	if err := TrySend(a, []byte("fd"), int(f.Fd())); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("TrySend with an fd to a full queue: %v, want EAGAIN", err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil {
		t.Fatalf("a failed TrySend closed the caller's fd: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- Send(a, []byte("last")) }()
	buf, oob := make([]byte, 8), make([]byte, OOBSpace)
	for i := range sent {
		if n, _, err := Recv(b, buf, oob); err != nil || string(buf[:n]) != "fill" {
			t.Fatalf("message %d: %q, %v", i, buf[:n], err)
		}
	}
	if n, _, err := Recv(b, buf, oob); err != nil || string(buf[:n]) != "last" {
		t.Fatalf("after the queue drained: %q, %v, want the waiting Send's message", buf[:n], err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Send: %v", err)
	}
}
