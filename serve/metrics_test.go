package serve

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/wire"
)

func TestNativeStatusCode(t *testing.T) {
	for _, tc := range []struct {
		st   wire.Status
		want int
	}{
		{wire.StatusOK, 200},
		{wire.StatusBadRequest, 400},
		{wire.StatusUnsupportedVersion, 400},
		{wire.StatusNotFound, 404},
		{wire.StatusForbidden, 403},
		{wire.StatusNotRegular, 403},
		{wire.StatusNotDirectory, 404},
		{wire.StatusRangeNotSatisfiable, 416},
		{wire.StatusBusy, 503},
		{wire.StatusDraining, 503},
		{wire.StatusInternal, 500},
		{wire.Status(200), 500},
	} {
		if got := NativeStatusCode(tc.st); got != tc.want {
			t.Errorf("NativeStatusCode(%v) = %d, want %d", tc.st, got, tc.want)
		}
	}
}

func TestClassCounts(t *testing.T) {
	var c classCounts
	for _, code := range []int{0, 100, 199, 200, 206, 301, 304, 404, 416, 500, 503, 599, 600, 1000, -200} {
		c.add(code)
	}
	if got, want := c.load(), (Classes{2, 2, 2, 3}); got != want {
		t.Fatalf("classes %v, want %v", got, want)
	}
}

// TestNativeResponseClasses: every native response is counted once by
// class, a refused malformed frame too (which is not a request).
func TestNativeResponseClasses(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	ts.write(t, "f", []byte("hello"))
	for _, q := range []wire.Request{
		{Op: wire.OpGet, Path: "/f"},
		{Op: wire.OpStat, Path: "/f"},
		{Op: wire.OpGet, Path: "/nope"},
		{Op: wire.OpGet, Path: "/../x"},
		{Op: wire.OpGet, Path: "/f", Offset: 6},
	} {
		ts.do(t, q)
	}
	ts.client.Write(append([]byte("ZQ\x63"), make([]byte, 21)...)) // bad version: answered, then closed
	if _, err := wire.ReadResponse(ts.br); err != nil {
		t.Fatal(err)
	}
	<-ts.result
	st := ts.srv.Stats()
	if want := (Classes{2, 0, 4, 0}); st.NativeResponses != want || st.NativeRequests != 5 || st.HTTPResponses != (Classes{}) {
		t.Fatalf("native responses %v requests %d, http responses %v; want %v, 5 requests, none over http",
			st.NativeResponses, st.NativeRequests, st.HTTPResponses, want)
	}
}

// TestHTTPResponseClasses: every HTTP response is counted once by its
// status's class, a refused head too (which is not a request).
func TestHTTPResponseClasses(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.HTTP = true; o.MaxRanges = 4 })
	ts.write(t, "f", []byte("hello"))
	if err := os.Mkdir(filepath.Join(ts.root, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	ts.client.SetDeadline(time.Now().Add(10 * time.Second))
	for _, tc := range []struct {
		req  string
		code int
	}{
		{"GET /f HTTP/1.1\r\nHost: x\r\n\r\n", 200},
		{"GET /f HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2\r\n\r\n", 206},
		{"GET /dir HTTP/1.1\r\nHost: x\r\n\r\n", 301},
		{"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404},
		{"DELETE /f HTTP/1.1\r\nHost: x\r\n\r\n", 405},
		{"GET /f HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n", 413}, // closes the connection
	} {
		fmt.Fprint(ts.client, tc.req)
		resp, err := http.ReadResponse(ts.br, nil)
		if err != nil {
			t.Fatalf("%q: %v", tc.req, err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != tc.code {
			t.Fatalf("%q: %d, want %d", tc.req, resp.StatusCode, tc.code)
		}
	}
	<-ts.result
	st := ts.srv.Stats()
	if want := (Classes{2, 1, 3, 0}); st.HTTPResponses != want || st.HTTPRequests != 5 || st.NativeResponses != (Classes{}) {
		t.Fatalf("http responses %v requests %d, native responses %v; want %v, 5 requests, none native",
			st.HTTPResponses, st.HTTPRequests, st.NativeResponses, want)
	}
}
