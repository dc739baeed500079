package serve

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/internal/accesslog"
	"github.com/zfs-serve/zfs-serve/wire"
)

func TestRelPath(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{"/a/b", "a/b", false},
		{"a/b", "a/b", false},
		{"/", ".", false},
		{"", ".", false},
		{"//a//b/", "a/b/", false},
		{"/a/./b", "a/b", false},
		{"/a/.", "a/", false},
		{"a/./", "a/", false},
		{"/.", ".", false},
		{"./", ".", false},
		{"/../etc", "", true},
		{"a/../../b", "", true},
		{"a/..", "", true},
		{"/a/..b", "a/..b", false},
	} {
		got, err := relPath(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("relPath(%q) = %q, %v; want %q, err=%v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// testServer serves a temp root and returns a client connected to one
// ServeConn, plus the root and the result channel.
type testServer struct {
	srv    *Server
	root   string
	client net.Conn
	br     *bufio.Reader
	result chan Result
	logs   *logBuf // the server's log (info and above)
}

// withAccessLog turns the access log on, into the test server's log
// (ts.logs): newTestServer replaces testAccess with a Logger writing there.
func withAccessLog(o *Options) { o.Access = testAccess }

var testAccess = new(accesslog.Logger)

func newTestServer(t *testing.T, mode string, opts ...func(*Options)) *testServer {
	t.Helper()
	return newTestServerThen(t, mode, nil, opts...)
}

// newTestServerThen is newTestServer calling then, if not nil, on the
// server before its first connection.
func newTestServerThen(t *testing.T, mode string, then func(*Server), opts ...func(*Options)) *testServer {
	t.Helper()
	root := t.TempDir()
	o := Options{Root: root, Mode: mode, Chunk: 64 << 10, HeaderTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second, SendTimeout: 5 * time.Second, Listing: true}
	for _, f := range opts {
		f(&o)
	}
	logs := &logBuf{}
	if o.Access == testAccess {
		a, err := accesslog.New(logs, false, slog.LevelInfo)
		if err != nil {
			t.Fatal(err)
		}
		o.Access = a
	}
	srv, err := New(o, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if then != nil {
		then(srv)
	}
	ts := &testServer{srv: srv, root: root, result: make(chan Result, 1), logs: logs}
	ts.connect(t)
	return ts
}

// connect makes a loopback TCP pair and serves the server side.
func (ts *testServer) connect(t *testing.T) {
	t.Helper()
	ts.connectWith(t, ConnInfo{})
}

// connectWith is connect that serves the connection as ci describes it
// (its Client is the client side's address).
func (ts *testServer) connectWith(t *testing.T, ci ConnInfo) {
	t.Helper()
	c, fd := loopback(t)
	ts.runOn(c, fd, ci)
}

// loopback makes a loopback TCP pair: the client side, closed at the
// test's end, and the server side as a non-blocking descriptor of the
// test's own, as a worker gets it from the supervisor.
func loopback(t *testing.T) (net.Conn, int) {
	t.Helper()
	return loopbackDial(t, net.Dialer{})
}

// loopbackDial is loopback with the client dialled by d.
func loopbackDial(t *testing.T, d net.Dialer) (net.Conn, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.(*net.TCPConn).File()
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	syscall.SetNonblock(fd, true)
	return c, fd
}

// runOn makes c the test's client and serves fd (which Run takes over) as
// ci describes it, its Client set to c's address.
func (ts *testServer) runOn(c net.Conn, fd int, ci ConnInfo) {
	ts.client, ts.br = c, bufio.NewReader(c)
	res := ts.result
	ci.Client = c.LocalAddr().String()
	go ts.srv.Run(fd, ci, func(r Result) { res <- r })
}

func (ts *testServer) write(t *testing.T, name string, data []byte) {
	t.Helper()
	p := filepath.Join(ts.root, name)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (ts *testServer) do(t *testing.T, q wire.Request) (wire.Response, []byte) {
	t.Helper()
	ts.client.SetDeadline(time.Now().Add(10 * time.Second))
	if err := wire.WriteRequest(ts.client, &q); err != nil {
		t.Fatal(err)
	}
	r, err := wire.ReadResponse(ts.br)
	if err != nil {
		t.Fatalf("%v %s: %v", q.Op, q.Path, err)
	}
	body := make([]byte, r.BodyLen)
	if _, err := io.ReadFull(ts.br, body); err != nil {
		t.Fatalf("body: %v", err)
	}
	return r, body
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestSendersByteExact(t *testing.T) {
	for _, mode := range config.Modes {
		t.Run(mode, func(t *testing.T) {
			ts := newTestServer(t, mode)
			data := random(3<<20 + 12345) // several chunks, not page aligned
			ts.write(t, "f", data)
			for _, rg := range []struct{ off, n int64 }{
				{0, 0}, {1, 0}, {4095, 4097}, {int64(len(data)) - 1, 0}, {int64(len(data)), 0}, {100, 1},
			} {
				r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f", Offset: rg.off, Length: rg.n})
				want := data[rg.off:]
				if rg.n > 0 {
					want = want[:rg.n]
				}
				if r.Status != wire.StatusOK || r.Size != int64(len(data)) || !bytes.Equal(body, want) {
					t.Fatalf("range %+v: status %v size %d, %d bytes, equal=%v", rg, r.Status, r.Size, len(body), bytes.Equal(body, want))
				}
			}
			st := ts.srv.Stats()
			if st.Active != 1 || st.BytesSent == 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644)
	ts.write(t, "dir/file", []byte("hello"))
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(ts.root, "out"))
	os.Symlink("dir/file", filepath.Join(ts.root, "in"))
	syscall.Mkfifo(filepath.Join(ts.root, "fifo"), 0o644)
	for _, tc := range []struct {
		q      wire.Request
		status wire.Status
		kind   wire.Kind
	}{
		{wire.Request{Op: wire.OpGet, Path: "/dir/file"}, wire.StatusOK, wire.KindFile},
		{wire.Request{Op: wire.OpGet, Path: "/in"}, wire.StatusOK, wire.KindFile},
		{wire.Request{Op: wire.OpGet, Path: "/out"}, wire.StatusForbidden, wire.KindNone},
		{wire.Request{Op: wire.OpGet, Path: "/../x"}, wire.StatusForbidden, wire.KindNone},
		{wire.Request{Op: wire.OpGet, Path: "/dir"}, wire.StatusNotRegular, wire.KindDir},
		{wire.Request{Op: wire.OpGet, Path: "/fifo"}, wire.StatusNotRegular, wire.KindOther},
		{wire.Request{Op: wire.OpGet, Path: "/nope"}, wire.StatusNotFound, wire.KindNone},
		{wire.Request{Op: wire.OpGet, Path: "/dir/file/x"}, wire.StatusNotFound, wire.KindNone},
		{wire.Request{Op: wire.OpGet, Path: "/dir/file", Offset: 6}, wire.StatusRangeNotSatisfiable, wire.KindNone},
		{wire.Request{Op: wire.OpStat, Path: "/dir"}, wire.StatusOK, wire.KindDir},
		{wire.Request{Op: wire.OpStat, Path: "/in"}, wire.StatusOK, wire.KindFile},
		{wire.Request{Op: wire.OpStat, Path: "/fifo"}, wire.StatusNotRegular, wire.KindOther},
		{wire.Request{Op: wire.OpStat, Path: "/out"}, wire.StatusForbidden, wire.KindNone},
		{wire.Request{Op: wire.OpList, Path: "/dir/file"}, wire.StatusNotDirectory, wire.KindNone},
		{wire.Request{Op: wire.OpList, Path: "/nope"}, wire.StatusNotFound, wire.KindNone},
		// A trailing "/" or "/." names a directory: never the file.
		{wire.Request{Op: wire.OpGet, Path: "/dir/file/"}, wire.StatusNotFound, wire.KindNone},
		{wire.Request{Op: wire.OpGet, Path: "/dir/file/."}, wire.StatusNotFound, wire.KindNone},
		{wire.Request{Op: wire.OpGet, Path: "/in/"}, wire.StatusNotFound, wire.KindNone},
		{wire.Request{Op: wire.OpStat, Path: "/dir/file/"}, wire.StatusNotFound, wire.KindNone},
		{wire.Request{Op: wire.OpStat, Path: "dir/file/."}, wire.StatusNotFound, wire.KindNone},
		{wire.Request{Op: wire.OpList, Path: "/dir/file/"}, wire.StatusNotDirectory, wire.KindNone},
		{wire.Request{Op: wire.OpList, Path: "/dir/file/."}, wire.StatusNotDirectory, wire.KindNone},
		{wire.Request{Op: wire.OpGet, Path: "/dir/"}, wire.StatusNotRegular, wire.KindDir},
		{wire.Request{Op: wire.OpStat, Path: "/dir/"}, wire.StatusOK, wire.KindDir},
		{wire.Request{Op: wire.OpStat, Path: "/dir/."}, wire.StatusOK, wire.KindDir},
		{wire.Request{Op: wire.OpList, Path: "/dir/"}, wire.StatusOK, wire.KindDir},
		{wire.Request{Op: wire.OpList, Path: "/dir/."}, wire.StatusOK, wire.KindDir},
	} {
		r, _ := ts.do(t, tc.q)
		if r.Status != tc.status || r.Kind != tc.kind {
			t.Errorf("%v %s: %v/%v %q, want %v/%v", tc.q.Op, tc.q.Path, r.Status, r.Kind, r.Message, tc.status, tc.kind)
		}
		if r.Status != wire.StatusOK && r.Message == "" {
			t.Errorf("%v %s: refusal without a message", tc.q.Op, tc.q.Path)
		}
	}
}

func TestList(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	ts.write(t, "d/b file", []byte("12345"))
	ts.write(t, "d/a", nil)
	os.Mkdir(filepath.Join(ts.root, "d", "sub"), 0o755)
	os.Symlink("a", filepath.Join(ts.root, "d", "ln"))
	syscall.Mkfifo(filepath.Join(ts.root, "d", "pipe"), 0o644)
	r, body := ts.do(t, wire.Request{Op: wire.OpList, Path: "/d"})
	if r.Status != wire.StatusOK || r.Kind != wire.KindDir || r.Size != 5 {
		t.Fatalf("LIST: %+v", r)
	}
	es, err := wire.ReadList(bytes.NewReader(body), r.BodyLen)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name string
		kind wire.Kind
		size int64
	}{{"a", wire.KindFile, 0}, {"b file", wire.KindFile, 5}, {"ln", wire.KindSymlink, 0}, {"pipe", wire.KindOther, 0}, {"sub", wire.KindDir, 0}}
	if len(es) != len(want) {
		t.Fatalf("entries %+v", es)
	}
	for i, w := range want {
		if es[i].Name != w.name || es[i].Kind != w.kind || es[i].Size != w.size {
			t.Errorf("entry %d: %+v, want %+v", i, es[i], w)
		}
	}
}

// TestShortFile: a file that ends before the promised length closes the
// connection with OutcomeShrank in every mode, never a hang.
func TestShortFile(t *testing.T) {
	for _, mode := range config.Modes {
		t.Run(mode, func(t *testing.T) {
			ts := newTestServer(t, mode)
			ts.write(t, "f", random(8<<20))
			ts.client.SetDeadline(time.Now().Add(10 * time.Second))
			wire.WriteRequest(ts.client, &wire.Request{Op: wire.OpGet, Path: "/f"})
			r, err := wire.ReadResponse(ts.br)
			if err != nil || r.BodyLen != 8<<20 {
				t.Fatal(r, err)
			}
			io.CopyN(io.Discard, ts.br, 64<<10)
			os.Truncate(filepath.Join(ts.root, "f"), 1<<20)
			n, err := io.Copy(io.Discard, ts.br)
			if err != nil || 64<<10+n >= 8<<20 {
				t.Fatalf("read %d more, %v: want a short body then EOF", n, err)
			}
			select {
			case res := <-ts.result:
				if res.Outcome != OutcomeShrank {
					t.Fatalf("outcome %q", res.Outcome)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("ServeConn did not return")
			}
		})
	}
}

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

func TestHeaderTimeout(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.HeaderTimeout = 100 * time.Millisecond })
	ts.client.Write([]byte("ZQ")) // a partial header, then silence
	select {
	case res := <-ts.result:
		if res.Outcome != OutcomeBadRequest && res.Outcome != OutcomeIdle {
			t.Fatalf("outcome %q", res.Outcome)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stalled header was not timed out")
	}
}

// TestOpenInRootFallback runs the confinement tests again through os.Root,
// as on a machine where openat2 is refused (ENOSYS).
func TestOpenInRootFallback(t *testing.T) {
	noOpenat2.Store(true)
	defer noOpenat2.Store(false)
	t.Run("refusals", TestRefusals)
	t.Run("list", TestList)
	t.Run("senders", TestSendersByteExact)
	ts := newTestServer(t, config.ModeSendfile)
	os.Symlink("/proc/self/root/etc/passwd", filepath.Join(ts.root, "magic"))
	if r, _ := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/magic"}); r.Status != wire.StatusForbidden {
		t.Fatalf("magic link through os.Root: %v %q", r.Status, r.Message)
	}
}

// TestSendTimeout: a client that stops reading is dropped once no byte has
// moved for send_timeout, in every mode, and one that reads slowly but
// steadily is not.
func TestSendTimeout(t *testing.T) {
	for _, mode := range config.Modes {
		t.Run(mode, func(t *testing.T) {
			ts := newTestServer(t, mode, func(o *Options) { o.SendTimeout = 300 * time.Millisecond })
			ts.write(t, "f", random(32<<20))
			wire.WriteRequest(ts.client, &wire.Request{Op: wire.OpGet, Path: "/f"})
			start := time.Now()
			select {
			case res := <-ts.result:
				if res.Outcome != OutcomeClientGone {
					t.Fatalf("outcome %q", res.Outcome)
				}
				if el := time.Since(start); el < 250*time.Millisecond {
					t.Fatalf("dropped after %v, before send_timeout", el)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("a client that never reads was not dropped")
			}
		})
	}
	t.Run("steady reader", func(t *testing.T) {
		// Writability is signalled only once about a third of the socket
		// buffer (up to 4 MiB on loopback) has drained, so "no progress for
		// send_timeout" is judged at that grain, as nginx's send_timeout is.
		ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.SendTimeout = time.Second })
		data := random(16 << 20)
		ts.write(t, "f", data)
		wire.WriteRequest(ts.client, &wire.Request{Op: wire.OpGet, Path: "/f"})
		r, err := wire.ReadResponse(ts.br)
		if err != nil {
			t.Fatal(err)
		}
		// 1 MiB every 50ms: slow, but never a second without progress.
		got := make([]byte, 0, r.BodyLen)
		buf := make([]byte, 1<<20)
		for int64(len(got)) < r.BodyLen {
			n, err := io.ReadFull(ts.br, buf[:min(int64(len(buf)), r.BodyLen-int64(len(got)))])
			got = append(got, buf[:n]...)
			if err != nil {
				t.Fatalf("after %d bytes: %v", len(got), err)
			}
			time.Sleep(50 * time.Millisecond) // the client's pace, not synchronisation
		}
		if !bytes.Equal(got, data) {
			t.Fatal("body differs")
		}
	})
}

// TestFileCache: a hot file is opened once per validity window, changes in
// place are seen at once, a replaced file is served whole from the old one
// until the entry expires, and expired descriptors are closed.
func TestFileCache(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.FileCache = 300 * time.Millisecond })
	ts.write(t, "f", []byte("version one"))
	for range 3 {
		if _, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); string(body) != "version one" {
			t.Fatalf("got %q", body)
		}
	}
	if n := ts.srv.files.len(); n != 1 {
		t.Fatalf("%d cached files, want 1", n)
	}
	// In place: the cached descriptor sees the new bytes and the new size.
	f, _ := os.OpenFile(filepath.Join(ts.root, "f"), os.O_WRONLY|os.O_TRUNC, 0)
	f.WriteString("v2")
	f.Close()
	if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); string(body) != "v2" || r.Size != 2 {
		t.Fatalf("after an in-place change: %q, size %d", body, r.Size)
	}
	// Replaced by rename: the cached file has no links left, so the new
	// one is served at once.
	ts.write(t, "g", []byte("version three"))
	if err := os.Rename(filepath.Join(ts.root, "g"), filepath.Join(ts.root, "f")); err != nil {
		t.Fatal(err)
	}
	if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); string(body) != "version three" || r.Size != 13 {
		t.Fatalf("renamed over within the window: %q, size %d (want the new file)", body, r.Size)
	}
	// Replaced while another link keeps the old file: the old file, whole,
	// until the entry expires.
	if err := os.Link(filepath.Join(ts.root, "f"), filepath.Join(ts.root, "keep")); err != nil {
		t.Fatal(err)
	}
	ts.write(t, "g", []byte("version four"))
	if err := os.Rename(filepath.Join(ts.root, "g"), filepath.Join(ts.root, "f")); err != nil {
		t.Fatal(err)
	}
	if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); string(body) != "version three" || r.Size != 13 {
		t.Fatalf("replaced (old file still linked) within the window: %q, size %d (want the old file, whole)", body, r.Size)
	}
	// The sweep closes an entry not requested for 20 s; here at once
	// once expired, to see the new file without waiting that long.
	ts.srv.files.mu.Lock()
	ts.srv.files.inactive = ts.srv.files.valid
	ts.srv.files.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for ts.srv.files.len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("expired entry not swept")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); string(body) != "version four" {
		t.Fatalf("after expiry: %q", body)
	}
	// Deleted within the window: not found at once, and refusals are
	// never cached.
	os.Remove(filepath.Join(ts.root, "f"))
	if r, _ := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); r.Status != wire.StatusNotFound {
		t.Fatalf("deleted file: %v", r.Status)
	}
	if r, _ := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); r.Status != wire.StatusNotFound {
		t.Fatalf("deleted file, again: %v", r.Status)
	}
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

// TestHeaderTimeoutTrickle: header_timeout bounds the whole request, not
// each read, so a client sending one byte at a time cannot hold a
// connection open (slowloris).
func TestHeaderTimeoutTrickle(t *testing.T) {
	for _, first := range []bool{true, false} {
		name := map[bool]string{true: "new connection", false: "kept alive"}[first]
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.HeaderTimeout = 300 * time.Millisecond })
			ts.write(t, "f", []byte("x"))
			if !first {
				ts.do(t, wire.Request{Op: wire.OpStat, Path: "/f"})
			}
			req := wire.AppendRequest(nil, &wire.Request{Op: wire.OpStat, Path: "/f"})
			sent := make(chan int, 1)
			go func() {
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for i := range req {
					if _, err := ts.client.Write(req[i : i+1]); err != nil {
						sent <- i
						return
					}
					<-tick.C
					select {
					case <-ts.result:
						sent <- i + 1
						return
					default:
					}
				}
				sent <- len(req)
			}()
			if n := <-sent; n >= len(req) {
				t.Fatalf("the whole %d-byte request trickled in at 10 B/s with header_timeout 300ms", len(req))
			}
		})
	}
}

// TestFileCacheKeysAndBound: spellings of one path share one descriptor,
// and a full cache makes room rather than refuse new files (a client must
// not be able to pin descriptors, nor keep hot files out).
func TestFileCacheKeysAndBound(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.FileCache = time.Hour })
	ts.write(t, "f", []byte("x"))
	for _, p := range []string{"/f", "f", "//f", "/./f", "/.//f", "./f"} {
		if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: p}); r.Status != wire.StatusOK || string(body) != "x" {
			t.Fatalf("GET %q: %v %q", p, r.Status, body)
		}
	}
	if n := ts.srv.files.len(); n != 1 {
		t.Fatalf("%d cache entries for spellings of one path, want 1", n)
	}
	ts.srv.files.mu.Lock()
	ts.srv.files.max = 3
	ts.srv.files.mu.Unlock()
	for i := range 10 {
		name := fmt.Sprintf("g%d", i)
		ts.write(t, name, []byte(name))
		if _, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/" + name}); string(body) != name {
			t.Fatalf("GET %s: %q", name, body)
		}
		if n := ts.srv.files.len(); n > 3 {
			t.Fatalf("%d cache entries, the bound is 3", n)
		}
	}
	// The last file in was cached (room was made for it).
	ts.srv.files.mu.Lock()
	_, ok := ts.srv.files.m["/g9"]
	ts.srv.files.mu.Unlock()
	if !ok {
		t.Fatal("a full cache refused a new file")
	}
}

// TestListBudget: a worker bounds the listing bytes it is sending at
// once, and gives them back after each response.
func TestListBudget(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	ts.write(t, "d/a", []byte("1"))
	ts.srv.listBytes.Store(maxListBytes) // as if others were being sent
	if r, _ := ts.do(t, wire.Request{Op: wire.OpList, Path: "/d"}); r.Status != wire.StatusBusy {
		t.Fatalf("LIST over the budget: %v", r.Status)
	}
	ts.srv.listBytes.Store(0)
	r, body := ts.do(t, wire.Request{Op: wire.OpList, Path: "/d"})
	if r.Status != wire.StatusOK {
		t.Fatalf("LIST: %v", r.Status)
	}
	es, err := wire.ReadList(bytes.NewReader(body), int64(len(body)))
	if err != nil || len(es) != 1 || es[0].Name != "a" {
		t.Fatalf("entries %+v %v", es, err)
	}
	// Given back just after the send, which the client may see first.
	for deadline := time.Now().Add(10 * time.Second); ts.srv.listBytes.Load() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d listing bytes still counted after the response", ts.srv.listBytes.Load())
		}
	}
}

// TestNameTooLong: a path component longer than the file system allows is
// "not found" and the connection stays usable (status 1 would close it).
func TestNameTooLong(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	ts.write(t, "f", []byte("x"))
	if r, _ := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/" + strings.Repeat("a", 300)}); r.Status != wire.StatusNotFound {
		t.Fatalf("GET of a 300-byte name: %v %q", r.Status, r.Message)
	}
	if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); r.Status != wire.StatusOK || string(body) != "x" {
		t.Fatalf("next request on the same connection: %v %q", r.Status, body)
	}
}

// TestSplicePipesPooled: in splice mode a connection borrows a pipe for
// one response and gives it back, so kept-alive connections hold none.
func TestSplicePipesPooled(t *testing.T) {
	ts := newTestServer(t, config.ModeSplice)
	data := random(3 << 20)
	ts.write(t, "f", data)
	for range 3 {
		if _, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); !bytes.Equal(body, data) {
			t.Fatal("splice body differs")
		}
		if n := len(ts.srv.pipes); n != 1 {
			t.Fatalf("%d pipes in the pool after a response, want 1 (borrowed and given back)", n)
		}
	}
}

// TestRefusedNamesAreNotOpened: a FIFO or device is refused without being
// opened for reading (which would release a writer blocked in open(2), or
// trigger a device's open side effects): inotify sees no open of it. Only
// what is served is opened.
func TestRefusedNamesAreNotOpened(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	ts.write(t, "file", []byte("hello"))
	names := []string{"fifo"}
	if err := syscall.Mkfifo(filepath.Join(ts.root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 && syscall.Mknod(filepath.Join(ts.root, "null"), syscall.S_IFCHR|0o666, 1<<8|3) == nil {
		names = append(names, "null")
	} else {
		t.Log("not root: only the FIFO (mknod of a device needs root)")
	}
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(in)
	for _, n := range append(names, "file") {
		if _, err := unix.InotifyAddWatch(in, filepath.Join(ts.root, n), unix.IN_OPEN); err != nil {
			t.Fatal(err)
		}
	}
	opens := func() int {
		buf := make([]byte, 4096)
		n, _ := unix.Read(in, buf)
		return max(n, 0) / unix.SizeofInotifyEvent
	}
	for _, n := range names {
		if r, _ := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/" + n}); r.Status != wire.StatusNotRegular {
			t.Fatalf("GET /%s: %+v", n, r)
		}
		if r, _ := ts.do(t, wire.Request{Op: wire.OpStat, Path: "/" + n}); r.Status != wire.StatusNotRegular {
			t.Fatalf("STAT /%s: %+v", n, r)
		}
	}
	if n := opens(); n != 0 {
		t.Fatalf("%d opens of refused names", n)
	}
	// The check itself: serving the regular file is an open inotify sees.
	if r, _ := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/file"}); r.Status != wire.StatusOK {
		t.Fatalf("GET /file: %+v", r)
	}
	if n := opens(); n == 0 {
		t.Fatal("inotify saw no open of the served file: the test proves nothing")
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
