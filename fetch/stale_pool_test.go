package fetch

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// A server that sends bytes after each body (and closes): every idle
// connection the workers of -x put back is spoilt. The look before the
// rename takes one, fails with a protocol error before any header, and
// is asked once more on a new connection, not on the next spoilt idle one.
func TestSpoiltIdleConnsRetriedOnNewConn(t *testing.T) {
	s, data := spoilingServer(t, 31, "garbage")
	c, _ := testClient(t, Options{Conns: 4})
	c.noSteal = true
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out"}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, lastMod.UnixNano())
}

// spoilingServer serves a file "/f" of random bytes (from seed) whose
// every GET (whole or a range) is followed by trailer, then closes.
func spoilingServer(t *testing.T, seed uint64, trailer string) (*httpFake, []byte) {
	t.Helper()
	data := randBytes(4*MinSplit, seed)
	s := newHTTPFake(t, false)
	f := s.put("/f", data, lastMod)
	s.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		if r.Method != "GET" {
			return false
		}
		rs, re := 0, len(data)
		code := "200 OK"
		extra := ""
		if rg := r.Header.Get("Range"); rg != "" {
			fmt.Sscanf(rg, "bytes=%d-%d", &rs, &re)
			re++
			code = "206 Partial Content"
			extra = fmt.Sprintf("Content-Range: bytes %d-%d/%d\n", rs, re-1, len(data))
		}
		head := fmt.Sprintf("HTTP/1.1 %s\nContent-Length: %d\nETag: %s\nLast-Modified: %s\n%s\n",
			code, re-rs, f.etag, lastMod.UTC().Format(http.TimeFormat), extra)
		hijackHead(w, head, append(append([]byte(nil), data[rs:re]...), trailer...))
		return true
	}
	return s, data
}

// TestSpoiltIdleConnsHeadAfterBody: as TestSpoiltIdleConnsRetriedOnNewConn,
// but what the server sends after each body reads as a response head
// ("HTTP/1.1 200 OK" and an empty line) before its garbage.
func TestSpoiltIdleConnsHeadAfterBody(t *testing.T) {
	s, data := spoilingServer(t, 37, "HTTP/1.1 200 OK\r\n\r\ngarbage after the body")
	// Which connection fails depends on the order of the segments, so
	// the fetch is repeated: before idle connections were looked at, about
	// one fetch in twenty failed (3 of 10 runs of this test) ("not an HTTP/1.x response", or a 200
	// without Content-Length).
	for i := range 12 {
		c, _ := testClient(t, Options{Conns: 3})
		dst := filepath.Join(t.TempDir(), "out")
		if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out"}); err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
		checkFile(t, dst, data, lastMod.UnixNano())
	}
}

// TestIdleConnSpoilt: an idle connection is spoilt when bytes wait on it
// or the server has closed it, not when it is quiet.
func TestIdleConnSpoilt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		server func(net.Conn)
		spoilt bool
	}{
		{"quiet", func(net.Conn) {}, false},
		{"bytes waiting", func(s net.Conn) { s.Write([]byte("HTTP/1.1 200 OK\r\n\r\n")) }, true},
		{"closed", func(s net.Conn) { s.Close() }, true},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := Dial(context.Background(), ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		tc.server(s)
		deadline := time.Now().Add(5 * time.Second)
		got := c.spoilt()
		for got != tc.spoilt && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
			got = c.spoilt()
		}
		if got != tc.spoilt {
			t.Errorf("%s: spoilt %v, want %v", tc.name, got, tc.spoilt)
		}
		c.Close()
		s.Close()
	}
}
