package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// wait bounds every wait on a condition in these tests.
const wait = 10 * time.Second

// fakeHandler is a Handler that answers from its fields and records calls.
type fakeHandler struct {
	status    *Status
	statusErr error
	drainErr  error
	killErr   error
	reloadMsg string
	reloadErr error
	// progress is how many progress calls Drain and Reload make when waiting.
	progress int

	// If entered is set, Status sends on it when called; if release is
	// set, Status then waits for it to be closed, or for its ctx.
	entered chan struct{}
	release chan struct{}

	mu    sync.Mutex
	calls []string
}

func (h *fakeHandler) record(format string, args ...any) {
	h.mu.Lock()
	h.calls = append(h.calls, fmt.Sprintf(format, args...))
	h.mu.Unlock()
}

func (h *fakeHandler) Calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

func (h *fakeHandler) Status(ctx context.Context) (*Status, error) {
	h.record("status")
	if h.entered != nil {
		h.entered <- struct{}{}
	}
	if h.release != nil {
		select {
		case <-h.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return h.status, h.statusErr
}

func (h *fakeHandler) steps(p func(*Status)) {
	for i := range h.progress {
		p(&Status{State: StateDraining, Generation: i + 1})
	}
}

func (h *fakeHandler) Drain(ctx context.Context, timeout time.Duration, p func(*Status)) error {
	h.record("drain %v wait=%v", timeout, p != nil)
	if p != nil {
		h.steps(p)
	}
	return h.drainErr
}

func (h *fakeHandler) Kill(ctx context.Context) error {
	h.record("kill")
	return h.killErr
}

func (h *fakeHandler) Reload(ctx context.Context, w bool, p func(*Status)) (string, error) {
	h.record("reload wait=%v progress=%v", w, p != nil)
	if p != nil {
		h.steps(p)
	}
	return h.reloadMsg, h.reloadErr
}

var discard = slog.New(slog.DiscardHandler)

// shortDir is a temp dir with a short path: a unix socket path must fit
// in 108 bytes, which t.TempDir() does not promise.
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "z")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// startServer runs a Server for h on a fresh socket and returns its path.
// Cleanup shuts it down and checks that Serve returned nil.
func startServer(t *testing.T, h Handler, auth Authorizer) (string, *Server) {
	t.Helper()
	return startServerWith(t, &Server{Handler: h, Authorize: auth, Log: discard})
}

func startServerWith(t *testing.T, srv *Server) (string, *Server) {
	t.Helper()
	path := filepath.Join(shortDir(t), "c.sock")
	ln, err := Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		srv.Shutdown(ctx)
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(wait):
			t.Error("Serve did not return after Shutdown")
		}
	})
	return path, srv
}

func dial(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func rawDial(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAll reads every response line until the server closes the
// connection. A reset after the data (the server closed with our request
// bytes unread) counts as the end.
func readAll(t *testing.T, c net.Conn) []string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(wait))
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reading responses: %v (got %q)", err, b)
	}
	return checkLines(t, b)
}

// checkLines splits output into lines and checks each is a version-1
// Response. It returns the lines without their "\n".
func checkLines(t testing.TB, b []byte) []string {
	t.Helper()
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatalf("output does not end with a newline: %q", b)
	}
	lines := strings.Split(string(b[:len(b)-1]), "\n")
	for _, l := range lines {
		var r Response
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("response line is not a Response: %v: %q", err, l)
		}
		if dec.More() {
			t.Fatalf("more than one JSON value on a line: %q", l)
		}
		if r.V != Version {
			t.Fatalf("response without v=%d: %q", Version, l)
		}
		if !r.OK && r.Error == "" {
			t.Fatalf("ok:false without an error: %q", l)
		}
		if r.OK && r.Error != "" {
			t.Fatalf("ok:true with an error: %q", l)
		}
		if r.Event != "" && (r.Event != EventProgress || !r.OK) {
			t.Fatalf("bad event: %q", l)
		}
	}
	return lines
}

func decodeResponse(t *testing.T, line string) Response {
	t.Helper()
	var r Response
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func sampleStatus() *Status {
	start := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	dl := start.Add(time.Minute)
	next := start.Add(2 * time.Second)
	return &Status{
		Version: "0.1.0", State: StateDraining, PID: 4181, Started: start, Uptime: 192.5,
		Config: "/etc/zfs-serve/zfs-serve.toml + --root", Root: "/srv", ZeroCopy: "sendfile",
		Generation: 2, Control: "/run/zfs-serve/control.sock",
		Listeners: []Listener{{Name: "zfs", Addr: "127.0.0.1:7070", Activated: true}},
		Workers: []Worker{
			{PID: 4190, Generation: 2, Slot: 0, State: "ready", Active: 2, Connections: 512, BytesSent: 1 << 33, Started: start},
			{PID: 0, Generation: 2, Slot: 1, State: "restarting", Restarts: 3, LastExit: "killed by signal SIGKILL", NextStart: &next},
		},
		Transfers:        []Transfer{{WorkerPID: 4190, Client: "127.0.0.1:50432", Path: "/big.iso", Offset: 5, Sent: 10, Total: 100, Age: 12.5}},
		TransfersOmitted: 7,
		Totals:           Totals{Workers: 1, Active: 2, Connections: 512, BytesSent: 1 << 33, Restarts: 3},
		DrainDeadline:    &dl,
		LastReload:       "ok: generation 2 serving with 2 workers",
	}
}

func TestStatusRoundTrip(t *testing.T) {
	h := &fakeHandler{status: sampleStatus()}
	path, _ := startServer(t, h, nil)
	c := dial(t, path)
	// Several requests on one connection.
	for i := range 3 {
		r, err := c.Do(Request{Cmd: CmdStatus}, func(*Response) { t.Error("progress for status") })
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if !r.OK || r.V != Version || r.Status == nil {
			t.Fatalf("request %d: %+v", i, r)
		}
		if !reflect.DeepEqual(r.Status, h.status) {
			t.Fatalf("status changed on the way:\n got %+v\nwant %+v", r.Status, h.status)
		}
	}
	if got := h.Calls(); len(got) != 3 {
		t.Errorf("handler calls %q", got)
	}
}

// A status larger than a request line may be still reaches zctl: with
// many workers or transfers (400 per worker) it is well over 64 KiB.
func TestLargeStatus(t *testing.T) {
	st := sampleStatus()
	for i := range 3000 {
		st.Transfers = append(st.Transfers, Transfer{WorkerPID: 4190, Client: "127.0.0.1:50432",
			Path: fmt.Sprintf("/datasets/2026/some/rather/long/directory/name/file-%06d.bin", i), Sent: int64(i), Total: 1 << 30, Age: 1})
	}
	h := &fakeHandler{status: st}
	path, _ := startServer(t, h, nil)
	b, _ := json.Marshal(st)
	if len(b) < 4*MaxLine {
		t.Fatalf("test status is only %d bytes", len(b))
	}
	r, err := dial(t, path).Do(Request{Cmd: CmdStatus}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Status.Transfers) != len(st.Transfers) {
		t.Errorf("got %d transfers, want %d", len(r.Status.Transfers), len(st.Transfers))
	}
}

func TestCommands(t *testing.T) {
	tests := []struct {
		name      string
		h         *fakeHandler
		req       Request
		progress  int
		msg       string
		err       string
		wantCalls []string
	}{
		{"drain", &fakeHandler{progress: 3}, Request{Cmd: CmdDrain}, 0, "draining", "", []string{"drain 0s wait=false"}},
		{"drain timeout", &fakeHandler{}, Request{Cmd: CmdDrain, Timeout: "1m30s"}, 0, "draining", "", []string{"drain 1m30s wait=false"}},
		{"drain wait", &fakeHandler{progress: 3}, Request{Cmd: CmdDrain, Wait: true, Timeout: "30s"}, 3, "drained", "", []string{"drain 30s wait=true"}},
		{"drain wait fails", &fakeHandler{progress: 2, drainErr: errors.New("drain timeout: 2 transfers cut off")}, Request{Cmd: CmdDrain, Wait: true}, 2, "", "drain timeout: 2 transfers cut off", []string{"drain 0s wait=true"}},
		{"drain bad timeout", &fakeHandler{}, Request{Cmd: CmdDrain, Timeout: "soon"}, 0, "", `bad timeout "soon"`, nil},
		{"drain zero timeout", &fakeHandler{}, Request{Cmd: CmdDrain, Timeout: "0s"}, 0, "", `bad timeout "0s"`, nil},
		{"drain negative timeout", &fakeHandler{}, Request{Cmd: CmdDrain, Timeout: "-5s"}, 0, "", `bad timeout "-5s"`, nil},
		{"kill", &fakeHandler{}, Request{Cmd: CmdKill}, 0, "killed", "", []string{"kill"}},
		{"kill fails", &fakeHandler{killErr: errors.New("no")}, Request{Cmd: CmdKill}, 0, "", "no", []string{"kill"}},
		{"reload", &fakeHandler{progress: 2, reloadMsg: "generation 2 serving with 4 workers"}, Request{Cmd: CmdReload}, 0,
			"generation 2 serving with 4 workers", "", []string{"reload wait=false progress=false"}},
		{"reload wait", &fakeHandler{progress: 2, reloadMsg: "generation 2 serving with 4 workers; previous generation drained"}, Request{Cmd: CmdReload, Wait: true}, 2,
			"generation 2 serving with 4 workers; previous generation drained", "", []string{"reload wait=true progress=true"}},
		{"reload fails", &fakeHandler{reloadErr: errors.New(`invalid configuration, nothing changed: f.toml:5: unknown key "workerz"`)}, Request{Cmd: CmdReload, Wait: true}, 0,
			"", `invalid configuration, nothing changed: f.toml:5: unknown key "workerz"`, []string{"reload wait=true progress=true"}},
		{"status fails", &fakeHandler{statusErr: errors.New("supervisor is gone")}, Request{Cmd: CmdStatus}, 0, "", "supervisor is gone", []string{"status"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, _ := startServer(t, tt.h, nil)
			c := dial(t, path)
			var events []*Response
			r, err := c.Do(tt.req, func(r *Response) { events = append(events, r) })
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v, want an error with %q", err, tt.err)
				}
				if r == nil || r.OK || r.Error != err.Error() {
					t.Errorf("error response %+v", r)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if !r.OK || r.Message != tt.msg || r.Event != "" {
				t.Errorf("response %+v, want ok with message %q", r, tt.msg)
			}
			if len(events) != tt.progress {
				t.Errorf("%d progress events, want %d", len(events), tt.progress)
			}
			for i, e := range events {
				if !e.OK || e.Event != EventProgress || e.Status == nil || e.Status.Generation != i+1 {
					t.Errorf("progress event %d: %+v", i, e)
				}
			}
			if got := tt.h.Calls(); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("handler calls %q, want %q", got, tt.wantCalls)
			}
			// A failed command leaves the connection usable.
			tt.h.statusErr = nil
			if _, err := c.Do(Request{Cmd: CmdStatus}, nil); err != nil {
				t.Errorf("status after %s: %v", tt.name, err)
			}
		})
	}
}

func TestProtocolErrors(t *testing.T) {
	long := bytes.Repeat([]byte("x"), MaxLine+10)
	tests := []struct {
		name  string
		in    []byte
		close bool // half-close after writing
		err   string
	}{
		{"unknown command", []byte(`{"v":1,"cmd":"restart"}` + "\n"), false, `unknown command "restart" (want status, drain, kill, reload or digest)`},
		{"no command", []byte(`{"v":1}` + "\n"), false, `unknown command ""`},
		{"newer version", []byte(`{"v":2,"cmd":"status"}` + "\n"), false, "unsupported control protocol version 2 (this daemon speaks 1)"},
		{"no version", []byte(`{"cmd":"status"}` + "\n"), false, "unsupported control protocol version 0"},
		{"malformed JSON", []byte(`{"v":1,cmd:status}` + "\n"), false, "malformed request: "},
		{"not an object", []byte(`"status"` + "\n"), false, "malformed request: "},
		{"wrong field type", []byte(`{"v":"1","cmd":"status"}` + "\n"), false, "malformed request: "},
		{"trailing data", []byte(`{"v":1,"cmd":"status"} {}` + "\n"), false, "malformed request: "},
		{"empty line", []byte("\n"), false, "malformed request: "},
		{"over-long line", append(long, '\n'), false, fmt.Sprintf("request longer than %d bytes", MaxLine)},
		{"over-long without newline", long, false, fmt.Sprintf("request longer than %d bytes", MaxLine)},
		{"truncated", []byte(`{"v":1,"cmd":"status"}`), true, "truncated request: no newline before end of stream"},
		{"good then unknown", []byte(`{"v":1,"cmd":"status"}` + "\n" + `{"v":1,"cmd":"nope"}` + "\n" + `{"v":1,"cmd":"status"}` + "\n"), false, `unknown command "nope"`},
	}
	h := &fakeHandler{status: &Status{State: StateServing}}
	path, _ := startServer(t, h, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rawDial(t, path)
			if _, err := c.Write(tt.in); err != nil {
				t.Fatal(err)
			}
			if tt.close {
				c.CloseWrite()
			}
			// Without a half-close, the server must end the connection itself.
			lines := readAll(t, c)
			var errs []Response
			for _, l := range lines {
				if r := decodeResponse(t, l); !r.OK {
					errs = append(errs, r)
				}
			}
			if len(errs) != 1 || !strings.Contains(errs[0].Error, tt.err) {
				t.Fatalf("got %q, want exactly one error with %q", lines, tt.err)
			}
			if last := decodeResponse(t, lines[len(lines)-1]); last.OK {
				t.Errorf("the error is not the last line: %q", lines)
			}
			// The server goes on serving others.
			if _, err := dial(t, path).Do(Request{Cmd: CmdStatus}, nil); err != nil {
				t.Fatalf("status after %s: %v", tt.name, err)
			}
		})
	}
}

// A client that never completes its line is cut off with an error.
func TestReadTimeout(t *testing.T) {
	h := &fakeHandler{status: &Status{}}
	path, _ := startServerWith(t, &Server{Handler: h, Log: discard, ReadTimeout: 50 * time.Millisecond})
	for _, in := range []string{"", `{"v":1,`} {
		c := rawDial(t, path)
		if _, err := io.WriteString(c, in); err != nil {
			t.Fatal(err)
		}
		lines := readAll(t, c)
		if len(lines) != 1 || !strings.Contains(lines[0], "timed out waiting for a complete request line") {
			t.Errorf("input %q: got %q", in, lines)
		}
	}
	if len(h.Calls()) != 0 {
		t.Errorf("handler called: %q", h.Calls())
	}
}

// A client that hangs up after a complete exchange gets no error line.
func TestCleanHangUp(t *testing.T) {
	path, _ := startServer(t, &fakeHandler{status: &Status{}}, nil)
	c := rawDial(t, path)
	io.WriteString(c, `{"v":1,"cmd":"status"}`+"\n")
	c.CloseWrite()
	lines := readAll(t, c)
	if len(lines) != 1 || !decodeResponse(t, lines[0]).OK {
		t.Errorf("got %q", lines)
	}
}

func TestAuthorizeRefusal(t *testing.T) {
	refusal := "permission denied: uid 1000 is not root or the daemon's uid 0"
	h := &fakeHandler{status: &Status{}}
	var mu sync.Mutex
	var seen []Peer
	path, _ := startServer(t, h, func(p Peer) error {
		mu.Lock()
		seen = append(seen, p)
		mu.Unlock()
		return errors.New(refusal)
	})
	for _, req := range []Request{{Cmd: CmdStatus}, {Cmd: CmdKill}, {Cmd: CmdDrain, Wait: true}} {
		r, err := dial(t, path).Do(req, nil)
		if err == nil || err.Error() != refusal {
			t.Errorf("%s: got %v, want the refusal %q", req.Cmd, err, refusal)
		}
		if r == nil || r.OK {
			t.Errorf("%s: response %+v", req.Cmd, r)
		}
	}
	if len(h.Calls()) != 0 {
		t.Errorf("a refused peer reached the handler: %q", h.Calls())
	}
	mu.Lock()
	if len(seen) != 3 || seen[0].UID != os.Getuid() || seen[0].GID != os.Getgid() || seen[0].PID != os.Getpid() {
		t.Errorf("Authorize saw %+v", seen)
	}
	mu.Unlock()

	// A refused peer that sends a long line still gets the refusal.
	c := rawDial(t, path)
	c.Write(append(bytes.Repeat([]byte("y"), 2*MaxLine), '\n'))
	lines := readAll(t, c)
	if len(lines) != 1 || decodeResponse(t, lines[0]).Error != refusal {
		t.Errorf("long line from a refused peer: %q", lines)
	}
}

func TestAuthorizeAllows(t *testing.T) {
	h := &fakeHandler{status: &Status{PID: 1}}
	path, _ := startServer(t, h, Allow(os.Getuid(), -1))
	if _, err := dial(t, path).Do(Request{Cmd: CmdStatus}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestAllow(t *testing.T) {
	const self, group = 1000, 2000
	tests := []struct {
		name  string
		gid   int
		peer  Peer
		ok    bool
		error string
	}{
		{"root", group, Peer{UID: 0, GID: 0}, true, ""},
		{"root without group", -1, Peer{UID: 0, GID: 5}, true, ""},
		{"self", group, Peer{UID: self, GID: self}, true, ""},
		{"self without group", -1, Peer{UID: self, GID: self}, true, ""},
		{"primary group", group, Peer{UID: 3000, GID: group}, true, ""},
		{"supplementary group", group, Peer{UID: 3000, GID: 3000, Groups: []int{10, group, 20}}, true, ""},
		{"stranger", group, Peer{UID: 3000, GID: 3000, Groups: []int{10, 20}}, false,
			"permission denied: uid 3000 is not root, the daemon's uid 1000, or in group 2000"},
		{"stranger without group", -1, Peer{UID: 3000, GID: 3000}, false,
			"permission denied: uid 3000 is not root or the daemon's uid 1000"},
		{"gid -1 is not a group", -1, Peer{UID: 3000, GID: -1, Groups: []int{-1}}, false, "permission denied"},
		{"group 0 when configured", 0, Peer{UID: 3000, GID: 0}, true, ""},
	}
	for _, tt := range tests {
		err := Allow(self, tt.gid)(tt.peer)
		if tt.ok != (err == nil) {
			t.Errorf("%s: got %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !strings.HasPrefix(err.Error(), tt.error) {
			t.Errorf("%s: error %q, want %q", tt.name, err, tt.error)
		}
	}
}

func TestPeerOf(t *testing.T) {
	path := filepath.Join(shortDir(t), "p.sock")
	ln, err := Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rawDial(t, path)
	s, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := PeerOf(s)
	if err != nil {
		t.Fatal(err)
	}
	if p.PID != os.Getpid() || p.UID != os.Getuid() || p.GID != os.Getgid() {
		t.Errorf("PeerOf = %+v, want pid %d uid %d gid %d", p, os.Getpid(), os.Getuid(), os.Getgid())
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(groups)
	got := slices.Clone(p.Groups)
	slices.Sort(got)
	if !slices.Equal(got, groups) && !(len(got) == 0 && len(groups) == 0) {
		t.Errorf("peer groups %v, want %v", got, groups)
	}
}

func TestListen(t *testing.T) {
	dir := shortDir(t)

	t.Run("mode and directory", func(t *testing.T) {
		path := filepath.Join(dir, "new", "c.sock")
		ln, err := Listen(path, -1)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != 0o660 {
			t.Errorf("socket mode %v, want a socket with 0660", st.Mode())
		}
		ln.Close()
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket file left after Close: %v", err)
		}
	})

	t.Run("another server answers", func(t *testing.T) {
		path := filepath.Join(dir, "busy.sock")
		ln, err := Listen(path, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		_, err = Listen(path, -1)
		if err == nil || !strings.Contains(err.Error(), "another zfs-serve is answering") {
			t.Fatalf("second Listen: %v", err)
		}
		// The first one still works.
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
		c := rawDial(t, path)
		c.Close()
	})

	t.Run("stale socket", func(t *testing.T) {
		path := filepath.Join(dir, "stale.sock")
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		old.SetUnlinkOnClose(false)
		old.Close() // as after a crash: the file stays, nobody listens
		if st, err := os.Lstat(path); err != nil || st.Mode().Type() != os.ModeSocket {
			t.Fatalf("stale socket not there: %v", err)
		}
		ln, err := Listen(path, -1)
		if err != nil {
			t.Fatalf("Listen over a stale socket: %v", err)
		}
		defer ln.Close()
		st, _ := os.Lstat(path)
		if st.Mode().Perm() != 0o660 {
			t.Errorf("replaced socket mode %v", st.Mode())
		}
	})

	for _, tt := range []struct {
		name string
		make func(string) error
	}{
		{"regular file", func(p string) error { return os.WriteFile(p, []byte("precious"), 0o644) }},
		{"empty regular file", func(p string) error { return os.WriteFile(p, nil, 0o644) }},
		{"directory", func(p string) error { return os.Mkdir(p, 0o755) }},
		{"symlink to a file", func(p string) error {
			if err := os.WriteFile(p+".target", []byte("precious"), 0o644); err != nil {
				return err
			}
			return os.Symlink(filepath.Base(p)+".target", p)
		}},
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o644) }},
	} {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := tt.make(path); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Lstat(path)
			ln, err := Listen(path, -1)
			if err == nil {
				ln.Close()
				t.Fatalf("Listen replaced a %s", tt.name)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not a socket") {
				t.Errorf("error %q does not say that %s is not a socket", err, path)
			}
			after, err := os.Lstat(path)
			if err != nil || !os.SameFile(before, after) {
				t.Errorf("the %s was removed or replaced: %v", tt.name, err)
			}
		})
	}
}

// TestListenDirectory checks the socket's directory: created when missing,
// refused when someone else could replace or remove the socket in it.
func TestListenDirectory(t *testing.T) {
	root := os.Geteuid() == 0
	mkdir := func(mode os.FileMode) func(t *testing.T, d string) string {
		return func(t *testing.T, d string) string {
			sub := filepath.Join(d, "sub")
			if err := os.Mkdir(sub, 0o700); err != nil {
				t.Fatal(err)
			}
			// Chmod, not Mkdir's mode: the umask would clear bits.
			if err := os.Chmod(sub, mode); err != nil {
				t.Fatal(err)
			}
			return sub
		}
	}
	chown := func(mode os.FileMode, uid int) func(t *testing.T, d string) string {
		return func(t *testing.T, d string) string {
			sub := mkdir(mode)(t, d)
			if err := os.Chown(sub, uid, uid); err != nil {
				t.Fatal(err)
			}
			return sub
		}
	}
	for _, tt := range []struct {
		name string
		// dir makes the socket's directory under d and returns it.
		dir func(t *testing.T, d string) string
		// needRoot: the case chowns to another uid.
		needRoot bool
		// wantErr are substrings of the error; none: Listen succeeds.
		wantErr []string
	}{
		{
			name: "missing is created",
			dir:  func(t *testing.T, d string) string { return filepath.Join(d, "a", "b") },
		},
		{name: "private", dir: mkdir(0o700)},
		{name: "traversable", dir: mkdir(0o755)},
		{
			name:    "other-writable without sticky",
			dir:     mkdir(0o777),
			wantErr: []string{"mode drwxrwxrwx) is writable by group or others and not sticky", "--control"},
		},
		{
			name:    "group-writable without sticky",
			dir:     mkdir(0o770),
			wantErr: []string{"mode drwxrwx---) is writable by group or others and not sticky"},
		},
		{name: "other-writable sticky", dir: mkdir(0o777 | os.ModeSticky)},
		{
			name: "symlink to a directory",
			dir: func(t *testing.T, d string) string {
				target := mkdir(0o700)(t, d)
				link := filepath.Join(d, "link")
				if err := os.Symlink(target, link); err != nil {
					t.Fatal(err)
				}
				return link
			},
			wantErr: []string{"mode Lrwxrwxrwx) is a symbolic link, not a directory", "--control"},
		},
		{
			name:     "owned by another uid",
			dir:      chown(0o755, 65534),
			needRoot: true,
			wantErr:  []string{"(owner uid 65534, mode drwxr-xr-x) is owned by uid 65534", "--control"},
		},
		{
			name:     "owned by another uid, sticky",
			dir:      chown(0o777|os.ModeSticky, 65534),
			needRoot: true,
			wantErr:  []string{"owned by uid 65534", "--control"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needRoot && !root {
				t.Skip("chown of the directory to uid 65534 needs root")
			}
			dir := tt.dir(t, shortDir(t))
			path := filepath.Join(dir, "c.sock")
			ln, err := Listen(path, -1)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Listen: %v", err)
				}
				defer ln.Close()
				st, err := os.Lstat(dir)
				if err != nil || !st.IsDir() {
					t.Fatalf("socket directory %s: %v, %v", dir, st, err)
				}
				if st, err := os.Lstat(path); err != nil || st.Mode().Type() != os.ModeSocket {
					t.Errorf("no socket at %s: %v", path, err)
				}
				return
			}
			if err == nil {
				ln.Close()
				t.Fatalf("Listen accepted the directory %s", dir)
			}
			t.Logf("refused: %v", err)
			for _, want := range append([]string{dir}, tt.wantErr...) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			// Nothing was created, here or through the link.
			if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket created despite the error: %v", err)
			}
		})
	}
}

// TestListenSocketMode checks the socket's mode and group.
func TestListenSocketMode(t *testing.T) {
	// A group to give the socket: as root any; else one of ours that is
	// not the default (or the chown would prove nothing).
	otherGID := -1
	if os.Geteuid() == 0 {
		otherGID = 65534
	} else if groups, err := os.Getgroups(); err == nil {
		for _, g := range groups {
			if g != os.Getegid() {
				otherGID = g
				break
			}
		}
	}
	for _, tt := range []struct {
		name string
		gid  int // -2: otherGID
	}{
		{"no group", -1},
		{"group", -2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			gid := tt.gid
			if gid == -2 {
				if otherGID < 0 {
					t.Skip("not root and no supplementary group: cannot give the socket another group")
				}
				gid = otherGID
			}
			path := filepath.Join(shortDir(t), "c.sock")
			ln, err := Listen(path, gid)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			st, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			m := st.Mode()
			if m.Type() != os.ModeSocket || m&^os.ModeType != 0o660 {
				t.Errorf("socket mode %v, want srw-rw----", m)
			}
			if gid >= 0 {
				if got := st.Sys().(*syscall.Stat_t).Gid; int(got) != gid {
					t.Errorf("socket group %d, want %d", got, gid)
				}
			}
		})
	}
}

// Shutdown closes idle connections at once, waits for the ones being
// answered, then returns; the socket file is gone.
func TestShutdownWaitsForHandlers(t *testing.T) {
	h := &fakeHandler{status: &Status{PID: 42}, entered: make(chan struct{}, 1), release: make(chan struct{})}
	path := filepath.Join(shortDir(t), "c.sock")
	ln, err := Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: h, Log: discard}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	// An idle connection, with a request answered: the server has it.
	idle := rawDial(t, path)
	io.WriteString(idle, `{"v":1,"cmd":"kill"}`+"\n")
	if line, err := bufio.NewReader(idle).ReadString('\n'); err != nil || !strings.Contains(line, "killed") {
		t.Fatalf("kill on the idle connection: %q %v", line, err)
	}

	// A connection being answered.
	type result struct {
		r   *Response
		err error
	}
	busy := make(chan result, 1)
	c := dial(t, path)
	go func() {
		r, err := c.Do(Request{Cmd: CmdStatus}, nil)
		busy <- result{r, err}
	}()
	select {
	case <-h.entered:
	case <-time.After(wait):
		t.Fatal("handler not called")
	}

	shut := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
		defer cancel()
		srv.Shutdown(ctx)
		close(shut)
	}()

	// Serve returns and the idle connection is closed without waiting for
	// the busy one.
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Serve did not return")
	}
	idle.SetReadDeadline(time.Now().Add(wait))
	if n, err := idle.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("idle connection during Shutdown: read %d, %v; want it closed", n, err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file still there after Shutdown began: %v", err)
	}
	select {
	case <-shut:
		t.Fatal("Shutdown returned while a handler was still answering")
	case r := <-busy:
		t.Fatalf("the busy request ended before its handler returned: %+v %v", r.r, r.err)
	default:
	}

	close(h.release)
	select {
	case r := <-busy:
		if r.err != nil || r.r.Status == nil || r.r.Status.PID != 42 {
			t.Errorf("busy request: %+v %v", r.r, r.err)
		}
	case <-time.After(wait):
		t.Fatal("busy request not answered")
	}
	select {
	case <-shut:
	case <-time.After(wait):
		t.Fatal("Shutdown did not return after the handler")
	}
}

// When Shutdown's context ends, handlers still running are cancelled and
// their connections closed, so Shutdown returns.
func TestShutdownDeadline(t *testing.T) {
	h := &fakeHandler{status: &Status{}, entered: make(chan struct{}, 1), release: make(chan struct{})}
	defer close(h.release)
	path, srv := startServer(t, h, nil)
	busy := make(chan error, 1)
	c := dial(t, path)
	go func() {
		_, err := c.Do(Request{Cmd: CmdStatus}, nil)
		busy <- err
	}()
	select {
	case <-h.entered:
	case <-time.After(wait):
		t.Fatal("handler not called")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	shut := make(chan struct{})
	go func() { srv.Shutdown(ctx); close(shut) }()
	select {
	case <-shut:
	case <-time.After(wait):
		t.Fatal("Shutdown with an expired context waits for a handler")
	}
	select {
	case err := <-busy:
		if err == nil {
			t.Error("the cut-off request succeeded")
		}
	case <-time.After(wait):
		t.Fatal("the cut-off client got nothing")
	}
}

func TestServeAfterShutdown(t *testing.T) {
	path := filepath.Join(shortDir(t), "c.sock")
	ln, err := Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: &fakeHandler{}, Log: discard}
	srv.Shutdown(context.Background())
	if err := srv.Serve(ln); err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Serve after Shutdown left the listener open (socket file: %v)", err)
	}
}

// serveBytes runs one control connection whose peer sends in and
// half-closes, and returns everything the server wrote.
func serveBytes(t testing.TB, s *Server, in []byte) []byte {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	srvConn, cli := conn(fds[0]), conn(fds[1])
	defer cli.Close()
	s.mu.Lock()
	s.wg.Add(1)
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.serveConn(srvConn); close(done) }()
	go func() {
		cli.Write(in) // fails once the server has closed; that is fine
		cli.CloseWrite()
	}()
	cli.SetReadDeadline(time.Now().Add(wait))
	out, err := io.ReadAll(cli)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("reading the server's output: %v (input %q)", err, in)
	}
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("serveConn did not return")
	}
	return out
}

func FuzzServerRequest(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"cmd":"status"}` + "\n",
		`{"v":1,"cmd":"status"}` + "\n" + `{"v":1,"cmd":"kill"}` + "\n",
		`{"v":1,"cmd":"drain","wait":true,"timeout":"30s"}` + "\n",
		`{"v":1,"cmd":"drain","timeout":"x"}` + "\n" + `{"v":1,"cmd":"status"}` + "\n",
		`{"v":1,"cmd":"reload","wait":true}` + "\n",
		`{"v":1,"cmd":"reload"}` + "\n",
		`{"v":2,"cmd":"status"}` + "\n",
		`{"v":1,"cmd":"nope"}` + "\n",
		`{"v":1,"cmd":"status"}`,
		`{"v":1,"cmd":"status","wait":"yes"}` + "\n",
		`{"v":1e400}` + "\n",
		`{"v":1,"cmd":"status","cmd":"kill"}` + "\n",
		`{"v":1,"cmd":"status","CMD":"kill"}` + "\n",
		`{"v":1,"cmd":"status","x":{"a":1,"a":2}}` + "\n",
		"\n\n",
		"null\n",
		"[]\n",
		"\xff\xfe\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h := &fakeHandler{status: sampleStatus(), progress: 2, reloadMsg: "generation 2 serving", killErr: errors.New("kill: not now")}
		s := &Server{Handler: h, Log: discard}
		out := serveBytes(t, s, in)
		lines := checkLines(t, out)
		// Every request line gets at most one final answer; progress only
		// for waiting requests.
		final := 0
		for _, l := range lines {
			var r Response
			json.Unmarshal([]byte(l), &r)
			if r.Event == "" {
				final++
			}
		}
		if n := bytes.Count(in, []byte("\n")) + 1; final > n || (len(in) == 0 && len(lines) > 0) {
			t.Fatalf("%d final answers to %d lines: %q", final, n, out)
		}
		// A first line with a duplicated key runs nothing: the server
		// answers an error and hangs up.
		if first, _, _ := bytes.Cut(in, []byte("\n")); duplicateKey(first) != nil && len(h.Calls()) > 0 {
			t.Fatalf("a request with a duplicated key ran %q", h.Calls())
		}
	})
}

// A peer's rights are checked for every request: taken away (a reload
// changed control_group), they end on a connection it keeps open too.
func TestAuthorizeEveryRequest(t *testing.T) {
	h := &fakeHandler{status: &Status{PID: 1}}
	var denied atomic.Bool
	path, _ := startServer(t, h, func(Peer) error {
		if denied.Load() {
			return errors.New("permission denied: not any more")
		}
		return nil
	})
	c := dial(t, path)
	if _, err := c.Do(Request{Cmd: CmdStatus}, nil); err != nil {
		t.Fatal(err)
	}
	denied.Store(true)
	if _, err := c.Do(Request{Cmd: CmdKill}, nil); err == nil || !strings.Contains(err.Error(), "not any more") {
		t.Fatalf("kill after the rights were taken away: %v", err)
	}
	for _, call := range h.Calls() {
		if strings.HasPrefix(call, "kill") {
			t.Fatalf("the handler was called: %q", h.Calls())
		}
	}
}
