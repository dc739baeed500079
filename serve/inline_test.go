package serve

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/wire"
)

// settleNow makes every file settled enough to be kept in memory.
func settleNow(t *testing.T) {
	old := inlineSettle
	inlineSettle = 0
	t.Cleanup(func() { inlineSettle = old })
}

// kept reports whether the cache holds the bytes of path p.
func kept(ts *testServer, p string) bool {
	fc := ts.srv.files
	fc.mu.Lock()
	defer fc.mu.Unlock()
	e := fc.m[p]
	return e != nil && e.body != nil
}

// TestInlineBody: a small settled file is sent from memory, head and body
// together, in every mode and both protocols (whole, from an offset, a
// range, HEAD); a change in place drops the bytes and the new version is
// sent; a file too large or not settled is not kept.
func TestInlineBody(t *testing.T) {
	settleNow(t)
	for _, mode := range config.Modes {
		t.Run(mode, func(t *testing.T) {
			ts := newTestServer(t, mode, func(o *Options) { o.FileCache = time.Hour; withHTTP(o) })
			data := random(5000)
			ts.write(t, "f", data)
			ts.write(t, "big", random(inlineMax+1))
			for range 2 {
				if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); r.Size != 5000 || !bytes.Equal(body, data) {
					t.Fatalf("GET: size %d, body differs: %v", r.Size, !bytes.Equal(body, data))
				}
			}
			if !kept(ts, "/f") {
				t.Fatal("a 5000-byte file is not kept in memory")
			}
			if _, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f", Offset: 1000, Length: 100}); !bytes.Equal(body, data[1000:1100]) {
				t.Fatal("GET at an offset differs")
			}
			ts.do(t, wire.Request{Op: wire.OpGet, Path: "/big"})
			if kept(ts, "/big") {
				t.Fatal("a file larger than inlineMax is kept in memory")
			}
			// Changed in place, same size: the new bytes, from the file.
			data2 := random(5000)
			if err := os.WriteFile(filepath.Join(ts.root, "f"), data2, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); !bytes.Equal(body, data2) {
				t.Fatal("after a change in place: not the new bytes")
			}
			if kept(ts, "/f") {
				t.Fatal("bytes of the old version still kept")
			}

			// HTTP, on a new connection of the same server.
			ts.connect(t)
			ts.write(t, "h", data)
			get := "GET /h HTTP/1.1\r\nHost: x\r\n\r\n"
			for range 2 {
				resp, body := ts.httpDo(t, "GET", get)
				if resp.StatusCode != 200 || resp.ContentLength != 5000 || !bytes.Equal(body, data) {
					t.Fatalf("HTTP GET: %s, length %d, body equal %v", resp.Status, resp.ContentLength, bytes.Equal(body, data))
				}
			}
			if !kept(ts, "/h") {
				t.Fatal("HTTP: the file is not kept in memory")
			}
			resp, body := ts.httpDo(t, "GET", "GET /h HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n")
			if resp.StatusCode != 206 || !bytes.Equal(body, data[10:20]) {
				t.Fatalf("HTTP range: %s, %q", resp.Status, body)
			}
			resp, body = ts.httpDo(t, "HEAD", "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Length") != strconv.Itoa(len(data)) {
				t.Fatalf("HTTP HEAD: %s, %d body bytes", resp.Status, len(body))
			}
			// One more GET: the HEAD left nothing behind on the connection.
			if _, body := ts.httpDo(t, "GET", get); !bytes.Equal(body, data) {
				t.Fatal("HTTP GET after HEAD differs")
			}
		})
	}
}

// TestInlineNotSettled: a file changed within inlineSettle is not kept.
func TestInlineNotSettled(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.FileCache = time.Hour })
	ts.write(t, "f", random(100))
	ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"})
	if kept(ts, "/f") {
		t.Fatal("a file written just now is kept in memory")
	}
}

// TestInlineWithinWindow: within open_file_cache_valid, a file changed in
// place is answered from the bytes kept with the stat announced: the old
// version, whole and consistent, not a mix.
func TestInlineWithinWindow(t *testing.T) {
	settleNow(t)
	ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.FileCache, o.FileCacheValid = time.Hour, time.Hour })
	data := random(3000)
	ts.write(t, "f", data)
	ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"})
	if err := os.Truncate(filepath.Join(ts.root, "f"), 10); err != nil {
		t.Fatal(err)
	}
	if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); r.Size != 3000 || !bytes.Equal(body, data) {
		t.Fatalf("truncated within the window: size %d, %d bytes: want the old version whole", r.Size, len(body))
	}
}

// TestInlineOnceSettled: a file first requested, or changed in place,
// within inlineSettle is kept in memory at a later revalidation once
// settled, although it never leaves the cache: a file in demand is never
// swept, so it used to cost a sendfile per response for good.
func TestInlineOnceSettled(t *testing.T) {
	var clock atomic.Int64 // the cache's clock is ahead of the real one by this
	// Set before the first connection; the sweep's first look is a
	// minute (open_file_cache) away.
	ts := newTestServerThen(t, config.ModeSendfile, func(s *Server) {
		s.files.now = func() time.Time { return time.Now().Add(time.Duration(clock.Load())) }
	}, func(o *Options) { o.FileCache, o.FileCacheInactive = time.Minute, time.Hour })
	data := random(3000)
	ts.write(t, "f", data)
	get := func(want []byte) {
		t.Helper()
		if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); r.Size != int64(len(want)) || !bytes.Equal(body, want) {
			t.Fatalf("GET: size %d, body equal %v", r.Size, bytes.Equal(body, want))
		}
	}
	get(data)
	if kept(ts, "/f") {
		t.Fatal("a file written just now is kept in memory")
	}
	clock.Add(int64(2 * time.Minute)) // past open_file_cache (a revalidation) and inlineSettle
	get(data)
	if !kept(ts, "/f") {
		t.Fatal("settled and revalidated, the file is still not kept in memory")
	}
	// Changed in place: the bytes go; settled, they come back, the new ones.
	data2 := random(3000)
	if err := os.WriteFile(filepath.Join(ts.root, "f"), data2, 0o644); err != nil {
		t.Fatal(err)
	}
	get(data2)
	if kept(ts, "/f") {
		t.Fatal("bytes of the old version still kept")
	}
	clock.Add(int64(2 * time.Minute))
	get(data2)
	if !kept(ts, "/f") {
		t.Fatal("changed in place, settled and revalidated: not kept again")
	}
	get(data2) // from memory now
}

// TestInlineRereadStale: a file changed in place whose old bytes are still
// kept when its entry is revalidated (no request came between the change
// and the end of the period to drop them) gets its new bytes at that
// revalidation, not a whole period later: bytes of another version count
// as none.
func TestInlineRereadStale(t *testing.T) {
	fc, root, clock := testCache(t, 0)
	fc.inlineMax = 1 << 10
	clock.t = time.Now().Add(time.Hour) // every file settled
	p := filepath.Join(root.r.Name(), "f")
	v1, v2 := bytes.Repeat([]byte{1}, 100), bytes.Repeat([]byte{2}, 100)
	if err := os.WriteFile(p, v1, 0o644); err != nil {
		t.Fatal(err)
	}
	get := func() []byte {
		t.Helper()
		fd, st, e, err := fc.open(root, "/f", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer fc.release(fd, e)
		return fc.inline(e, &st)
	}
	if b := get(); !bytes.Equal(b, v1) {
		t.Fatalf("first open: kept %q", b)
	}
	if err := os.WriteFile(p, v2, 0o644); err != nil {
		t.Fatal(err)
	}
	clock.advance(time.Minute) // the next request revalidates
	if b := get(); !bytes.Equal(b, v2) {
		t.Fatalf("changed in place, settled, revalidated: kept %q, want the new bytes", b)
	}
	if fc.inlineUsed != 100 {
		t.Fatalf("inlineUsed %d, want 100", fc.inlineUsed)
	}
}

// TestInlineSlowClient: a body kept in memory goes out in one sendmsg and
// shows in status only if the socket cannot take it at once; then it is
// a transfer (its protocol, path, offset and size) until the client has
// read it, and the byte counters come out the same either way.
func TestInlineSlowClient(t *testing.T) {
	settleNow(t)
	ts := newTestServer(t, "sendfile", func(o *Options) { o.FileCache = time.Hour; withHTTP(o) })
	data := random(inlineMax)
	ts.write(t, "f", data)
	before := ts.srv.Stats()
	for range 2 {
		ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"})
	}
	if !kept(ts, "/f") {
		t.Fatal("the file is not kept in memory")
	}
	// A fast client: the counters grow by the body, no transfer shows.
	// They grow after the sendmsg, so maybe a moment after the client has
	// the response: wait for them.
	ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f", Offset: 100})
	ts.connect(t) // a connection speaks the protocol of its first request
	ts.httpDo(t, "GET", "GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
	want, wantHTTP := uint64(4*len(data)-100), uint64(len(data))
	after := ts.srv.Stats()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && (after.BytesSent-before.BytesSent != want || after.HTTPBytesSent-before.HTTPBytesSent != wantHTTP); time.Sleep(time.Millisecond) {
		after = ts.srv.Stats()
	}
	if got := after.BytesSent - before.BytesSent; got != want {
		t.Errorf("fast client: %d body bytes counted, want %d", got, want)
	}
	if got := after.HTTPBytesSent - before.HTTPBytesSent; got != wantHTTP {
		t.Errorf("fast client: %d HTTP body bytes counted, want %d", got, wantHTTP)
	}

	for _, proto := range []string{ProtoNative, ProtoHTTP} {
		t.Run(proto, func(t *testing.T) {
			// Small buffers both ends, and a client that does not read:
			// the first sendmsg cannot take head and body.
			c, fd := loopbackSmall(t)
			ts.result = make(chan Result, 1)
			ts.runOn(c, fd, ConnInfo{})
			before := ts.srv.Stats()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if proto == ProtoNative {
				wire.WriteRequest(c, &wire.Request{Op: wire.OpGet, Path: "/f", Offset: 10})
			} else {
				io.WriteString(c, "GET /f HTTP/1.1\r\nHost: x\r\nRange: bytes=10-\r\n\r\n")
			}
			var tr Transfer
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
				if trs, _ := ts.srv.Transfers(10); len(trs) == 1 {
					tr = trs[0]
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the waiting body never showed in status")
				}
			}
			if tr.Protocol != proto || tr.Path != "/f" || tr.Offset != 10 || tr.Total != int64(len(data)-10) || tr.Sent >= tr.Total || tr.Start.IsZero() {
				t.Errorf("transfer %+v", tr)
			}
			var body []byte
			if proto == ProtoNative {
				r, err := wire.ReadResponse(ts.br)
				if err != nil {
					t.Fatal(err)
				}
				body = make([]byte, r.BodyLen)
				if _, err := io.ReadFull(ts.br, body); err != nil {
					t.Fatal(err)
				}
			} else {
				_, body = ts.httpRead(t, "GET")
			}
			if !bytes.Equal(body, data[10:]) {
				t.Fatalf("body differs (%d bytes)", len(body))
			}
			c.Close()
			res := <-ts.result
			after := ts.srv.Stats()
			if got, want := after.BytesSent-before.BytesSent, uint64(len(data)-10); got != want || res.Bytes != int64(want) {
				t.Errorf("%d body bytes counted, result %d, want %d", got, res.Bytes, want)
			}
			if trs, _ := ts.srv.Transfers(10); len(trs) != 0 {
				t.Errorf("still in status after the body: %+v", trs)
			}
		})
	}
}

// TestInlineFullSocket: a body kept in memory whose first sendmsg finds
// the socket already full (an earlier response the client has not read)
// waits in that sendmsg; it shows in status while it does, as one that
// the socket took only part of does.
func TestInlineFullSocket(t *testing.T) {
	settleNow(t)
	ts := newTestServer(t, "sendfile", func(o *Options) { o.FileCache = time.Hour })
	data := random(inlineMax)
	ts.write(t, "f", data)
	for range 2 {
		ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"})
	}
	if !kept(ts, "/f") {
		t.Fatal("the file is not kept in memory")
	}
	c, fd := loopbackSmall(t)
	// Fill the socket from the server's side, as a response the client
	// does not read would, until it takes nothing more.
	dup, err := syscall.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(dup)
	junk := make([]byte, 4096)
	for wrote := true; wrote; time.Sleep(50 * time.Millisecond) { // until the acks free nothing more
		wrote = false
		for n := len(junk); n > 0; {
			if _, err := syscall.Write(dup, junk[:n]); err == syscall.EAGAIN {
				n /= 2
			} else if err != nil {
				t.Fatal(err)
			} else {
				wrote = true
			}
		}
	}
	ts.result = make(chan Result, 1)
	ts.runOn(c, fd, ConnInfo{})
	c.SetDeadline(time.Now().Add(10 * time.Second))
	wire.WriteRequest(c, &wire.Request{Op: wire.OpGet, Path: "/f"})
	shown := false
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if trs, _ := ts.srv.Transfers(10); len(trs) == 1 {
			shown = true
			if tr := trs[0]; tr.Path != "/f" || tr.Sent >= tr.Total || tr.Total != int64(len(data)) {
				t.Errorf("transfer %+v", tr)
			}
			break
		}
	}
	if !shown {
		t.Error("a body waiting for a full socket never showed in status")
	}
	c.Close()
	<-ts.result
}

// loopbackSmall is loopback with the smallest buffers the kernel allows:
// the client's receive buffer and the server side's send buffer, so a
// response the client does not read soon fills the socket.
func loopbackSmall(t *testing.T) (net.Conn, int) {
	t.Helper()
	small := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
		return nil
	}}
	c, fd := loopbackDial(t, small)
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, 1024); err != nil {
		t.Fatal(err)
	}
	return c, fd
}
