package main

import (
	"bytes"
	"errors"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func newTestRing(t *testing.T) *ring {
	t.Helper()
	r, err := newRing(8, 0)
	skipIfNoUring(t, err)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.close() })
	return r
}

// completions enters once, waiting for want completions, and returns them.
func completions(t *testing.T, r *ring, want uint32) []cqe {
	t.Helper()
	if err := r.enter(want); err != nil {
		t.Fatal(err)
	}
	var got []cqe
	r.reap(func(c cqe) { got = append(got, c) })
	if len(got) != int(want) {
		t.Fatalf("got %d completions, want %d", len(got), want)
	}
	return got
}

// skipIfNoUring skips the test where the kernel or a sandbox refuses
// io_uring (kernel.io_uring_disabled, seccomp).
func skipIfNoUring(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		t.Skip("io_uring refused:", err)
	}
}

func TestRingLayout(t *testing.T) {
	for _, tt := range []struct {
		name      string
		got, want uintptr
	}{
		{"io_uring_params", unsafe.Sizeof(params{}), 120},
		{"io_uring_sqe", unsafe.Sizeof(sqe{}), 64},
		{"io_uring_sqe.user_data", unsafe.Offsetof(sqe{}.userData), 32},
		{"io_uring_sqe.addr3", unsafe.Offsetof(sqe{}.addr3), 48},
		{"io_uring_cqe", unsafe.Sizeof(cqe{}), 16},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}

func TestRingNop(t *testing.T) {
	r := newTestRing(t)
	for i := range 3 { // more than one round, to see head and tail move
		s, err := r.get()
		if err != nil {
			t.Fatal(err)
		}
		s.opcode = opNop
		s.userData = uint64(100 + i)
		c := completions(t, r, 1)[0]
		if c.userData != uint64(100+i) || c.res != 0 {
			t.Fatalf("NOP completion %+v, want user_data %d res 0", c, 100+i)
		}
	}
}

func TestRingFull(t *testing.T) {
	r := newTestRing(t)
	for range r.entries {
		if _, err := r.get(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.get(); err != errRingFull {
		t.Fatalf("get on a full ring: %v, want errRingFull", err)
	}
}

// TestRingSendRecv sends with SEND and SENDMSG and receives with RECV over
// a socketpair, all through the ring.
func TestRingSendRecv(t *testing.T) {
	r := newTestRing(t)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })

	msg := []byte("hello, ring")
	s, _ := r.get()
	s.opcode, s.fd, s.addr, s.len, s.userData = opSend, int32(fds[0]), uint64(uintptr(unsafe.Pointer(&msg[0]))), uint32(len(msg)), 1
	if c := completions(t, r, 1)[0]; c.userData != 1 || c.res != int32(len(msg)) {
		t.Fatalf("SEND completion %+v, want user_data 1 res %d", c, len(msg))
	}

	a, b := []byte("two "), []byte("iovecs")
	iov := []unix.Iovec{{Base: &a[0]}, {Base: &b[0]}}
	iov[0].SetLen(len(a))
	iov[1].SetLen(len(b))
	var m unix.Msghdr
	m.Iov = &iov[0]
	m.SetIovlen(len(iov))
	s, _ = r.get()
	s.opcode, s.fd, s.addr, s.len, s.userData = opSendmsg, int32(fds[0]), uint64(uintptr(unsafe.Pointer(&m))), 1, 2
	s.opFlags = unix.MSG_NOSIGNAL
	if c := completions(t, r, 1)[0]; c.userData != 2 || c.res != int32(len(a)+len(b)) {
		t.Fatalf("SENDMSG completion %+v, want user_data 2 res %d", c, len(a)+len(b))
	}
	runtime.KeepAlive(&m)
	runtime.KeepAlive(iov)

	want := "hello, ringtwo iovecs"
	buf := make([]byte, 64)
	s, _ = r.get()
	s.opcode, s.fd, s.addr, s.len, s.userData = opRecv, int32(fds[1]), uint64(uintptr(unsafe.Pointer(&buf[0]))), uint32(len(buf)), 3
	c := completions(t, r, 1)[0]
	runtime.KeepAlive(buf)
	if c.userData != 3 || c.res != int32(len(want)) || !bytes.Equal(buf[:c.res], []byte(want)) {
		t.Fatalf("RECV completion %+v, %q; want user_data 3, %q", c, buf[:max(c.res, 0)], want)
	}

	// With MSG_DONTWAIT a RECV on an empty socket completes at once with
	// EAGAIN instead of waiting in the kernel: the event loop relies on it.
	s, _ = r.get()
	s.opcode, s.fd, s.addr, s.len, s.userData = opRecv, int32(fds[1]), uint64(uintptr(unsafe.Pointer(&buf[0]))), uint32(len(buf)), 4
	s.opFlags = unix.MSG_DONTWAIT
	if c := completions(t, r, 1)[0]; c.userData != 4 || c.res != -int32(unix.EAGAIN) {
		t.Fatalf("RECV MSG_DONTWAIT on an empty socket: %+v, want res -EAGAIN", c)
	}
	runtime.KeepAlive(buf)
}
