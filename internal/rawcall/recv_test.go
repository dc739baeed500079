package rawcall

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestRecv: Recv returns what is queued, EAGAIN on an empty socket even
// if the descriptor is blocking (MSG_DONTWAIT), and 0 at the peer's end.
func TestRecv(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	r, w := fds[0], fds[1]
	t.Cleanup(func() { unix.Close(r) })
	buf := make([]byte, 16)
	if n, err := Recv(r, buf); n != 0 || err != unix.EAGAIN {
		t.Fatalf("empty blocking socket: %d, %v; want 0, EAGAIN", n, err)
	}
	if n, err := Recv(r, buf[:0]); n != 0 || err != nil {
		t.Fatalf("empty buffer: %d, %v", n, err)
	}
	unix.Write(w, []byte("GET / HTTP/1.1\r\n"))
	if n, err := Recv(r, buf[:4]); n != 4 || err != nil || string(buf[:n]) != "GET " {
		t.Fatalf("first 4 bytes: %d, %v, %q", n, err, buf[:n])
	}
	if n, err := Recv(r, buf); n != 12 || err != nil || string(buf[:n]) != "/ HTTP/1.1\r\n" {
		t.Fatalf("rest: %d, %v, %q", n, err, buf[:n])
	}
	unix.Close(w)
	if n, err := Recv(r, buf); n != 0 || err != nil {
		t.Fatalf("after the peer closed: %d, %v; want 0, nil", n, err)
	}
}
