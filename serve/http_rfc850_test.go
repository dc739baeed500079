package serve

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestHTTPPreconditionsRFC850: If-Modified-Since, If-Unmodified-Since and
// If-Range dates in the obsolete RFC 850 format (two-digit year) are
// compared with the file's modification time like IMF-fixdate ones, and
// their year is read as RFC 9110 section 5.6.7 says: "70" is 2070 from
// 2020 on (less than 50 years ahead), where Go's fixed cutoff reads 1970.
func TestHTTPPreconditionsRFC850(t *testing.T) {
	ts := newHTTPServer(t)
	ts.write(t, "f", []byte("0123456789"))
	mod := time.Now().UTC().AddDate(-10, 0, 0).Truncate(time.Second)
	if err := os.Chtimes(filepath.Join(ts.root, "f"), mod, mod); err != nil {
		t.Fatal(err)
	}
	rfc850 := func(t time.Time) string { return t.UTC().Format("Monday, 02-Jan-06 15:04:05 GMT") }
	const y2070 = "Thursday, 01-Jan-70 00:00:00 GMT"
	for _, tc := range []struct {
		field string
		want  int
	}{
		{"If-Modified-Since: " + rfc850(mod), 304},
		{"If-Modified-Since: " + rfc850(mod.Add(-time.Second)), 200},
		{"If-Modified-Since: " + y2070, 304},
		{"If-Unmodified-Since: " + rfc850(mod), 200},
		{"If-Unmodified-Since: " + rfc850(mod.Add(-time.Second)), 412},
		{"If-Unmodified-Since: " + y2070, 200},
		{"If-Unmodified-Since: Thursday, 01-Jan-70 00:00:00 UTC", 200}, // no date: ignored
		{"Range: bytes=0-1\r\nIf-Range: " + rfc850(mod), 206},
		{"Range: bytes=0-1\r\nIf-Range: " + rfc850(mod.Add(time.Second)), 200},
		{"Range: bytes=0-1\r\nIf-Range: " + rfc850(mod.AddDate(100, 0, 0)), 206}, // the same two digits: the same date
		{"Range: bytes=0-1\r\nIf-Range: " + y2070, 200},
	} {
		for _, method := range []string{"GET", "HEAD"} {
			resp, _ := ts.httpDo(t, method, method+" /f HTTP/1.1\r\nHost: x\r\n"+tc.field+"\r\n\r\n")
			if resp.StatusCode != tc.want {
				t.Errorf("%s with %q: %d, want %d", method, tc.field, resp.StatusCode, tc.want)
			}
		}
	}
}
