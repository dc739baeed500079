package serve

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/wire"
)

// newHTTPServer is newTestServer with HTTP on.
func newHTTPServer(t *testing.T, opts ...func(*Options)) *testServer {
	t.Helper()
	return newTestServer(t, config.ModeSendfile, append([]func(*Options){func(o *Options) {
		o.HTTP = true
		o.Index = []string{"index.html"}
		o.MaxRanges = 16
	}}, opts...)...)
}

// httpDo sends raw on the test connection and reads one response to
// method (its body read whole).
func (ts *testServer) httpDo(t *testing.T, method, raw string) (*http.Response, []byte) {
	t.Helper()
	ts.client.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(ts.client, raw); err != nil {
		t.Fatal(err)
	}
	return ts.httpRead(t, method)
}

func (ts *testServer) httpRead(t *testing.T, method string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(ts.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return resp, body
}

// TestHTTPRedirectStaysOnHost: the redirect of a directory to its name
// with a slash is a path on this server, whatever the request's spelling:
// "//evil.com" naming the directory "evil.com" must not become the
// scheme-relative "//evil.com/", which a browser follows to another host.
func TestHTTPRedirectStaysOnHost(t *testing.T) {
	ts := newHTTPServer(t)
	for _, d := range []string{"evil.com", "sub/x"} {
		if err := os.MkdirAll(filepath.Join(ts.root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ target, want string }{
		{"/evil.com", "/evil.com/"},
		{"//evil.com", "/evil.com/"},
		{"///evil.com?q=1", "/evil.com/?q=1"},
		{"/.//evil.com", "/evil.com/"},
		{"/./evil.com", "/evil.com/"},
		{"//sub//x", "/sub/x/"},
		{"/sub/x/.", "/sub/x/"},
		{"/.", "/"},
		{"http://other.example//evil.com", "/evil.com/"},
	} {
		resp, _ := ts.httpDo(t, "GET", "GET "+tc.target+" HTTP/1.1\r\nHost: x\r\n\r\n")
		if loc := resp.Header.Get("Location"); resp.StatusCode != 301 || loc != tc.want {
			t.Errorf("GET %s: %d Location %q, want 301 %q", tc.target, resp.StatusCode, loc, tc.want)
		}
	}
	// The redirect's target is served (no loop).
	resp, _ := ts.httpDo(t, "GET", "GET /evil.com/ HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("GET /evil.com/: %d", resp.StatusCode)
	}
}

// TestHTTPCloseDoesNotResetResponse: when the server closes a connection
// after a response (here the request said Connection: close) while the
// client has sent more (a pipelined request), the close must not reset
// the connection: a reset throws away what is still queued in the
// server's socket, and the client gets a truncated response.
func TestHTTPCloseDoesNotResetResponse(t *testing.T) {
	ts := newHTTPServer(t)
	const size = 16 << 20 // much more than the socket buffers hold
	data := random(size)
	ts.write(t, "big", data)
	c := ts.client.(*net.TCPConn)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The response has started: the server is sending, not reading, so
	// the next request stays unread in its socket.
	if _, err := ts.br.Peek(1); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Read the body only slowly until the server has queued all of it,
	// and give it the time to close the connection.
	resp, err := http.ReadResponse(ts.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 0, size)
	buf := make([]byte, 64<<10)
	for {
		ts, _ := ts.srv.Transfers(1)
		if len(ts) == 0 {
			break
		}
		n, err := resp.Body.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF && len(got) == size {
			break // the whole body, read before the server took its transfer off the list
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
	}
	select {
	case <-ts.result:
	case <-time.After(2 * time.Second): // the server lingers: fine
	}
	rest, err := io.ReadAll(resp.Body)
	got = append(got, rest...)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("got %d of %d bytes (equal: %v), err %v", len(got), size, bytes.Equal(got, data), err)
	}
	if b, err := ts.br.ReadByte(); err != io.EOF {
		t.Fatalf("after the response: %q %v, want EOF", b, err)
	}
	c.Close()
	if r := <-ts.result; r.Requests != 1 || r.Outcome != OutcomeClosed {
		t.Fatalf("result %+v", r)
	}
}

// TestHTTPRefusedHeadHasNoBody: a response to HEAD has no content (RFC
// 9110 section 9.3.2), a refusal of the head included: a client reads no
// body after it, and bytes sent anyway would be taken for the next
// response.
func TestHTTPRefusedHeadHasNoBody(t *testing.T) {
	for _, tc := range []struct {
		raw    string
		status int
	}{
		{"HEAD /f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", 413},
		{"HEAD /f HTTP/1.1\r\n\r\n", 400},
		{"\r\nHEAD /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"HEAD /f HTTP/1.2\r\nHost: x\r\n\r\n", 505},
		{"HEAD /f HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 9000) + "\r\n\r\n", 431},
	} {
		ts := newHTTPServer(t)
		ts.write(t, "f", []byte("data"))
		resp, _ := ts.httpDo(t, "HEAD", tc.raw)
		if resp.StatusCode != tc.status {
			t.Errorf("%.40q: %d, want %d", tc.raw, resp.StatusCode, tc.status)
		}
		if b, err := ts.br.ReadByte(); err != io.EOF {
			t.Errorf("%.40q: after the head of the %d: %q %v, want EOF", tc.raw, resp.StatusCode, b, err)
		}
	}
}

// TestListingBuildsBounded: a worker builds at most maxListBuilds
// listings at once, HTTP and native LIST alike; the others wait. Each
// build holds a whole directory in memory (hundreds of megabytes for
// twenty concurrent requests of a directory of 100000 files, before the
// bound).
func TestListingBuildsBounded(t *testing.T) {
	ts := newHTTPServer(t)
	ts.write(t, "d/a", []byte("1"))
	for range cap(ts.srv.listBuilds) {
		ts.srv.listBuilds <- struct{}{} // as if others were being built
	}
	native := ts.srv.Stats().NativeRequests
	ts.client.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(ts.client, "GET /d/ HTTP/1.1\r\nHost: x\r\n\r\n")
	other := &testServer{srv: ts.srv, result: make(chan Result, 1)}
	other.connect(t) // a second connection to the same server
	nc := other.client
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := wire.WriteRequest(nc, &wire.Request{Op: wire.OpList, Path: "/d"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for st := ts.srv.Stats(); st.HTTPRequests != 1 || st.NativeRequests != native+1; st = ts.srv.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("the requests did not arrive: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Both wait for a token: no answer yet.
	ts.client.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if b, err := ts.br.Peek(1); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("HTTP listing built beyond the bound: %q %v", b, err)
	}
	nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var b [1]byte
	if _, err := nc.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("LIST built beyond the bound: %q %v", b, err)
	}
	<-ts.srv.listBuilds
	ts.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if resp, body := ts.httpRead(t, "GET"); resp.StatusCode != 200 || !strings.Contains(string(body), `href="a"`) {
		t.Fatalf("HTTP listing: %d %q", resp.StatusCode, body)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if r, err := wire.ReadResponse(nc); err != nil || r.Status != wire.StatusOK {
		t.Fatalf("LIST: %+v %v", r, err)
	}
	if n := len(ts.srv.listBuilds); n != cap(ts.srv.listBuilds)-1 {
		t.Fatalf("%d listing tokens held after the responses, want %d", n, cap(ts.srv.listBuilds)-1)
	}
}

func withHTTP(o *Options) {
	o.HTTP = true
	o.Index = []string{"index.html"}
	o.MaxRanges = 4
}

// TestHTTPOneConnection runs a sequence of requests on one kept-alive
// connection, in every send mode: each response is complete and exact,
// so the next one parses (no stray body bytes after HEAD, 304, errors).
func TestHTTPOneConnection(t *testing.T) {
	for _, mode := range config.Modes {
		t.Run(mode, func(t *testing.T) {
			ts := newTestServer(t, mode, withHTTP)
			data := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320000 bytes: several chunks
			os.WriteFile(filepath.Join(ts.root, "f.bin"), data, 0o644)
			os.MkdirAll(filepath.Join(ts.root, "d", "e"), 0o755)
			os.WriteFile(filepath.Join(ts.root, "d", "index.html"), []byte("<p>hi</p>"), 0o644)
			os.WriteFile(filepath.Join(ts.root, "d", "e", "x.txt"), []byte("x"), 0o644)
			os.MkdirAll(filepath.Join(ts.root, "g", "index.html"), 0o755)             // an index name that is a folder: listed
			os.Symlink("/etc/passwd", filepath.Join(ts.root, "d", "e", "index.html")) // an index name leading out: listed
			for _, tc := range []struct {
				raw, method string
				status      int
				body        string
				hdr         string // "Name: value" that must be present
			}{
				{"GET /f.bin HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 200, string(data), "Content-Type: application/octet-stream"},
				{"HEAD /f.bin HTTP/1.1\r\nHost: h\r\n\r\n", "HEAD", 200, "", "Accept-Ranges: bytes"},
				{"GET /f.bin HTTP/1.1\r\nHost: h\r\nRange: bytes=5-9\r\n\r\n", "GET", 206, string(data[5:10]), "Content-Range: bytes 5-9/320000"},
				{"GET /f.bin HTTP/1.1\r\nHost: h\r\nRange: bytes=-3\r\n\r\n", "GET", 206, string(data[len(data)-3:]), ""},
				{"GET /f.bin HTTP/1.1\r\nHost: h\r\nRange: bytes=999999-\r\n\r\n", "GET", 416, "", "Content-Range: bytes */320000"},
				{"GET /f.bin HTTP/1.1\r\nHost: h\r\nRange: bytes=0-0,1-1,2-2,3-3,4-4\r\n\r\n", "GET", 200, string(data), ""}, // over max_ranges
				{"GET /f.bin HTTP/1.1\r\nHost: h\r\nIf-None-Match: *\r\n\r\n", "GET", 304, "", ""},
				{"GET /f.bin HTTP/1.1\r\nHost: h\r\nIf-Match: \"nope\"\r\n\r\n", "GET", 412, "", ""},
				{"DELETE /f.bin HTTP/1.1\r\nHost: h\r\n\r\n", "DELETE", 405, "", "Allow: GET, HEAD"},
				{"GET /missing HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 404, "", ""},
				{"GET /f.bin/ HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 404, "", ""},
				{"GET /../f.bin HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 403, "", ""},
				{"GET /d HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 301, "", "Location: /d/"},
				{"GET /d/ HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 200, "<p>hi</p>", "Content-Type: text/html; charset=utf-8"},
				{"GET /d/e/?format=json HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 200, "", "Content-Type: application/json"},
				{"GET /g/ HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 200, "", "Vary: Accept"},
				{"GET /d/index.html/ HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 404, "", ""},
				{"GET /nope/ HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 404, "", ""},
				{"GET /d/./ HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 200, "<p>hi</p>", "Content-Type: text/html; charset=utf-8"},
				{"HEAD /d/e/ HTTP/1.1\r\nHost: h\r\n\r\n", "HEAD", 200, "", "Vary: Accept"},
				{"GET /f.bin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", "GET", 200, string(data), "Connection: close"},
			} {
				resp, body := ts.httpDo(t, tc.method, tc.raw)
				if resp.StatusCode != tc.status {
					t.Fatalf("%q: %d, want %d", tc.raw, resp.StatusCode, tc.status)
				}
				if tc.body != "" && string(body) != tc.body {
					t.Fatalf("%q: body of %d bytes differs", tc.raw, len(body))
				}
				if tc.method == "HEAD" && len(body) != 0 {
					t.Fatalf("%q: HEAD with a body", tc.raw)
				}
				if tc.hdr == "Connection: close" {
					if !resp.Close {
						t.Fatalf("%q: no Connection: close", tc.raw)
					}
				} else if tc.hdr != "" {
					k, v, _ := strings.Cut(tc.hdr, ": ")
					if got := resp.Header.Get(k); !strings.Contains(got, v) {
						t.Fatalf("%q: %s = %q, want %q", tc.raw, k, got, v)
					}
				}
			}
			res := <-ts.result
			if res.Outcome != OutcomeClosed || res.Requests != 21 {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

// TestHTTPNativeSniff: the first bytes pick the protocol, and with HTTP
// off a connection that is not native is closed without an answer.
func TestHTTPOffClosesNonNative(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	io.WriteString(ts.client, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if b, err := io.ReadAll(ts.br); len(b) != 0 || err != nil {
		t.Fatalf("http = false answered %q (%v)", b, err)
	}
	if res := <-ts.result; res.Outcome != OutcomeBadRequest {
		t.Fatalf("outcome %q", res.Outcome)
	}
}

// TestHTTPEmptyFileSuffixRange: for an empty file a suffix range
// ("bytes=-N", N > 0) is satisfiable (RFC 9110 section 14.1.2) but selects
// no byte, so the Range is ignored: 200 with the empty file, not 416. A
// set of only int-ranges stays unsatisfiable (416), and the connection
// stays open either way.
func TestHTTPEmptyFileSuffixRange(t *testing.T) {
	ts := newHTTPServer(t)
	ts.write(t, "empty", nil)
	for _, tc := range []struct {
		rng  string
		want int
	}{
		{"bytes=-5", 200},
		{"bytes=0-0,-1", 200},
		{"bytes=0-", 416},
		{"bytes=-0", 416},
	} {
		for _, method := range []string{"GET", "HEAD"} {
			resp, body := ts.httpDo(t, method, method+" /empty HTTP/1.1\r\nHost: x\r\nRange: "+tc.rng+"\r\n\r\n")
			if resp.StatusCode != tc.want {
				t.Errorf("%s Range %s: %d, want %d", method, tc.rng, resp.StatusCode, tc.want)
			}
			if tc.want == 200 && (len(body) != 0 || resp.ContentLength != 0 || resp.Header.Get("Content-Range") != "") {
				t.Errorf("%s Range %s: Content-Length %d, body %q, Content-Range %q; want an empty 200",
					method, tc.rng, resp.ContentLength, body, resp.Header.Get("Content-Range"))
			}
		}
	}
}

// TestHTTPListingPreconditions: a listing has no entity tag and no
// modification date, but If-Match and If-None-Match still apply to it
// (RFC 9110 sections 13.1.1, 13.1.2, 13.2.1: the origin server must
// evaluate them for a request it would answer 2xx): a list of entity tags
// matches nothing (If-Match: 412), "*" matches the listing (If-None-Match:
// 304, with the Vary and Cache-Control a 200 has). If-Modified-Since and
// If-Unmodified-Since have no date to compare with and are ignored. A
// redirect or a refusal takes precedence (section 13.2.1).
func TestHTTPListingPreconditions(t *testing.T) {
	ts := newHTTPServer(t)
	if err := os.MkdirAll(filepath.Join(ts.root, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	ts.write(t, "d/a", []byte("a"))
	old := "Sat, 01 Jan 2000 00:00:00 GMT"
	for _, tc := range []struct {
		target, field string
		want          int
	}{
		{"/d/", `If-Match: "x"`, 412},
		{"/d/", `If-Match: *`, 200},
		{"/d/", `If-None-Match: *`, 304},
		{"/d/?format=json", `If-None-Match: *`, 304},
		{"/d/", `If-None-Match: "x"`, 200},
		{"/d/", `If-None-Match: W/"x", "y"`, 200},
		{"/d/", "If-Unmodified-Since: " + old, 200},
		{"/d/", "If-Modified-Since: Sat, 01 Jan 2050 00:00:00 GMT", 200},
		{"/d", `If-Match: "x"`, 301},
		{"/d", `If-None-Match: *`, 301},
		{"/nope/", `If-None-Match: *`, 404},
	} {
		for _, method := range []string{"GET", "HEAD"} {
			resp, body := ts.httpDo(t, method, method+" "+tc.target+" HTTP/1.1\r\nHost: x\r\n"+tc.field+"\r\n\r\n")
			if resp.StatusCode != tc.want {
				t.Errorf("%s %s with %s: %d, want %d", method, tc.target, tc.field, resp.StatusCode, tc.want)
				continue
			}
			if tc.want == 304 && (len(body) != 0 || resp.Header.Get("Vary") != "Accept" || resp.Header.Get("Cache-Control") != "no-cache") {
				t.Errorf("%s %s with %s: 304 with body %q, Vary %q, Cache-Control %q", method, tc.target, tc.field,
					body, resp.Header.Get("Vary"), resp.Header.Get("Cache-Control"))
			}
		}
	}
}

// TestHTTPNoRangesNoAcceptRanges: with max_ranges = 0 a Range is
// ignored, and a file's responses do not say "Accept-Ranges: bytes" (RFC
// 9110 section 14.3: the field says the server supports range requests),
// as nginx does not with its max_ranges 0. With ranges on, "bytes".
func TestHTTPNoRangesNoAcceptRanges(t *testing.T) {
	for _, tc := range []struct {
		maxRanges int
		accept    string
		status    int
	}{{0, "", 200}, {16, "bytes", 206}} {
		ts := newHTTPServer(t, func(o *Options) { o.MaxRanges = tc.maxRanges })
		ts.write(t, "f", []byte("0123456789"))
		for _, method := range []string{"GET", "HEAD"} {
			for _, rng := range []string{"", "Range: bytes=0-1\r\n"} {
				resp, _ := ts.httpDo(t, method, method+" /f HTTP/1.1\r\nHost: x\r\n"+rng+"\r\n")
				want := 200
				if rng != "" {
					want = tc.status
				}
				if resp.StatusCode != want || resp.Header.Get("Accept-Ranges") != tc.accept {
					t.Errorf("max_ranges %d, %s %q: %d Accept-Ranges %q, want %d %q", tc.maxRanges, method, rng,
						resp.StatusCode, resp.Header.Get("Accept-Ranges"), want, tc.accept)
				}
			}
		}
	}
}
