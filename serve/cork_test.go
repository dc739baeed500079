package serve

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/wire"
)

// connectSpy is connect, through d, that also returns a duplicate of the
// server's socket, through which a test reads the socket's options.
func (ts *testServer) connectSpy(t *testing.T, d net.Dialer) (spy int) {
	t.Helper()
	c, fd := loopbackDial(t, d)
	spy, err := syscall.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(spy) })
	ts.runOn(c, fd, ConnInfo{})
	return spy
}

// ethernetSegments dials with the segment size an Ethernet path has
// (TCP_MAXSEG before connect: the SYN offers 1448 bytes, and the server's
// segments are no larger), where loopback's are 32-64 KiB.
var ethernetSegments = net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, 1448) })
	return errors.Join(err, serr)
}}

// TestCorkBody: on a path with Ethernet-sized segments a body of more than
// one chunk is sent corked (TCP_CORK, as nginx's tcp_nopush), and
// uncorked at its end so that its last segment is not held back, in both
// modes that send from the kernel. On loopback, whose segments are
// 32-64 KiB, it is not corked at all (corkPays).
func TestCorkBody(t *testing.T) {
	for _, mode := range []string{config.ModeSendfile, config.ModeSplice} {
		for _, path := range []struct {
			name   string
			dialer net.Dialer
			cork   bool
		}{
			{"ethernet", ethernetSegments, true},
			{"loopback", net.Dialer{}, false},
		} {
			t.Run(mode+"/"+path.name, func(t *testing.T) {
				testCorkBody(t, mode, path.dialer, path.cork)
			})
		}
	}
}

func testCorkBody(t *testing.T, mode string, d net.Dialer, wantCork bool) {
	ts := newTestServer(t, mode) // Chunk: 64 KiB
	ts.client.Close()
	<-ts.result
	big, small := random(16<<20), random(60<<10)
	ts.write(t, "big", big)
	ts.write(t, "small", small)
	spy := ts.connectSpy(t, d)
	corked := func() int {
		v, err := unix.GetsockoptInt(spy, unix.IPPROTO_TCP, unix.TCP_CORK)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// A fixed send buffer (SO_SNDBUF turns its autotuning off): with the
	// client not reading, the body cannot all leave before the checks
	// below, whatever the host's tcp_wmem lets a buffer grow to.
	if err := unix.SetsockoptInt(spy, unix.SOL_SOCKET, unix.SO_SNDBUF, 512<<10); err != nil {
		t.Fatal(err)
	}
	ts.client.SetDeadline(time.Now().Add(30 * time.Second))
	if err := wire.WriteRequest(ts.client, &wire.Request{Op: wire.OpGet, Path: "/big"}); err != nil {
		t.Fatal(err)
	}
	r, err := wire.ReadResponse(ts.br)
	if err != nil || r.Status != wire.StatusOK {
		t.Fatalf("%+v %v", r, err)
	}
	if wantCork {
		// The client has not read the body: the server is sending it.
		for deadline := time.Now().Add(10 * time.Second); corked() == 0; runtime.Gosched() {
			if time.Now().After(deadline) {
				t.Fatal("the socket was not corked while the big body was sent")
			}
		}
	} else {
		// Once body bytes have arrived the sender has decided (the cork
		// would come before its first call), and with the client not
		// reading, 16 MiB cannot all have left (the server's send buffer
		// holds at most 1 MiB, the client's receive buffer its default).
		if _, err := ts.br.Peek(1); err != nil {
			t.Fatal(err)
		}
		if corked() != 0 {
			t.Fatal("corked on loopback")
		}
	}
	body := make([]byte, len(big))
	if _, err := io.ReadFull(ts.br, body); err != nil || !bytes.Equal(body, big) {
		t.Fatalf("big body: %v (equal %v)", err, bytes.Equal(body, big))
	}
	for deadline := time.Now().Add(10 * time.Second); corked() != 0; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("the socket stays corked after the body")
		}
	}
	r, body = ts.do(t, wire.Request{Op: wire.OpGet, Path: "/small"})
	if r.Status != wire.StatusOK || !bytes.Equal(body, small) || corked() != 0 {
		t.Fatalf("small: %v, equal %v, corked %d", r.Status, bytes.Equal(body, small), corked())
	}
}
