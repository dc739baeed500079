package httpx

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"strings"
	"testing"
)

// testContent is a file's bytes for range tests: no two nearby offsets
// hold the same byte sequence, so a part from the wrong offset shows.
var testContent = func() []byte {
	b := make([]byte, 1<<16)
	for i := range b {
		b[i] = byte(i ^ i>>8 ^ i>>13*7)
	}
	return b
}()

// assemble builds m's body as a caller sends it, from content.
func assemble(m *Multipart, ranges []Range, content []byte) []byte {
	var body []byte
	for i, r := range ranges {
		body = append(body, m.PartHead(i)...)
		body = append(body, content[r.Start:r.Start+r.Length]...)
	}
	return append(body, m.Tail()...)
}

// checkMultipart parses body, of Content-Type ctype, with mime/multipart
// and compares its parts with ranges of content.
func checkMultipart(t *testing.T, ctype string, body []byte, ranges []Range, content []byte, partType string) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil || mt != "multipart/byteranges" {
		t.Fatalf("Content-Type %q: %q, %v", ctype, mt, err)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	size := int64(len(content))
	for i, r := range ranges {
		p, err := mr.NextRawPart()
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if got := p.Header.Get("Content-Type"); got != partType {
			t.Errorf("part %d: Content-Type %q, want %q", i, got, partType)
		}
		if got, want := p.Header.Get("Content-Range"), ContentRange(r, size); got != want {
			t.Errorf("part %d: Content-Range %q, want %q", i, got, want)
		}
		data, err := io.ReadAll(p)
		if err != nil || !bytes.Equal(data, content[r.Start:r.Start+r.Length]) {
			t.Fatalf("part %d (%v): %d bytes, %v", i, r, len(data), err)
		}
	}
	if p, err := mr.NextRawPart(); err != io.EOF {
		t.Fatalf("after %d parts: %v, %v", len(ranges), p, err)
	}
}

func TestMultipart(t *testing.T) {
	content := testContent[:10000]
	for _, tt := range []struct{ spec, ctype, boundary string }{
		{"bytes=0-0,-1", "text/plain; charset=utf-8", NewBoundary()},
		{"bytes=0-499,500-999,9000-", "application/octet-stream", NewBoundary()},
		{"bytes=9000-9099,0-9,5-5", "", NewBoundary()},
		{"bytes=0-9,0-9", "video/mp4", "simple"},
		{"bytes=0-4999,5000-", "image/png", "needs quotes: (it's=/?)"},
		{"bytes=1-1,3-3", "text/html", strings.Repeat("b", 70)},
	} {
		ranges, err := ParseRange(tt.spec, int64(len(content)), 0)
		if err != nil || len(ranges) < 2 {
			t.Fatalf("ParseRange(%q): %v, %v", tt.spec, ranges, err)
		}
		m := NewMultipart(ranges, int64(len(content)), tt.ctype, tt.boundary)
		body := assemble(m, ranges, content)
		if int64(len(body)) != m.Length() {
			t.Errorf("%s: Length() = %d, body has %d bytes", tt.spec, m.Length(), len(body))
		}
		checkMultipart(t, m.ContentType(), body, ranges, content, tt.ctype)

		head := string(m.PartHead(0))
		want := "--" + tt.boundary + "\r\n"
		if tt.ctype != "" {
			want += "Content-Type: " + tt.ctype + "\r\n"
		}
		want += "Content-Range: " + ContentRange(ranges[0], int64(len(content))) + "\r\n\r\n"
		if head != want {
			t.Errorf("PartHead(0) = %q, want %q", head, want)
		}
		if h := string(m.PartHead(1)); !strings.HasPrefix(h, "\r\n--"+tt.boundary+"\r\n") {
			t.Errorf("PartHead(1) = %q", h)
		}
		if tail := string(m.Tail()); tail != "\r\n--"+tt.boundary+"--\r\n" {
			t.Errorf("Tail() = %q", tail)
		}
	}
}

func TestMultipartContentType(t *testing.T) {
	m := NewMultipart([]Range{{0, 1}, {1, 1}}, 2, "", "abc-123")
	if got := m.ContentType(); got != "multipart/byteranges; boundary=abc-123" {
		t.Errorf("ContentType() = %q", got)
	}
	m = NewMultipart([]Range{{0, 1}, {1, 1}}, 2, "", "a:b")
	if got := m.ContentType(); got != `multipart/byteranges; boundary="a:b"` {
		t.Errorf("ContentType() = %q", got)
	}
}

func TestNewBoundary(t *testing.T) {
	seen := make(map[string]bool)
	for range 10000 {
		b := NewBoundary()
		if seen[b] || len(b) < 20 || len(b) > 70 || !boundaryIsToken(b) {
			t.Fatalf("NewBoundary() = %q (seen before: %v)", b, seen[b])
		}
		seen[b] = true
	}
}
