package serve

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

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
