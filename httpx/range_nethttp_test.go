package httpx

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// goRanges answers a GET with Range header spec for a file of size bytes
// with net/http.ServeContent and returns its status and the ranges of its
// 206 response, in order, with net/http's empty ranges (from a suffix
// length of 0) left out: net/http keeps them, this package drops them as
// unsatisfiable (RFC 9110 section 14.1.1).
func goRanges(t *testing.T, spec string, size int) (int, []Range) {
	t.Helper()
	req := httptest.NewRequest("GET", "/f", nil)
	req.Header.Set("Range", spec)
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(rec, req, "f", time.Time{}, bytes.NewReader(testContent[:size]))
	if rec.Code != http.StatusPartialContent {
		return rec.Code, nil
	}
	body := rec.Body.Bytes()
	mt, params, _ := mime.ParseMediaType(rec.Header().Get("Content-Type"))
	if mt != "multipart/byteranges" {
		r := parseContentRange(t, rec.Header().Get("Content-Range"), size)
		if r.Length != int64(len(body)) {
			t.Fatalf("net/http: %q: Content-Range %v with %d bytes", spec, r, len(body))
		}
		if r.Length == 0 {
			return rec.Code, nil
		}
		return rec.Code, []Range{r}
	}
	var rs []Range
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return rec.Code, rs
		}
		if err != nil {
			t.Fatalf("net/http: %q: %v", spec, err)
		}
		if r := parseContentRange(t, p.Header.Get("Content-Range"), size); r.Length > 0 {
			rs = append(rs, r)
		}
	}
}

func parseContentRange(t *testing.T, s string, size int) Range {
	t.Helper()
	var first, last, n int64
	if _, err := fmt.Sscanf(s, "bytes %d-%d/%d", &first, &last, &n); err != nil || n != int64(size) {
		t.Fatalf("net/http: Content-Range %q for size %d: %v", s, size, err)
	}
	return Range{Start: first, Length: last - first + 1}
}

// checkAgainstNetHTTP compares ParseRange with net/http for a Range
// header starting "bytes=" (net/http takes no other spelling of the unit).
//
//   - Satisfiable ranges: net/http answers 206 with the same ranges.
//   - ErrUnsatisfiable: net/http answers 416, or 206 with only empty ranges.
//   - Ignored: net/http answers 200 (abuse, no range-spec at all) or 416
//     (a syntax error: net/http refuses what RFC 9110 says to ignore), or
//     206 only for what it alone accepts (goLenient).
//
// A representation of size 0 is left out: net/http ignores any Range for
// it (200), where ParseRange says ErrUnsatisfiable unless a suffix range
// makes the set satisfiable, and its answer to a suffix range of it is a
// 206 with a Content-Range of "bytes 0--1/0".
func checkAgainstNetHTTP(t *testing.T, spec string, size int) {
	if size == 0 || !strings.HasPrefix(spec, "bytes=") {
		return
	}
	rs, err := ParseRange(spec, int64(size), 0)
	code, grs := goRanges(t, spec, size)
	switch {
	case rs != nil:
		if code != http.StatusPartialContent || !slices.Equal(rs, grs) {
			t.Fatalf("%q size %d: ParseRange %v; net/http %d %v", spec, size, rs, code, grs)
		}
	case err == ErrUnsatisfiable:
		if code != http.StatusRequestedRangeNotSatisfiable && (code != http.StatusPartialContent || len(grs) > 0) {
			t.Fatalf("%q size %d: ParseRange unsatisfiable; net/http %d %v", spec, size, code, grs)
		}
	default:
		if code == http.StatusPartialContent && !goLenient(spec, size) {
			t.Fatalf("%q size %d: ParseRange ignores it; net/http %d %v", spec, size, code, grs)
		}
	}
}

// goLenient reports whether the Range header spec has what net/http takes
// and RFC 9110 makes invalid: whitespace inside a range-spec, CR or LF as
// whitespace, a sign ("+1-2", "0--0"), or a range starting at or after
// size, whose last-pos net/http does not look at ("bytes=7-0,0-1" for
// size 3).
func goLenient(spec string, size int) bool {
	if strings.ContainsAny(spec, " \t\r\n+") || strings.Contains(spec, "--") {
		return true
	}
	for elem := range strings.SplitSeq(strings.TrimPrefix(spec, "bytes="), ",") {
		first, _, ok := strings.Cut(elem, "-")
		if n, err := strconv.ParseInt(first, 10, 64); ok && err == nil && n >= int64(size) {
			return true
		}
	}
	return false
}

func TestParseRangeNetHTTP(t *testing.T) {
	for _, spec := range []string{"bytes=0-499", "bytes=500-999", "bytes=-500", "bytes=9500-",
		"bytes=0-0,-1", "bytes=0-1,,2-3", "bytes=-0", "bytes=-0,0-1", "bytes=0-1,-0", "bytes=0-,0-",
		"bytes=0-4999,5000-", "bytes=0-5000,5000-", "bytes=10000-", "bytes=5-4", "bytes=0-1, 3-4 ",
		"bytes=", "bytes=,", "bytes=0 - 1", "bytes=+1-2", "bytes=99999999999999999999-",
		"bytes=7-0,-0", "bytes=0--0", "bytes=20000-1,0-1", "bytes=20000-x,0-1"} {
		checkAgainstNetHTTP(t, spec, 10000)
		checkAgainstNetHTTP(t, spec, 1)
	}
}

// FuzzParseRangeNetHTTP is a differential test against net/http, and
// checks that a multipart body laid out by Multipart for the ranges
// parses back to them.
func FuzzParseRangeNetHTTP(f *testing.F) {
	for _, s := range []string{"bytes=0-499", "bytes=-500", "bytes=9500-", "bytes=0-0,-1",
		"bytes=0-1,,2-3", "bytes=-0,1-2", "bytes=0-,0-", "bytes=5-4", "bytes= 1-2 , 3-"} {
		f.Add(s, uint16(10000))
		f.Add(s, uint16(3))
	}
	f.Fuzz(func(t *testing.T, spec string, size uint16) {
		checkAgainstNetHTTP(t, spec, int(size))
		rs, err := ParseRange(spec, int64(size), 0)
		checkRanges(t, spec, int64(size), 0, rs, err)
		if len(rs) > 0 {
			content := testContent[:size]
			m := NewMultipart(rs, int64(size), "text/plain", NewBoundary())
			body := assemble(m, rs, content)
			if int64(len(body)) != m.Length() {
				t.Fatalf("%q: Length() = %d, body has %d bytes", spec, m.Length(), len(body))
			}
			checkMultipart(t, m.ContentType(), body, rs, content, "text/plain")
		}
	})
}
