package ctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

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
