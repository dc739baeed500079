// Package proxyproto decodes the PROXY protocol header (versions 1 and 2,
// HAProxy's doc/proxy-protocol.txt) that a proxy such as HAProxy writes at
// the start of every connection it relays ("send-proxy", "send-proxy-v2"),
// so that the server learns the client's address. It does no I/O: the
// worker reads the first bytes of a connection into its own buffer, calls
// Parse, and on success skips the n bytes the header used; the bytes after
// it are the client's request. Specified in docs/PROXY.md.
//
// Parse is strict: a header that does not exactly match the specification
// is refused (the specification requires it, and a listener that accepts
// PROXY headers trusts whoever sends them, so there is nothing to gain from
// guessing). Lengths are bounded: a v1 line must end within 107 bytes and a
// v2 header must fit in MaxHeader bytes.
package proxyproto

import (
	"errors"
	"fmt"
	"net/netip"
)

// MaxHeader is the most bytes a header may take. A v1 line is at most 107
// bytes. A v2 header is 16 bytes plus a length field of up to 65535, too
// much to buffer for every connection, so Parse bounds it at 1024 bytes: 16
// bytes of fixed header and 1008 bytes of addresses and TLVs. That holds
// TCP over IPv6 (36 bytes of addresses) with every TLV HAProxy itself can
// send at its longest: CRC32C (7), ALPN (3+255), AUTHORITY (3+255, HAProxy's
// own limit), UNIQUE_ID (3+128, HAProxy's limit), and SSL with its version,
// 64-byte client CN, cipher, signature and key algorithm sub-TLVs (about 150),
// 838 bytes in all. The specification's own aim, a header that fits in the
// smallest TCP segment every host accepts (536 bytes), does not cover that
// worst case: a 255-byte SNI with a 128-byte unique ID and the SSL TLV
// already passes it. A longer v2 header is refused with ErrTooLong as soon
// as its fixed 16 bytes are seen, so the worker never waits for bytes it
// would not buffer.
const MaxHeader = 16 + 1008

// maxV1 is the longest v1 line, CRLF included: "PROXY UNKNOWN" followed by
// the longest TCP6 fields (doc/proxy-protocol.txt section 2.1).
const maxV1 = 107

var (
	// ErrIncomplete means b is a valid start of a header but not all of it:
	// call Parse again with more bytes.
	ErrIncomplete = errors.New("proxyproto: incomplete header")
	// ErrNotProxy means b does not start with a PROXY header signature
	// (neither v1's "PROXY " nor v2's 12-byte signature): the peer does not
	// speak the PROXY protocol. It is known from the first byte that differs
	// from both signatures (for an HTTP or TLS client, the first byte).
	ErrNotProxy = errors.New("proxyproto: not a PROXY protocol header")
	// ErrTooLong means a v2 header announces more than MaxHeader bytes.
	ErrTooLong = errors.New("proxyproto: v2 header longer than MaxHeader")
)

// Header is a decoded header.
type Header struct {
	// Version is 1 (text) or 2 (binary).
	Version int
	// Local reports that the connection's own addresses apply: a v2 LOCAL
	// command (HAProxy's health checks), a v2 PROXY command for a family
	// or protocol other than TCP over IPv4 or IPv6 (UNSPEC, UDP, UNIX), or
	// v1 "PROXY UNKNOWN". Source and Dest are then zero.
	Local bool
	// Source is the client's address and port, Dest the address and port
	// it connected to (on the proxy), when Local is false. For a TCP6
	// header they are IPv6 addresses, IPv4-mapped ones (::ffff:a.b.c.d)
	// included: HAProxy sends those when the two ends' families differ.
	Source, Dest netip.AddrPort
}

// Error is a malformed header. Msg says what is wrong in words a log line
// can print; the connection must be closed.
type Error struct{ Msg string }

func (e *Error) Error() string { return "proxyproto: " + e.Msg }

func errorf(format string, args ...any) *Error {
	return &Error{Msg: fmt.Sprintf(format, args...)}
}

// The signatures: v1 is "PROXY" and exactly one space; v2 is a 12-byte
// block that no text protocol starts with.
const (
	sigV1 = "PROXY "
	sigV2 = "\r\n\r\n\x00\r\nQUIT\n"
)

// Parse decodes a PROXY header at the start of b and returns it with the
// number of bytes it used; b[n:] is what the client sent after it. Parse
// reads no byte past the header, does not modify b and allocates nothing
// unless it fails. It returns ErrIncomplete when b is a proper prefix of a
// header that may still be valid, ErrNotProxy when b cannot start one,
// ErrTooLong for a v2 header longer than MaxHeader, and an *Error for a
// malformed header. Once Parse has returned anything but ErrIncomplete for
// some bytes, it returns the same for those bytes followed by any others.
func Parse(b []byte) (Header, int, error) {
	if len(b) == 0 {
		return Header{}, 0, ErrIncomplete
	}
	switch b[0] {
	case sigV1[0]:
		if !hasPrefix(b, sigV1) {
			return Header{}, 0, ErrNotProxy
		}
		if len(b) < len(sigV1) {
			return Header{}, 0, ErrIncomplete
		}
		return parseV1(b)
	case sigV2[0]:
		if !hasPrefix(b, sigV2) {
			return Header{}, 0, ErrNotProxy
		}
		if len(b) < len(sigV2) {
			return Header{}, 0, ErrIncomplete
		}
		return parseV2(b)
	}
	return Header{}, 0, ErrNotProxy
}

// hasPrefix reports whether b and sig agree on their common length.
func hasPrefix(b []byte, sig string) bool {
	n := min(len(b), len(sig))
	return string(b[:n]) == sig[:n]
}
