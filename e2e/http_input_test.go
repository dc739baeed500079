package e2e

import (
	"bufio"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rawHTTP sends raw bytes on a new connection and reads the first
// response, and whether the server then closed the connection.
func rawHTTP(t *testing.T, addr, raw string) (*http.Response, string, bool) {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	method := "GET"
	if strings.HasPrefix(raw, "HEAD ") {
		method = "HEAD"
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%q: no HTTP response: %v", raw, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// Closed: EOF on the next read (a kept-alive connection times out
	// instead, after idle_timeout, set high here).
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = br.ReadByte()
	closed := err == io.EOF || isReset(err)
	return resp, string(body), closed
}

func isReset(err error) bool {
	var errno syscall.Errno
	return err != nil && (strings.Contains(err.Error(), "reset") || (errorsAs(err, &errno) && errno == syscall.ECONNRESET))
}

func errorsAs(err error, target *syscall.Errno) bool {
	for err != nil {
		if e, ok := err.(syscall.Errno); ok {
			*target = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// TestHTTPBadInput: smuggling attempts, oversized heads, hostile paths,
// and conditionals: each gets its status, and the worker keeps serving.
func TestHTTPBadInput(t *testing.T) {
	t.Parallel() // waits more than it works: runs beside the others (scripts/test: -parallel 4)
	root, _ := httpTree(t)
	outside := shortTempDir(t)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "abs-link"))
	os.Symlink("small.txt", filepath.Join(root, "good-link"))
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: "idle_timeout = \"60s\"\nheader_timeout = \"2s\"\n"})
	stillServing := func(t *testing.T) {
		t.Helper()
		resp, body, _ := rawHTTP(t, d.Addr, "GET /list/a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp.StatusCode != 200 || len(body) != 10 {
			t.Fatalf("the next request failed: %d %q", resp.StatusCode, body)
		}
	}
	long := strings.Repeat("a", 9000)
	many := strings.Repeat("X-A: b\r\n", 150)
	for _, tc := range []struct {
		name   string
		raw    string
		status int
		closed bool
	}{
		{"POST", "POST /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, false},
		{"body", "GET /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 413, true},
		{"chunked", "GET /small.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, true},
		{"CL and TE", "GET /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, true},
		{"duplicate CL", "GET /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", 400, true},
		{"obs-fold", "GET /small.txt HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n", 400, true},
		{"bare LF", "GET /small.txt HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", 400, true},
		{"bad version", "GET /small.txt HTTP/1.x\r\nHost: x\r\n\r\n", 400, true},
		{"HTTP/2.0", "GET /small.txt HTTP/2.0\r\nHost: x\r\n\r\n", 505, true},
		{"no Host", "GET /small.txt HTTP/1.1\r\n\r\n", 400, true},
		{"huge header", "GET /small.txt HTTP/1.1\r\nHost: x\r\nX-Long: " + long + "\r\n\r\n", 431, true},
		{"many headers", "GET /small.txt HTTP/1.1\r\nHost: x\r\n" + many + "\r\n", 431, true},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not a request\r\n\r\n", 400, true},
		{"traversal", "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 403, false},
		{"encoded traversal", "GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 403, false},
		{"encoded slash", "GET /list%2fa.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400, true},
		{"encoded NUL", "GET /small.txt%00.html HTTP/1.1\r\nHost: x\r\n\r\n", 400, true},
		{"invalid UTF-8", "GET /%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n", 400, true},
		{"symlink out", "GET /abs-link HTTP/1.1\r\nHost: x\r\n\r\n", 403, false},
		{"FIFO", "GET /fifo HTTP/1.1\r\nHost: x\r\n\r\n", 403, false},
		{"file with a slash", "GET /small.txt/ HTTP/1.1\r\nHost: x\r\n\r\n", 404, false},
		{"missing", "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, false},
		{"good symlink, query ignored", "GET /good-link?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", 200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, closed := rawHTTP(t, d.Addr, tc.raw)
			if resp.StatusCode != tc.status || closed != tc.closed {
				t.Fatalf("got %d (closed %v) %q, want %d (closed %v)", resp.StatusCode, closed, body, tc.status, tc.closed)
			}
			if tc.status == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
				t.Fatalf("405 without Allow: %v", resp.Header)
			}
			if strings.Contains(body, "secret") {
				t.Fatal("the secret left the root")
			}
			stillServing(t)
		})
	}

	t.Run("large body refused, the answer still arrives", func(t *testing.T) {
		// The server closes after 413 without reading the body: unless it
		// lingers, the unread bytes reset the connection and the client
		// may never see the answer.
		c := dial(t, d.Addr)
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		body := strings.Repeat("x", 4<<20)
		go func() {
			io.WriteString(c, "GET /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: "+fmt.Sprint(len(body))+"\r\n\r\n")
			io.WriteString(c, body)
		}()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 413 {
			t.Fatalf("got %v, %v; want 413", resp, err)
		}
		stillServing(t)
	})

	t.Run("conditionals and If-Range", func(t *testing.T) {
		resp, _, _ := rawHTTP(t, d.Addr, "HEAD /small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
		etag, lm := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
		if !strings.HasPrefix(etag, `"`) || lm == "" {
			t.Fatalf("validators: %q %q", etag, lm)
		}
		for _, tc := range []struct {
			hdr    string
			status int
		}{
			{"If-None-Match: " + etag, 304},
			{"If-None-Match: \"other\"", 200},
			{"If-Modified-Since: " + lm, 304},
			{"If-Match: \"other\"", 412},
			{"If-Match: " + etag, 200},
			{"If-Unmodified-Since: Mon, 01 Jan 2001 00:00:00 GMT", 412},
			{"Range: bytes=0-9\r\nIf-Range: " + etag, 206},
			{"Range: bytes=0-9\r\nIf-Range: \"stale\"", 200},
			{"Range: bytes=0-9\r\nIf-Range: " + lm, 206},
			{"Range: bytes=0-9\r\nIf-Range: Mon, 01 Jan 2001 00:00:00 GMT", 200},
			{"Range: bytes=5000-6000", 416},
		} {
			resp, _, _ := rawHTTP(t, d.Addr, "GET /small.txt HTTP/1.1\r\nHost: x\r\n"+tc.hdr+"\r\n\r\n")
			if resp.StatusCode != tc.status {
				t.Errorf("%q: %d, want %d", tc.hdr, resp.StatusCode, tc.status)
			}
			if tc.status == 416 && resp.Header.Get("Content-Range") != "bytes */4096" {
				t.Errorf("416 Content-Range %q", resp.Header.Get("Content-Range"))
			}
		}
	})

	t.Run("multipart ranges", func(t *testing.T) {
		whole, _ := os.ReadFile(filepath.Join(root, "small.txt"))
		resp, body, _ := rawHTTP(t, d.Addr, "GET /small.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9,100-149,-5\r\n\r\n")
		mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if resp.StatusCode != 206 || err != nil || mt != "multipart/byteranges" {
			t.Fatalf("%d %q %v", resp.StatusCode, resp.Header.Get("Content-Type"), err)
		}
		mr := multipart.NewReader(strings.NewReader(body), params["boundary"])
		want := []struct {
			cr   string
			data []byte
		}{{"bytes 0-9/4096", whole[:10]}, {"bytes 100-149/4096", whole[100:150]}, {"bytes 4091-4095/4096", whole[4091:]}}
		for i, w := range want {
			p, err := mr.NextPart()
			if err != nil {
				t.Fatalf("part %d: %v", i, err)
			}
			got, _ := io.ReadAll(p)
			if p.Header.Get("Content-Range") != w.cr || string(got) != string(w.data) {
				t.Fatalf("part %d: %q %d bytes", i, p.Header.Get("Content-Range"), len(got))
			}
		}
		if _, err := mr.NextPart(); err != io.EOF {
			t.Fatalf("after the parts: %v", err)
		}
	})

	t.Run("slowloris head", func(t *testing.T) {
		c := dial(t, d.Addr)
		defer c.Close()
		start := time.Now()
		req := "GET /small.txt HTTP/1.1\r\nHost: x\r\n"
		for i := 0; i < 60; i++ { // at most 6 s of trickle; header_timeout is 2 s
			if _, err := io.WriteString(c, req[i%len(req):i%len(req)+1]); err != nil {
				break
			}
			time.Sleep(100 * time.Millisecond) // the client is slow on purpose
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(c)
		if !strings.HasPrefix(string(b), "HTTP/1.1 408") && len(b) != 0 {
			t.Fatalf("slowloris got %q", b)
		}
		t.Logf("trickling client cut off after %v", time.Since(start).Round(time.Millisecond))
		stillServing(t)
	})

	t.Run("client that never reads", func(t *testing.T) {
		c := dial(t, d.Addr)
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(c, "GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
		d.WaitStatus(5*time.Second, "an http transfer", func(st *ctlStatus) bool {
			return len(st.Transfers) == 1 && st.Transfers[0].Protocol == "http" && st.Transfers[0].Path == "/big.bin"
		})
		stillServing(t)
	})
}

// TestHTTPOff: http = false closes a connection that is not native.
func TestHTTPOff(t *testing.T) {
	root, _ := httpTree(t)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: "http = false\n"})
	c := dial(t, d.Addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Fatalf("http = false answered %q", b)
	}
	if r := Zfetch(t, "-q", "-o", "-", d.URL("/list/a.txt")); r.Code != 0 || len(r.Stdout) != 10 {
		t.Fatalf("native: %d %s", r.Code, r.Stderr)
	}
}
