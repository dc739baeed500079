package fetch

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// A minimal HTTP/1.1 client side (RFC 9112): request heads written by
// hand, response heads parsed here, bodies read straight from the socket
// by the receive modes (so plain HTTP keeps splice and the blocking
// receive). No I/O in this file.

// Limits on a response head.
const (
	maxRespHead    = 64 << 10
	maxRespHeaders = 256
)

// errHeadIncomplete: the bytes hold no complete head yet.
var errHeadIncomplete = errors.New("incomplete response head")

// httpError is a response the client cannot make sense of: a protocol
// error, not retried.
type httpError struct{ msg string }

func (e *httpError) Error() string { return e.msg }

func httpErrorf(format string, args ...any) error { return &httpError{fmt.Sprintf(format, args...)} }

// httpResponse is the head of one HTTP response.
type httpResponse struct {
	Minor  int // HTTP/1.Minor
	Code   int
	Reason string
	Header header
	// Body framing (RFC 9112 section 6.3), for a response to GET; HEAD
	// responses, 1xx, 204 and 304 have no body whatever they say.
	ContentLength int64 // -1 if not given
	Chunked       bool
	Close         bool // the server closes the connection after this response
	NoBody        bool // a response to HEAD, or 204 or 304: no body follows
}

// header holds fields by lower-case name, values in order.
type header map[string][]string

// get returns the field's values joined with ", " (RFC 9110 section 5.3).
func (h header) get(name string) string {
	vs := h[name]
	switch len(vs) {
	case 0:
		return ""
	case 1:
		return vs[0]
	}
	return strings.Join(vs, ", ")
}

// parseResponseHead parses the response head at the start of b and
// returns the bytes it used through the empty line that ends it. Line ends
// may be CRLF or a bare LF (RFC 9112 section 2.2 lets a client accept
// them). It returns errHeadIncomplete while b may still grow into a head:
// bytes that cannot begin one ("HTTP/1.") are an error at once, so that a
// server speaking another protocol, which may answer with less than a
// head and then close or wait, is told from a connection cut or stalled.
func parseResponseHead(b []byte) (*httpResponse, int, error) {
	if err := notHTTP(b); err != nil {
		return nil, 0, err
	}
	end, n := headEnd(b)
	if end < 0 {
		if len(b) >= maxRespHead {
			return nil, 0, httpErrorf("response head longer than %d bytes", maxRespHead)
		}
		return nil, 0, errHeadIncomplete
	}
	if end > maxRespHead {
		return nil, 0, httpErrorf("response head longer than %d bytes", maxRespHead)
	}
	lines := splitLines(b[:end])
	if len(lines) == 0 {
		return nil, 0, httpErrorf("empty response")
	}
	r := &httpResponse{Header: header{}, ContentLength: -1}
	if err := r.parseStatus(lines[0]); err != nil {
		return nil, 0, err
	}
	if len(lines)-1 > maxRespHeaders {
		return nil, 0, httpErrorf("more than %d header fields", maxRespHeaders)
	}
	for _, l := range lines[1:] {
		if len(l) > 0 && (l[0] == ' ' || l[0] == '\t') {
			return nil, 0, httpErrorf("obsolete line folding in a response header")
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok || len(name) == 0 || !isToken(name) {
			return nil, 0, httpErrorf("malformed response header line %q", truncate(l, 80))
		}
		value = bytes.Trim(value, " \t")
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return nil, 0, httpErrorf("control character in response header %q", truncate(name, 80))
			}
		}
		k := strings.ToLower(string(name))
		r.Header[k] = append(r.Header[k], string(value))
	}
	if err := r.framing(); err != nil {
		return nil, 0, err
	}
	return r, n, nil
}

// notHTTP is the error for bytes that cannot begin an HTTP/1.x response,
// nil for those that can (a prefix of "HTTP/1." or longer). zfs-serve's
// native answer (its magic "ZR": a native-only port) is told apart.
func notHTTP(b []byte) error {
	const start = "HTTP/1."
	k := min(len(b), len(start))
	if string(b[:k]) == start[:k] {
		return nil
	}
	if len(b) >= 2 && string(b[:2]) == "ZR" {
		return httpErrorf("not an HTTP response: the server answered in zfs-serve's native protocol (a native port: fetch it with a zfs:// URL)")
	}
	l := b
	if i := bytes.IndexByte(l, '\n'); i >= 0 {
		l = bytes.TrimSuffix(l[:i], []byte("\r"))
	}
	if len(l) == 0 {
		// An empty first line (a CRLF before the status line, which
		// RFC 9112 lets only a server skip, before a request): show
		// what follows rather than "".
		l = b
	}
	return httpErrorf("not an HTTP/1.x response: %q", truncate(l, 40))
}

// headEnd finds the empty line ending a head: end is where the head's
// lines end (without the empty line), n the bytes through the empty line.
func headEnd(b []byte) (end, n int) {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		// A line ends at i. Is the next line empty?
		j := i + 1
		if j < len(b) && b[j] == '\n' {
			return lineEnd(b, i), j + 1
		}
		if j+1 < len(b) && b[j] == '\r' && b[j+1] == '\n' {
			return lineEnd(b, i), j + 2
		}
	}
	return -1, 0
}

// lineEnd is where the line ending at the LF at i ends, without its CR.
func lineEnd(b []byte, i int) int {
	if i > 0 && b[i-1] == '\r' {
		return i - 1
	}
	return i
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		l, rest, _ := bytes.Cut(b, []byte("\n"))
		l = bytes.TrimSuffix(l, []byte("\r"))
		out = append(out, l)
		b = rest
	}
	return out
}

func (r *httpResponse) parseStatus(l []byte) error {
	// HTTP/1.x SP 3DIGIT [SP reason]
	if len(l) < 12 || !bytes.HasPrefix(l, []byte("HTTP/1.")) || l[8] != ' ' {
		return httpErrorf("not an HTTP/1.x response: %q", truncate(l, 40))
	}
	if l[7] < '0' || l[7] > '9' {
		return httpErrorf("bad HTTP version %q", l[:8])
	}
	r.Minor = int(l[7] - '0')
	code := l[9:12]
	for _, c := range code {
		if c < '0' || c > '9' {
			return httpErrorf("bad status code %q", code)
		}
	}
	r.Code, _ = strconv.Atoi(string(code))
	if r.Code < 100 {
		return httpErrorf("bad status code %d", r.Code)
	}
	if len(l) > 12 {
		if l[12] != ' ' {
			return httpErrorf("bad status line %q", truncate(l, 40))
		}
		r.Reason = string(l[13:])
	}
	return nil
}

// framing reads Content-Length, Transfer-Encoding and Connection.
func (r *httpResponse) framing() error {
	for _, v := range r.Header["connection"] {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "close") {
				r.Close = true
			}
		}
	}
	if r.Minor == 0 {
		r.Close = true
		for _, v := range r.Header["connection"] {
			for _, tok := range strings.Split(v, ",") {
				if strings.EqualFold(strings.TrimSpace(tok), "keep-alive") {
					r.Close = false
				}
			}
		}
	}
	if te := r.Header.get("transfer-encoding"); te != "" {
		codings := strings.Split(te, ",")
		last := strings.TrimSpace(codings[len(codings)-1])
		if strings.EqualFold(last, "chunked") {
			r.Chunked = true
		} else {
			r.Close = true // read to the end of the connection
		}
		return nil // Content-Length is ignored
	}
	cls := r.Header["content-length"]
	if len(cls) == 0 {
		return nil
	}
	var n int64 = -1
	for _, v := range cls {
		for _, part := range strings.Split(v, ",") {
			k, err := parseDigits(strings.TrimSpace(part))
			if err != nil {
				return httpErrorf("bad Content-Length %q", v)
			}
			if n >= 0 && k != n {
				return httpErrorf("conflicting Content-Length values %q", strings.Join(cls, ", "))
			}
			n = k
		}
	}
	r.ContentLength = n
	return nil
}

// parseDigits parses 1*DIGIT into a non-negative int64.
func parseDigits(s string) (int64, error) {
	if s == "" || len(s) > 18 {
		return 0, errors.New("not a number")
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, errors.New("not a number")
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

func isToken(b []byte) bool {
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// contentRange parses "bytes FIRST-LAST/COMPLETE" (COMPLETE may be "*":
// -1). Only the satisfied-range form: "bytes */N" is for 416.
func contentRange(s string) (first, last, complete int64, err error) {
	unit, rest, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok || !strings.EqualFold(unit, "bytes") {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	rng, total, ok := strings.Cut(strings.TrimLeft(rest, " "), "/")
	if !ok {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	if first, err = parseDigits(a); err != nil {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	if last, err = parseDigits(b); err != nil || last < first {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	complete = -1
	if total != "*" {
		if complete, err = parseDigits(total); err != nil || last >= complete {
			return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
		}
	}
	return first, last, complete, nil
}

// appendRequest appends an HTTP/1.1 request head for t. rng, if set, is
// a Range value ("bytes=0-99"); ifRange an If-Range value.
func appendRequest(b []byte, method string, t Target, extra ...string) []byte {
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, t.requestURI()...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, t.hostHeader()...)
	b = append(b, "\r\nUser-Agent: "...)
	b = append(b, userAgent...)
	b = append(b, "\r\nAccept-Encoding: identity\r\n"...)
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "" {
			continue
		}
		b = append(b, extra[i]...)
		b = append(b, ": "...)
		b = append(b, extra[i+1]...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}
