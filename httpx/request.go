package httpx

import (
	"bytes"
	"errors"
)

// ErrIncomplete: b does not hold a whole request head yet; read more and
// call Parse again.
var ErrIncomplete = errors.New("httpx: incomplete request head")

// Request is one parsed request head. Field values are as sent, with OWS
// trimmed.
//
// Repeated If-Match, If-None-Match and Accept field lines are joined with
// ", " in the order received (RFC 9110 section 5.3); the other fields kept
// here may appear once. Every other header field is validated and skipped.
type Request struct {
	Method    string // a valid token, as sent (the caller answers 405 to anything but GET/HEAD)
	Target    string // the request-target exactly as sent
	Path      string // percent-decoded path of an origin-form or absolute-form target; always starts with "/"
	Query     string // raw query after '?', without the '?' ("" if none)
	Minor     int    // HTTP/1.Minor: 0 or 1
	Host      string // Host header; for an absolute-form target, the target's authority (RFC 9112 3.2.2)
	KeepAlive bool   // connection persists after the response: HTTP/1.1 unless a Connection token "close"; HTTP/1.0 only with a "keep-alive" token and no "close"

	Range, IfRange, IfMatch, IfNoneMatch, IfModifiedSince, IfUnmodifiedSince, Accept string
}

// Parse parses one request head at the start of b into r and returns the
// number of bytes it used (through the blank line ending the head).
// Unknown headers are skipped (after validation).
//
// The error is ErrIncomplete while b may still grow into a valid head, or
// an *Error with the status to answer (and then close the connection).
// After an error the contents of r are unspecified. For an asterisk-form
// or authority-form target, accepted only for methods other than GET and
// HEAD, Path is "".
//
// The request line is examined as soon as it is complete, the header
// lines once b holds an empty line, a bare CR or LF, or MaxHead bytes:
// calling Parse again after each read of a head that arrives a few bytes
// at a time costs little.
func Parse(b []byte, r *Request) (n int, err error) {
	prevHost := r.Host
	*r = Request{}
	full := len(b) >= MaxHead
	if full {
		b = b[:MaxHead]
	}
	// RFC 9112 section 2.2: ignore empty lines before the request line
	// (we allow two, as sent by old clients after a POST body).
	pos := 0
	for i := 0; i < 2 && len(b) >= pos+2 && b[pos] == '\r' && b[pos+1] == '\n'; i++ {
		pos += 2
	}
	line, next, err := cutLine(b, pos)
	if err == ErrIncomplete && full {
		return 0, errorf(414, "request line longer than %d bytes", MaxHead)
	}
	if err != nil {
		return 0, err
	}
	if err := r.requestLine(line); err != nil {
		return 0, err
	}
	if !full && !settled(b[next-1:]) {
		return 0, ErrIncomplete
	}
	f := fields{prevHost: prevHost}
	for {
		line, next, err = cutLine(b, next)
		if err == ErrIncomplete && full {
			return 0, errorf(431, "request head longer than %d bytes", MaxHead)
		}
		if err != nil {
			return 0, err
		}
		if len(line) == 0 {
			break
		}
		if err := f.parse(r, line); err != nil {
			return 0, err
		}
	}
	if err := f.finish(r); err != nil {
		return 0, err
	}
	return next, nil
}

// settled reports whether the header section, b from the LF ending the
// request line on, holds an empty line (the end of the head) or a bare CR
// or LF. Until it does the head cannot be complete, and its header lines
// are not examined (a refusal for one of them waits for the end of the
// head): a head that arrives a few bytes at a time is not validated again
// at every call.
func settled(b []byte) bool {
	if bytes.HasSuffix(b, []byte("\n\r\n")) { // a whole head in one read
		return true
	}
	for i := 1; ; i++ {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if b[i-1] != '\r' || b[i-2] == '\n' { // bare LF, or an empty line
			return true
		}
	}
	for {
		j := bytes.IndexByte(b, '\r')
		if j < 0 || j == len(b)-1 {
			return false
		}
		if b[j+1] != '\n' {
			return true
		}
		b = b[j+2:]
	}
}

// cutLine returns the line at b[pos:] without its CRLF, and the position
// after the CRLF. A CR in an incomplete line is refused at once unless it
// is the last byte of b.
func cutLine(b []byte, pos int) (line []byte, next int, err error) {
	i := bytes.IndexByte(b[pos:], '\n')
	if i < 0 {
		if j := bytes.IndexByte(b[pos:], '\r'); j >= 0 && pos+j < len(b)-1 {
			return nil, 0, errorf(400, "bare CR in request head at byte %d", pos+j)
		}
		return nil, 0, ErrIncomplete
	}
	end := pos + i
	if i == 0 || b[end-1] != '\r' {
		return nil, 0, errorf(400, "bare LF in request head at byte %d (lines must end with CRLF)", end)
	}
	return b[pos : end-1], end + 1, nil
}

// requestLine parses "method SP request-target SP HTTP-version" (RFC 9112
// section 3).
func (r *Request) requestLine(line []byte) error {
	method, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return errorf(400, "malformed request line %.64q", line)
	}
	target, version, ok := bytes.Cut(rest, []byte(" "))
	if !ok {
		return errorf(400, "request line %.64q has no HTTP version", line)
	}
	if len(method) == 0 || firstNot(method, tchar) >= 0 {
		return errorf(400, "invalid method %.32q in request line", method)
	}
	switch {
	case string(version) == "HTTP/1.1":
		r.Minor = 1
	case string(version) == "HTTP/1.0":
		r.Minor = 0
	case len(version) == 8 && string(version[:5]) == "HTTP/" &&
		isDigit(version[5]) && version[6] == '.' && isDigit(version[7]):
		return errorf(505, "HTTP version %s is not supported", version)
	default:
		return errorf(400, "malformed HTTP version %.32q in request line", version)
	}
	switch string(method) { // constants for the common methods: no allocation
	case "GET":
		r.Method = "GET"
	case "HEAD":
		r.Method = "HEAD"
	default:
		r.Method = string(method)
	}
	return r.setTarget(target)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
