package serve

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestHTTPAccessLogRefusedHead: the access-log line of a refused head
// (400) counts the bytes of that response alone, not those of the
// responses before it on the connection (or on an earlier connection
// whose HTTP buffer this one reuses), and none for HEAD.
func TestHTTPAccessLogRefusedHead(t *testing.T) {
	for _, tc := range []struct {
		method string
		want   func(contentLength int64) int64
	}{
		{"GET", func(n int64) int64 { return n }},
		{"HEAD", func(int64) int64 { return 0 }},
	} {
		t.Run(tc.method, func(t *testing.T) {
			ts := newProxyServer(t)
			ts.write(t, "f.txt", []byte("hello"))
			ts.connect(t)
			ts.client.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(ts.client, "GET /f.txt HTTP/1.1\r\nHost: h\r\n\r\n"+tc.method+" /a%2Fb HTTP/1.1\r\nHost: h\r\n\r\n")
			var refused int64
			for i, want := range []int{200, 400} {
				req := &http.Request{Method: "GET"}
				if i == 1 {
					req.Method = tc.method
				}
				resp, err := http.ReadResponse(ts.br, req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Fatalf("response %d: %s, want %d", i, resp.Status, want)
				}
				refused = resp.ContentLength
			}
			ts.client.Close()
			ts.waitResult(t)
			line := regexp.MustCompile(`msg=access .*status=400 bytes=(\d+)`).FindStringSubmatch(ts.logs.String())
			if line == nil {
				t.Fatalf("no access-log line for the 400:\n%s", ts.logs)
			}
			if got, want := line[1], strconv.FormatInt(tc.want(refused), 10); got != want {
				t.Errorf("the 400's access-log line says bytes=%s, want %s:\n%s", got, want, ts.logs)
			}
		})
	}
}
