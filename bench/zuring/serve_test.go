package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

var modes = []string{"epoll", "uring", "uring-lazy", "uring-poll"}

// startServer serves dir's files in mode from an event loop in this test
// process and returns its address. The loop's goroutine stays until the
// test binary exits (run has no stop: the probe is stopped by a signal).
// It sets the server up and runs it on one locked thread, as main does:
// uring-poll's ring takes submissions from the thread that made it
// (IORING_SETUP_SINGLE_ISSUER) and posts its completions on that thread.
func startServer(t *testing.T, mode string, files map[string]*file) string {
	t.Helper()
	return startServerWait(t, mode, false, files)
}

// startServerWait is startServer with -rawwait given.
func startServerWait(t *testing.T, mode string, rawWait bool, files map[string]*file) string {
	t.Helper()
	lfd, ap, err := listen(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	made := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		s, err := newServer(lfd, mode, rawWait, files)
		made <- err
		if err != nil {
			return
		}
		err = s.run()
		panic(fmt.Sprintf("%s loop: %v", mode, err))
	}()
	if err := <-made; err != nil {
		unix.Close(lfd)
		skipIfNoUring(t, err)
		t.Fatal(err)
	}
	return ap.String()
}

func testFiles(t *testing.T) (map[string]*file, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	want := map[string][]byte{
		"/a":     bytes.Repeat([]byte("a"), 4096),
		"/sub/b": bytes.Repeat([]byte("0123456789"), 6553), // just under 64 KiB
	}
	for name, b := range want {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, maxFile+1), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Fatalf("loaded %d files, want 2 (the one over 64 KiB skipped)", len(files))
	}
	return files, want
}

// readResponse reads one response and returns its status and body.
func readResponse(t *testing.T, r *bufio.Reader, method string) (int, []byte, bool) {
	t.Helper()
	resp, err := http.ReadResponse(r, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body, resp.Close
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialSmallReceive connects to addr with a 4 KiB receive buffer, so that
// the server's sends come back short or EAGAIN.
func dialSmallReceive(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return nil
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestServe sends pipelined requests in one write, more than one send's
// worth (maxBatch) and more than the socket buffers hold, through a small
// receive buffer, so that sends come back short or EAGAIN; then a request
// with Connection: close.
func TestServe(t *testing.T) {
	files, want := testFiles(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			addr := startServer(t, mode, files)
			c := dialSmallReceive(t, addr)
			type ask struct{ method, path string }
			var asks []ask
			var reqs strings.Builder
			for i := range 3*maxBatch + 5 {
				a := ask{"GET", "/sub/b"}
				switch i % 4 {
				case 1:
					a = ask{"GET", "/a?x=1"}
				case 2:
					a = ask{"HEAD", "/a"}
				case 3:
					a = ask{"GET", "/big"}
				}
				asks = append(asks, a)
				fmt.Fprintf(&reqs, "%s %s HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n", a.method, a.path)
			}
			asks = append(asks, ask{"GET", "/a"})
			reqs.WriteString("GET /a HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n")
			go io.WriteString(c, reqs.String()) // the server stops reading while its sends wait
			r := bufio.NewReader(c)
			for i, a := range asks {
				status, body, closing := readResponse(t, r, a.method)
				path, _, _ := strings.Cut(a.path, "?")
				wantStatus, wantBody := 200, want[path]
				if wantBody == nil {
					wantStatus, wantBody = 404, []byte("not found\n")
				}
				if a.method == "HEAD" {
					wantBody = []byte{}
				}
				if status != wantStatus || sha256.Sum256(body) != sha256.Sum256(wantBody) || closing != (i == len(asks)-1) {
					t.Fatalf("response %d to %s %s: %d, %d bytes, close %v; want %d, %d bytes, close %v",
						i, a.method, a.path, status, len(body), closing, wantStatus, len(wantBody), i == len(asks)-1)
				}
			}
			if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("after Connection: close: read %d, %v; want EOF", n, err)
			}
		})
	}
}

// TestServeBadRequest checks that a malformed or too long head is answered
// 400 and the connection closed, in every mode.
func TestServeBadRequest(t *testing.T) {
	files, _ := testFiles(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { testBadRequest(t, mode, files) })
	}
}

func testBadRequest(t *testing.T, mode string, files map[string]*file) {
	addr := startServer(t, mode, files)
	for _, req := range []string{
		"GET /a HTTP/1.1\r\nX-Long: " + strings.Repeat("x", maxHead) + "\r\n\r\n",
		"GET /a HTTP/1.1\r\nX-Long: " + strings.Repeat("x", recvBuf), // never ends
		"BREW /a HTTP/1.1\r\n\r\n",
	} {
		c := dial(t, addr)
		go io.WriteString(c, req)
		r := bufio.NewReader(c)
		if status, _, closing := readResponse(t, r, "GET"); status != 400 || !closing {
			t.Fatalf("%.20q: %d, close %v; want 400, close", req, status, closing)
		}
		// The server closes with the rest of the request unread, so
		// the kernel may send a reset rather than a FIN.
		if _, err := r.ReadByte(); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("%.20q: after the 400: %v, want EOF or a reset", req, err)
		}
	}
}
