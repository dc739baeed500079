package ctl

import (
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
