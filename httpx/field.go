package httpx

import "bytes"

// fields is what Parse remembers across the header lines of one head.
type fields struct {
	n         int    // header fields so far
	seen      uint16 // a bit per field name that has appeared
	length    []byte // a Content-Length value other than zero
	close     bool   // a Connection token "close"
	keepAlive bool   // a Connection token "keep-alive"
	prevHost  string // the Host of the request r held before (Parse)
}

// Bits of fields.seen.
const (
	seenHost = 1 << iota
	seenContentLength
	seenRange
	seenIfRange
	seenIfModifiedSince
	seenIfUnmodifiedSince
	seenIfMatch
	seenIfNoneMatch
	seenAccept
)

// parse validates one header line, `name ":" OWS value OWS` (RFC 9112
// section 5), and keeps what r needs of it.
func (f *fields) parse(r *Request, line []byte) error {
	f.n++
	if f.n > MaxHeaders {
		return errorf(431, "more than %d header fields", MaxHeaders)
	}
	if line[0] == ' ' || line[0] == '\t' {
		return errorf(400, "header line %.64q starts with whitespace (obs-fold is refused)", line)
	}
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok {
		return errorf(400, "header line %.64q has no colon", line)
	}
	if len(name) == 0 {
		return errorf(400, "header line %.64q has an empty field name", line)
	}
	if i := firstNot(name, tchar); i >= 0 {
		if c := name[len(name)-1]; c == ' ' || c == '\t' {
			return errorf(400, "whitespace between header field name and colon in %.64q", line)
		}
		return errorf(400, "invalid byte %q in header field name %.64q", name[i], name)
	}
	if i := firstNot(value, fieldChar); i >= 0 {
		return errorf(400, "invalid byte %q in the value of header field %.64q", value[i], name)
	}
	value = trimOWS(value)

	switch len(name) {
	case 4:
		if equalLower(name, "host") {
			return f.host(r, value)
		}
	case 5:
		if equalLower(name, "range") {
			return f.once(seenRange, "Range", &r.Range, value)
		}
	case 6:
		if equalLower(name, "accept") {
			f.list(seenAccept, &r.Accept, value)
		}
	case 8:
		if equalLower(name, "if-match") {
			f.list(seenIfMatch, &r.IfMatch, value)
		} else if equalLower(name, "if-range") {
			return f.once(seenIfRange, "If-Range", &r.IfRange, value)
		}
	case 10:
		if equalLower(name, "connection") {
			f.connection(value)
		}
	case 13:
		if equalLower(name, "if-none-match") {
			f.list(seenIfNoneMatch, &r.IfNoneMatch, value)
		}
	case 14:
		if equalLower(name, "content-length") {
			return f.contentLength(value)
		}
	case 17:
		if equalLower(name, "transfer-encoding") {
			if f.seen&seenContentLength != 0 {
				return errorf(400, "Transfer-Encoding and Content-Length: request bodies are not accepted")
			}
			return errorf(400, "Transfer-Encoding: request bodies are not accepted")
		}
		if equalLower(name, "if-modified-since") {
			return f.once(seenIfModifiedSince, "If-Modified-Since", &r.IfModifiedSince, value)
		}
	case 19:
		if equalLower(name, "if-unmodified-since") {
			return f.once(seenIfUnmodifiedSince, "If-Unmodified-Since", &r.IfUnmodifiedSince, value)
		}
	}
	return nil
}

// once keeps the value of a field that may appear only once.
func (f *fields) once(bit uint16, name string, dst *string, value []byte) error {
	if f.seen&bit != 0 {
		return errorf(400, "more than one %s field", name)
	}
	f.seen |= bit
	*dst = string(value)
	return nil
}

// list keeps the value of a list-based field, joining repeated lines with
// ", ".
func (f *fields) list(bit uint16, dst *string, value []byte) {
	if f.seen&bit == 0 {
		f.seen |= bit
		*dst = string(value)
		return
	}
	*dst = *dst + ", " + string(value)
}

// host validates the Host field (RFC 9110 section 7.2). For an
// absolute-form target r.Host is already the target's authority and
// stays so (RFC 9112 section 3.2.2).
func (f *fields) host(r *Request, value []byte) error {
	if f.seen&seenHost != 0 {
		return errorf(400, "more than one Host field")
	}
	f.seen |= seenHost
	if !validAuthority(value, true) {
		return errorf(400, "invalid Host %.64q", value)
	}
	if r.Host == "" { // an absolute-form authority is never empty
		if string(value) == f.prevHost {
			r.Host = f.prevHost // a kept-alive connection's next request: no copy
		} else {
			r.Host = string(value)
		}
	}
	return nil
}

// contentLength validates Content-Length (RFC 9110 section 8.6): one
// field of 1*DIGIT. A length other than zero is refused when the head is
// complete, so that a Transfer-Encoding after it is still answered 400.
func (f *fields) contentLength(value []byte) error {
	if f.seen&seenContentLength != 0 {
		return errorf(400, "more than one Content-Length field")
	}
	f.seen |= seenContentLength
	if len(value) == 0 {
		return errorf(400, "empty Content-Length")
	}
	for _, c := range value {
		if !isDigit(c) {
			return errorf(400, "malformed Content-Length %.32q", value)
		}
		if c != '0' {
			f.length = value
		}
	}
	return nil
}

// connection notes the Connection options "close" and "keep-alive"
// (RFC 9110 section 7.6.1): comma-separated, OWS around, any case.
func (f *fields) connection(value []byte) {
	for {
		opt, rest, more := bytes.Cut(value, []byte(","))
		opt = trimOWS(opt)
		if equalLower(opt, "close") {
			f.close = true
		} else if equalLower(opt, "keep-alive") {
			f.keepAlive = true
		}
		if !more {
			return
		}
		value = rest
	}
}

// finish applies the rules that need the whole head.
func (f *fields) finish(r *Request) error {
	if r.Minor == 1 && f.seen&seenHost == 0 {
		return errorf(400, "HTTP/1.1 request without Host")
	}
	if f.length != nil {
		return errorf(413, "Content-Length %.32s: request bodies are not accepted", f.length)
	}
	r.KeepAlive = !f.close && (r.Minor == 1 || f.keepAlive)
	return nil
}
