package fetch

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
)

// A server that sends bytes after each body (and closes): every idle
// connection the workers of -x put back is spoilt. The look before the
// rename takes one, fails with a protocol error before any header, and
// is asked once more on a new connection, not on the next spoilt idle one.
func TestSpoiltIdleConnsRetriedOnNewConn(t *testing.T) {
	data := randBytes(4*MinSplit, 31)
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
		hijackHead(w, head, append(append([]byte(nil), data[rs:re]...), "garbage"...))
		return true
	}
	c, _ := testClient(t, Options{Conns: 4})
	c.noSteal = true
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out"}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, lastMod.UnixNano())
}
