package serve

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/internal/accesslog"
	"github.com/zfs-serve/zfs-serve/wire"
)

// keptConn is a kept-alive connection of a test's own to a server.
type keptConn struct {
	c  net.Conn
	br *bufio.Reader
}

// dialKept connects to ts's server (either protocol). small: the smallest socket buffers
// the kernel allows, the client's receive buffer set before it connects
// (so that its window is small from the start) and the server's send
// buffer.
func (ts *testServer) dialKept(t *testing.T, small bool) *keptConn {
	t.Helper()
	var d net.Dialer
	if small {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 1) })
			return serr
		}
	}
	c, fd := loopbackDial(t, d)
	if small {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1); err != nil {
			t.Fatal(err)
		}
	}
	go ts.srv.Run(fd, ConnInfo{Client: c.LocalAddr().String()}, func(Result) {})
	return &keptConn{c: c, br: bufio.NewReader(c)}
}

func (k *keptConn) send(t *testing.T, raw string) {
	t.Helper()
	k.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(k.c, raw); err != nil {
		t.Fatal(err)
	}
}

func (k *keptConn) read(t *testing.T) (int, []byte) {
	t.Helper()
	k.c.SetDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(k.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return resp.StatusCode, body
}

func (k *keptConn) get(t *testing.T, p string) (int, []byte) {
	t.Helper()
	k.send(t, "GET "+p+" HTTP/1.1\r\nHost: a\r\n\r\n")
	return k.read(t)
}

// waitParked waits until n of ts's connections are parked, so that the
// next request on them wakes them through the epoll set: the leader
// serves it.
func waitParked(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.parked() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections parked", s.parked(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLeaderServesFromMemory: a parked connection's request answered from
// memory (a fresh open-file cache hit, the bytes inline) is served by the
// epoll set's goroutine itself, and so are a 404 for a name the kernel's
// caches know is missing, a directory's redirect and a folder's index file
// in memory; anything that may wait hands the leader's place
// to another goroutine first: a miss the caches cannot answer (a name
// never looked up), a body not in memory, a listing, a second request in
// one turn. Every answer is whole.
func TestLeaderServesFromMemory(t *testing.T) {
	settleNow(t)
	ts := newParkServer(t, waitEpoll, true, func(o *Options) {
		o.FileCache, o.FileCacheValid, o.IdleTimeout = time.Hour, time.Hour, time.Minute
	})
	small, big := random(4096), random(inlineMax+1)
	ts.write(t, "f", small)
	ts.write(t, "big", big)
	ts.write(t, "d/x", small)
	ts.write(t, "site/index.html", small)
	ts.write(t, "cold/index.html", small)
	ts.write(t, "bigsite/index.html", big)
	k := ts.dialKept(t, false)
	for _, w := range []struct {
		path string
		body []byte
	}{{"/f", small}, {"/site/", small}, {"/bigsite/", big}} {
		for range 2 { // opened, then kept (in memory if small)
			if code, body := k.get(t, w.path); code != 200 || !bytes.Equal(body, w.body) {
				t.Fatalf("warming %s: %d, equal %v", w.path, code, bytes.Equal(body, w.body))
			}
		}
	}
	handoffs := func() uint64 { return ts.srv.leadHandoffs.Load() }
	for _, c := range []struct {
		name     string
		req      string
		answers  int
		code     int
		body     []byte
		handsOff bool
	}{
		{"cache hit in memory", "GET /f HTTP/1.1\r\nHost: a\r\n\r\n", 1, 200, small, false},
		{"again", "GET /f HTTP/1.1\r\nHost: a\r\n\r\n", 1, 200, small, false},
		{"miss", "GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n", 1, 404, nil, true},
		// Now the kernel's caches know the name is missing (a negative
		// dentry): the raw walk says so, and nothing waits.
		{"the same miss again", "GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n", 1, 404, nil, false},
		// The raw walk finds a directory: its redirect waits for nothing.
		{"a directory's redirect", "GET /d HTTP/1.1\r\nHost: a\r\n\r\n", 1, 301, nil, false},
		// A folder's index file in memory: no lookup of the folder.
		{"a folder's index file", "GET /site/ HTTP/1.1\r\nHost: a\r\n\r\n", 1, 200, small, false},
		// Its validators alone, from memory too.
		{"a folder's index file, not modified", "GET /site/ HTTP/1.1\r\nHost: a\r\nIf-None-Match: *\r\n\r\n", 1, 304, nil, false},
		// An index file never opened (its bytes are read, which may
		// wait), or whose body is not in memory, hands the place on.
		{"a folder's index file never opened", "GET /cold/ HTTP/1.1\r\nHost: a\r\n\r\n", 1, 200, small, true},
		{"a folder's index file not in memory", "GET /bigsite/ HTTP/1.1\r\nHost: a\r\n\r\n", 1, 200, big, true},
		// A file with a slash: the raw walks of its index and of itself
		// find no folder, and nothing waits.
		{"a file with a slash", "GET /f/ HTTP/1.1\r\nHost: a\r\n\r\n", 1, 404, nil, false},
		{"body not in memory", "GET /big HTTP/1.1\r\nHost: a\r\n\r\n", 1, 200, big, true},
		{"listing", "GET /d/ HTTP/1.1\r\nHost: a\r\n\r\n", 1, 200, nil, true},
		{"pipelined", "GET /f HTTP/1.1\r\nHost: a\r\n\r\nGET /f HTTP/1.1\r\nHost: a\r\n\r\n", 2, 200, small, true},
	} {
		waitParked(t, ts.srv, 1)
		before := handoffs()
		k.send(t, c.req)
		for i := range c.answers {
			code, body := k.read(t)
			if code != c.code || (c.body != nil && !bytes.Equal(body, c.body)) {
				t.Fatalf("%s, answer %d: status %d, %d bytes", c.name, i, code, len(body))
			}
		}
		if got := handoffs() - before; (got > 0) != c.handsOff {
			t.Errorf("%s: %d hand-overs of the leader's place, want them: %v", c.name, got, c.handsOff)
		}
	}
}

// TestLeaderWaitHandsOff: while the leader's goroutine waits for a
// client that does not read (a response from memory larger than the
// sockets hold), the other parked connections are still served: the
// leader handed its place on before the wait. The stuck response is
// whole once its client reads.
func TestLeaderWaitHandsOff(t *testing.T) {
	settleNow(t)
	ts := newParkServer(t, waitEpoll, true, func(o *Options) {
		o.FileCache, o.FileCacheValid, o.IdleTimeout, o.SendTimeout = time.Hour, time.Hour, time.Minute, time.Minute
	})
	mid, small := random(inlineMax), random(100)
	ts.write(t, "mid", mid)
	ts.write(t, "f", small)
	stuck := ts.dialKept(t, true)
	other := ts.dialKept(t, false)
	for range 2 {
		if code, body := stuck.get(t, "/mid"); code != 200 || !bytes.Equal(body, mid) {
			t.Fatalf("warming /mid: %d", code)
		}
		if code, _ := other.get(t, "/f"); code != 200 {
			t.Fatalf("warming /f: %d", code)
		}
	}
	waitParked(t, ts.srv, 2)
	before := ts.srv.leadHandoffs.Load()
	stuck.send(t, "GET /mid HTTP/1.1\r\nHost: a\r\n\r\n")
	// The response does not fit the sockets: its sendmsg comes back
	// short and the rest waits for the client.
	deadline := time.Now().Add(10 * time.Second)
	for ts.srv.leadHandoffs.Load() == before {
		if time.Now().After(deadline) {
			t.Fatal("the stuck response did not hand the leader's place on")
		}
		time.Sleep(time.Millisecond)
	}
	for i := range 3 {
		if code, body := other.get(t, "/f"); code != 200 || !bytes.Equal(body, small) {
			t.Fatalf("request %d while another waits: %d", i, code)
		}
		waitParked(t, ts.srv, 1)
	}
	if code, body := stuck.read(t); code != 200 || !bytes.Equal(body, mid) {
		t.Fatalf("the stuck response: %d, %d bytes", code, len(body))
	}
}

// TestLeaderPathInPiecesHandsOff: a native request whose path arrives
// after its header is read in the runtime's poller (readRequest's long
// path); the leader hands its place on before that wait, so another
// parked connection is answered while the path is still missing.
func TestLeaderPathInPiecesHandsOff(t *testing.T) {
	ts := newParkServer(t, waitEpoll, false, func(o *Options) {
		o.IdleTimeout, o.HeaderTimeout = time.Minute, time.Minute
	})
	data := random(100)
	ts.write(t, "f", data)
	slow, slowBr := ts.client, ts.br
	ts.connect(t) // the other connection: ts.client from here
	get := func(c net.Conn, br *bufio.Reader) error {
		ts.client, ts.br = c, br
		r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"})
		if r.Status != wire.StatusOK || !bytes.Equal(body, data) {
			return fmt.Errorf("status %v, %d bytes", r.Status, len(body))
		}
		return nil
	}
	other, otherBr := ts.client, ts.br
	for _, c := range []struct {
		c  net.Conn
		br *bufio.Reader
	}{{slow, slowBr}, {other, otherBr}} {
		if err := get(c.c, c.br); err != nil {
			t.Fatal(err)
		}
	}
	waitParked(t, ts.srv, 2)
	req := wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/f"})
	slow.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := slow.Write(req[:wire.RequestHeaderLen]); err != nil {
		t.Fatal(err)
	}
	// The slow connection is woken (its path still to come) before the
	// other sends: the leader is busy with it, or has handed on.
	parkedNow := func(n int) {
		deadline := time.Now().Add(10 * time.Second)
		for ts.srv.parked() != n {
			if time.Now().After(deadline) {
				t.Fatalf("%d connections parked, want %d", ts.srv.parked(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	parkedNow(1)
	if err := get(other, otherBr); err != nil {
		t.Fatalf("the other connection, while a path is missing: %v", err)
	}
	if _, err := slow.Write(req[wire.RequestHeaderLen:]); err != nil {
		t.Fatal(err)
	}
	ts.client, ts.br = slow, slowBr
	r, err := wire.ReadResponse(slowBr)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, r.BodyLen)
	if _, err := io.ReadFull(slowBr, body); err != nil || r.Status != wire.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("the slow request: status %v, %v", r.Status, err)
	}
}

// drainOnAccess is the access log's writer: it calls Drain on the server
// at the first access line while armed, a drain that starts between a
// response and the connection's park.
type drainOnAccess struct {
	srv   atomic.Pointer[Server]
	armed atomic.Bool
}

func (h *drainOnAccess) Write(p []byte) (int, error) {
	if h.armed.CompareAndSwap(true, false) {
		h.srv.Load().Drain()
	}
	return len(p), nil
}

// TestLeaderDrainedParkHandsOff: a connection the leader serves from
// memory that a drain ends as it parks (publish sees draining) ends with
// the leader's place handed on: its done callback, which may wait for the
// worker, does not hold up the rest of the leader's batch.
func TestLeaderDrainedParkHandsOff(t *testing.T) {
	settleNow(t)
	root := t.TempDir()
	data := random(100)
	if err := os.WriteFile(filepath.Join(root, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	h := &drainOnAccess{}
	access, err := accesslog.New(h, false, slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Root: root, Mode: "sendfile", Chunk: 64 << 10, HTTP: true, Access: access,
		HeaderTimeout: time.Minute, IdleTimeout: time.Minute, SendTimeout: time.Minute,
		FileCache: time.Hour, FileCacheValid: time.Hour, keepAliveWait: waitEpoll}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	h.srv.Store(srv)
	c, fd := loopback(t)
	type end struct {
		res      Result
		handoffs uint64
	}
	ended := make(chan end, 1)
	go srv.Run(fd, ConnInfo{Client: c.LocalAddr().String()}, func(r Result) { ended <- end{r, srv.leadHandoffs.Load()} })
	k := &keptConn{c: c, br: bufio.NewReader(c)}
	for range 2 { // opened, then kept in memory
		if code, body := k.get(t, "/f"); code != 200 || !bytes.Equal(body, data) {
			t.Fatalf("warming: %d", code)
		}
	}
	waitParked(t, srv, 1)
	before := srv.leadHandoffs.Load()
	h.armed.Store(true)
	if code, body := k.get(t, "/f"); code != 200 || !bytes.Equal(body, data) {
		t.Fatalf("the request the drain follows: %d", code)
	}
	select {
	case e := <-ended:
		if e.res.Outcome != OutcomeDrained {
			t.Errorf("outcome %s, want %s", e.res.Outcome, OutcomeDrained)
		}
		if e.handoffs == before {
			t.Error("the connection ended on the leader's goroutine, its place not handed on")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the drained connection did not end")
	}
}
