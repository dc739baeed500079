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

// TestDrain: an idle connection closes at once; one mid-response finishes
// its body first, then closes.
func TestDrain(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	// Larger than the server's largest send buffer (tcp_wmem max, 4 MiB by
	// default) plus the client's pinned receive buffer, so the transfer
	// cannot complete into kernel buffers before we look for it.
	data := random(16 << 20)
	ts.write(t, "f", data)
	ts.do(t, wire.Request{Op: wire.OpStat, Path: "/f"}) // now idle, kept alive
	idle := ts.client
	idleRes := ts.result
	ts.result = make(chan Result, 1)
	ts.connect(t)
	if err := ts.client.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	wire.WriteRequest(ts.client, &wire.Request{Op: wire.OpGet, Path: "/f"})
	r, err := wire.ReadResponse(ts.br)
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the transfer to show, then drain.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if tr, _ := ts.srv.Transfers(10); len(tr) == 1 {
			if tr[0].Path != "/f" || tr[0].Total != int64(len(data)) {
				t.Fatalf("transfer %+v", tr[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("transfer never showed")
		}
		time.Sleep(time.Millisecond)
	}
	ts.srv.Drain()
	select {
	case res := <-idleRes:
		if res.Outcome != OutcomeDrained {
			t.Fatalf("idle conn outcome %q", res.Outcome)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection not closed by the drain")
	}
	if n, err := idle.Read(make([]byte, 1)); err == nil {
		t.Fatalf("idle connection still open (%d)", n)
	}
	body := make([]byte, r.BodyLen)
	if _, err := io.ReadFull(ts.br, body); err != nil || !bytes.Equal(body, data) {
		t.Fatalf("in-flight body after drain: %v", err)
	}
	if res := <-ts.result; res.Outcome != OutcomeDrained || res.Bytes != int64(len(data)) {
		t.Fatalf("busy conn: %+v", res)
	}
	ts.srv.Wait()
}

// TestDrainAnswersNewConnection: a connection handed over just before a
// drain (the supervisor accepted it for a request) gets its response, then
// is closed; it is not dropped as if it were idle.
func TestDrainAnswersNewConnection(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	ts.write(t, "f", []byte("hello"))
	// The connection is being served but its request has not arrived yet.
	for deadline := time.Now().Add(5 * time.Second); ts.srv.Stats().Active != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("connection never registered")
		}
	}
	ts.srv.Drain()
	r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"})
	if r.Status != wire.StatusOK || string(body) != "hello" {
		t.Fatalf("first request on a new connection during a drain: %+v %q", r, body)
	}
	if _, err := ts.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("connection not closed after its response: %v", err)
	}
	if res := <-ts.result; res.Outcome != OutcomeDrained || res.Requests != 1 {
		t.Fatalf("result %+v", res)
	}
}
