package serve

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/wire"
)

func TestBadFrameAnsweredThenClosed(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	// The magic, then an unknown version: native, but not a frame.
	ts.client.Write(append([]byte("ZQ\x63"), make([]byte, 21)...))
	r, err := wire.ReadResponse(ts.br)
	if err != nil || r.Status != wire.StatusUnsupportedVersion {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := ts.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("connection not closed: %v", err)
	}
	ts.client.Close() // the server lingers until the client closes
	if res := <-ts.result; res.Outcome != OutcomeBadRequest {
		t.Fatalf("outcome %q", res.Outcome)
	}
}

// TestBadFrameDoesNotResetResponses: a client that pipelines a request, a
// frame the server cannot parse and more bytes gets the whole first
// response and the refusal. Closing with the extra bytes unread would
// reset the connection, and a reset drops what is still queued in the
// server's socket: the end of the first response.
func TestBadFrameDoesNotResetResponses(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	const size = 16 << 20 // much more than the socket buffers hold
	data := random(size)
	ts.write(t, "big", data)
	c := ts.client.(*net.TCPConn)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	msg := wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/big"})
	msg = append(msg, append([]byte("ZQ\x63"), make([]byte, 21)...)...) // an unknown version
	msg = append(msg, make([]byte, 4096)...)                            // and more, never read
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	r, err := wire.ReadResponse(ts.br)
	if err != nil || r.Status != wire.StatusOK {
		t.Fatalf("%+v %v", r, err)
	}
	// Read slowly until the server has queued the whole body and gone
	// on to the bad frame.
	got := make([]byte, 0, size)
	buf := make([]byte, 64<<10)
	for len(got) < size {
		if trs, _ := ts.srv.Transfers(1); len(trs) == 0 {
			break
		}
		n, err := ts.br.Read(buf[:min(len(buf), size-len(got))])
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
	}
	select {
	case <-ts.result:
	case <-time.After(time.Second): // the server lingers: fine
	}
	rest := make([]byte, size-len(got))
	if _, err := io.ReadFull(ts.br, rest); err != nil {
		t.Fatalf("body after %d of %d bytes: %v", len(got), size, err)
	}
	if !bytes.Equal(append(got, rest...), data) {
		t.Fatal("body differs")
	}
	if r, err := wire.ReadResponse(ts.br); err != nil || r.Status != wire.StatusUnsupportedVersion {
		t.Fatalf("refusal: %+v %v", r, err)
	}
}
