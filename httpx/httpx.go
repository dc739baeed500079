// Package httpx is the HTTP/1.1 side of zfs-serve's one port: the request
// head parser of a GET/HEAD-only static file server (RFC 9112), byte
// ranges (RFC 9110 section 14), conditional requests (RFC 9110 section
// 13), entity tags and HTTP dates, media types by file name, and
// directory listings in HTML and JSON. It does no I/O: the worker's connection
// loop (package serve) reads bytes, calls Parse, and sends the bodies with
// its zero-copy paths. Specified in docs/HTTP.md.
//
// The parser is strict where leniency lets a proxy in front and this
// server disagree about where a request ends (request smuggling): a
// request with a body, both Content-Length and Transfer-Encoding,
// duplicate Content-Length, obs-fold, a bare CR or LF, or a malformed
// request line or header is refused and the connection closed.
package httpx

import "fmt"

// Limits.
const (
	// MaxHead bounds the request line plus all header lines (nginx's
	// large_client_header_buffers default is 8 KiB).
	MaxHead = 8 << 10
	// MaxHeaders bounds the number of header fields.
	MaxHeaders = 100
)

// Error is a request the server refuses with Status (400, 405, 411, 413,
// 414, 431, 501, 505...). After an Error from Parse the connection is
// closed: the parser cannot know where the next request starts.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Msg) }

func errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}
