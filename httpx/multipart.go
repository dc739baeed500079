package httpx

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Multipart lays out a multipart/byteranges body (RFC 9110 section 14.6)
// so that the caller can send each part's bytes from the file zero-copy:
//
//	for i, r := range ranges {
//		write(m.PartHead(i))
//		sendfile(f, r.Start, r.Length)
//	}
//	write(m.Tail())
//
// with Content-Type m.ContentType() and Content-Length m.Length().
type Multipart struct {
	ranges   []Range
	size     int64
	partType string // each part's Content-Type, or "" for none
	boundary string
	ctype    string
	length   int64
}

// NewMultipart lays out the parts for ranges (as returned by ParseRange,
// which the Multipart keeps and the caller must not change) of a
// representation of size bytes whose media type is contentType ("" to send
// the parts without a Content-Type). boundary must be a valid RFC 2046
// boundary (1 to 70 characters, not found in the file), such as one from
// NewBoundary.
func NewMultipart(ranges []Range, size int64, contentType, boundary string) *Multipart {
	m := &Multipart{ranges: ranges, size: size, partType: contentType, boundary: boundary}
	if boundaryIsToken(boundary) {
		m.ctype = "multipart/byteranges; boundary=" + boundary
	} else {
		m.ctype = `multipart/byteranges; boundary="` + boundary + `"`
	}
	var scratch [256]byte
	for i, r := range ranges {
		m.length += int64(len(m.AppendPartHead(scratch[:0], i))) + r.Length
	}
	m.length += int64(len(m.Tail()))
	return m
}

// ContentType is the response's Content-Type field value,
// "multipart/byteranges; boundary=BOUNDARY".
func (m *Multipart) ContentType() string { return m.ctype }

// PartHead is what precedes part i's bytes: the delimiter ("--BOUNDARY",
// after a CRLF for every part but the first) and the part's header fields.
func (m *Multipart) PartHead(i int) []byte { return m.AppendPartHead(nil, i) }

// AppendPartHead appends PartHead(i) to b.
func (m *Multipart) AppendPartHead(b []byte, i int) []byte {
	if i > 0 {
		b = append(b, "\r\n"...)
	}
	b = append(b, "--"...)
	b = append(b, m.boundary...)
	b = append(b, "\r\n"...)
	if m.partType != "" {
		b = append(b, "Content-Type: "...)
		b = append(b, m.partType...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "Content-Range: "...)
	b = AppendContentRange(b, m.ranges[i], m.size)
	return append(b, "\r\n\r\n"...)
}

// Tail is the close delimiter that follows the last part's bytes.
func (m *Multipart) Tail() []byte {
	b := make([]byte, 0, len(m.boundary)+8)
	b = append(b, "\r\n--"...)
	b = append(b, m.boundary...)
	return append(b, "--\r\n"...)
}

// Length is the exact length of the body: every PartHead, every range's
// bytes, and the Tail.
func (m *Multipart) Length() int64 { return m.length }

var (
	boundaryPrefix = sync.OnceValue(func() string {
		var r [12]byte
		rand.Read(r[:]) // never fails on Linux (getrandom)
		return hex.EncodeToString(r[:]) + "-"
	})
	boundaryCount atomic.Uint64
)

// NewBoundary returns a multipart boundary unique to this response: a
// random prefix chosen once per process and a counter. A file's bytes
// cannot be made to contain it without knowing the prefix, which only the
// process's own multipart responses reveal.
func NewBoundary() string {
	var buf [64]byte
	b := append(buf[:0], boundaryPrefix()...)
	b = strconv.AppendUint(b, boundaryCount.Add(1), 36)
	return string(b)
}

// boundaryIsToken reports whether s is a non-empty RFC 9110 token, which a
// parameter value may be without quotes.
func boundaryIsToken(s string) bool {
	const tchar = "!#$%&'*+-.^_`|~"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(tchar, c) >= 0) {
			return false
		}
	}
	return s != ""
}
