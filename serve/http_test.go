package serve

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zfs-serve/zfs-serve/config"
)

func withHTTP(o *Options) {
	o.HTTP = true
	o.Index = []string{"index.html"}
	o.MaxRanges = 4
}

// get sends raw on the test connection and reads one response.
func (ts *testServer) httpDo(t *testing.T, raw, method string) (*http.Response, []byte) {
	t.Helper()
	if _, err := io.WriteString(ts.client, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(ts.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%q: body: %v", raw, err)
	}
	return resp, body
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
				{"HEAD /d/e/ HTTP/1.1\r\nHost: h\r\n\r\n", "HEAD", 200, "", "Vary: Accept"},
				{"GET /f.bin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", "GET", 200, string(data), "Connection: close"},
			} {
				resp, body := ts.httpDo(t, tc.raw, tc.method)
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
			if res.Outcome != OutcomeClosed || res.Requests != 17 {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

// TestHTTPNativeSniff: the first bytes pick the protocol, and with HTTP
// off a connection that is not native is closed without an answer.
func TestHTTPOff(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	io.WriteString(ts.client, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if b, err := io.ReadAll(ts.br); len(b) != 0 || err != nil {
		t.Fatalf("http = false answered %q (%v)", b, err)
	}
	if res := <-ts.result; res.Outcome != OutcomeBadRequest {
		t.Fatalf("outcome %q", res.Outcome)
	}
}
