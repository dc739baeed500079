// Package wire is zfs-serve's native protocol: the frames a client and a
// worker exchange over one TCP connection. It is shared by the daemon and by
// zfetch and imports neither.
//
// Message flow (many requests per connection, strictly one response per
// request, in order):
//
//	client                                   server
//	  | -- Request{GET path offset length} --> |
//	  | <-- Response{status, size, mtime, ...} |
//	  | <-- body: BodyLen raw bytes ---------- |   (sendfile/splice/mmap/copy)
//	  | -- Request{STAT path} ---------------> |
//	  | <-- Response{...}, no body ----------- |
//	  | -- Request{LIST dir} ----------------> |
//	  | <-- Response{...} + list entries ----- |
//
// Version 2 adds flags: a GET or STAT with FlagDigest asks for the file's
// SHA-256, and the response carries it after its message when the server
// knows it. Frames without flags are version 1, byte for byte, so old
// clients and old servers see nothing new; an old server refuses a flagged
// request with StatusUnsupportedVersion, and the client then asks again
// without flags on a new connection.
//
// Every integer is big-endian. Every length is checked against a hard limit
// before anything is allocated, so a hostile peer cannot make either side
// allocate more than MaxPath/MaxMessage bytes for a frame, or MaxListBody
// for a LIST body (about four times that while decoding, see ReadList). A
// framing error cannot be resynchronised: after one, the connection is
// closed. The full specification is docs/PROTOCOL.md.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"
)

// Version is the newest protocol version this package speaks. A frame is
// encoded in the lowest version that can carry it: version 1 unless it has
// flags (version 2), so a client that asks for nothing new talks to an
// older server exactly as before, and a server answers an older client in
// the version it knows. Decoders accept versions 1 and 2.
const Version = 2

// Flags are the flag bits of a request (16 bits) or a response (8 bits),
// version 2 and later.
type Flags uint16

// Flags.
const (
	// FlagDigest in a GET or STAT request asks for the file's SHA-256 if
	// the server knows it; in a response it says that DigestLen bytes of
	// SHA-256 of the whole file (the size and mtime of this response)
	// follow the message.
	FlagDigest Flags = 1 << 0

	requestFlags  = FlagDigest // every request flag this version knows
	responseFlags = FlagDigest
)

// DigestLen is the length of a SHA-256 digest.
const DigestLen = 32

// Limits. They are part of the protocol: a peer that exceeds one is in error.
const (
	MaxPath     = 4096     // bytes in a request path
	MaxMessage  = 1024     // bytes in a response message
	MaxName     = 1024     // bytes in one LIST entry name
	MaxListBody = 64 << 20 // bytes in a LIST body

	RequestHeaderLen  = 24 // every version
	ResponseHeaderLen = 32
	EntryHeaderLen    = 19
)

// RequestMagic is how every native request starts. On a port that also
// serves HTTP, a connection whose first bytes are anything else is HTTP.
const RequestMagic = "ZQ"

var (
	requestMagic  = [2]byte{RequestMagic[0], RequestMagic[1]}
	responseMagic = [2]byte{'Z', 'R'}
)

// Op is a request's operation.
type Op uint8

// Operations.
const (
	OpGet  Op = 1 // send [offset, offset+length) of a regular file
	OpStat Op = 2 // describe a path, no body
	OpList Op = 3 // list a directory's entries
)

func (o Op) String() string {
	switch o {
	case OpGet:
		return "GET"
	case OpStat:
		return "STAT"
	case OpList:
		return "LIST"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Status is a response's outcome.
type Status uint8

// Statuses. Their numbers are part of the protocol.
const (
	StatusOK                  Status = 0
	StatusBadRequest          Status = 1
	StatusUnsupportedVersion  Status = 2
	StatusNotFound            Status = 3
	StatusForbidden           Status = 4
	StatusNotRegular          Status = 5
	StatusNotDirectory        Status = 6
	StatusRangeNotSatisfiable Status = 7
	StatusBusy                Status = 8
	StatusDraining            Status = 9
	StatusInternal            Status = 10
)

var statusNames = [...]string{
	StatusOK:                  "ok",
	StatusBadRequest:          "bad request",
	StatusUnsupportedVersion:  "unsupported version",
	StatusNotFound:            "not found",
	StatusForbidden:           "forbidden",
	StatusNotRegular:          "not a regular file",
	StatusNotDirectory:        "not a directory",
	StatusRangeNotSatisfiable: "range not satisfiable",
	StatusBusy:                "busy",
	StatusDraining:            "draining",
	StatusInternal:            "internal error",
}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Retryable reports whether a client should try the same request again later.
func (s Status) Retryable() bool { return s == StatusBusy || s == StatusDraining }

// Kind is what a path names.
type Kind uint8

// Kinds.
const (
	KindNone    Kind = 0 // unknown or not applicable (errors)
	KindFile    Kind = 1
	KindDir     Kind = 2
	KindSymlink Kind = 3 // only in LIST entries; STAT and GET follow symlinks
	KindOther   Kind = 4 // FIFO, device, socket: listed, never served
)

func (k Kind) String() string {
	switch k {
	case KindNone:
		return "none"
	case KindFile:
		return "file"
	case KindDir:
		return "dir"
	case KindSymlink:
		return "symlink"
	case KindOther:
		return "other"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Request is one client request.
type Request struct {
	Op     Op
	Path   string
	Offset int64 // GET only: first byte to send
	Length int64 // GET only: bytes to send; 0 means to the end of the file
	Flags  Flags // FlagDigest (GET, STAT); non-zero makes it a version 2 request
}

// version is the lowest protocol version that can carry flags f.
func version(f Flags) byte {
	if f != 0 {
		return 2
	}
	return 1
}

// Response is the header of one server response. BodyLen bytes follow it.
type Response struct {
	Status  Status
	Kind    Kind
	Size    int64 // the file's size (GET, STAT); entries (LIST)
	MTime   int64 // modification time, Unix nanoseconds
	BodyLen int64
	Message string // human-readable, empty on success
	// Flags is FlagDigest when Digest holds the SHA-256 of the whole file
	// (only in an ok response to a request with FlagDigest, which makes
	// it a version 2 response).
	Flags  Flags
	Digest [DigestLen]byte
}

// Error is a protocol violation by the peer. Status is what a server
// answers with before it closes the connection.
type Error struct {
	Status Status
	Msg    string
	// HTTP reports a response that begins as an HTTP one ("HTTP/"): a
	// client that dialled an HTTP server's port.
	HTTP bool
}

func (e *Error) Error() string { return e.Msg }

func errorf(s Status, format string, args ...any) error {
	return &Error{Status: s, Msg: fmt.Sprintf(format, args...)}
}

// ErrTruncated is wrapped by decoding errors when the stream ended inside a
// frame (io.ErrUnexpectedEOF from the reader).
var ErrTruncated = errors.New("truncated frame")

func readFull(r io.Reader, b []byte, what string) error {
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%s: %w", what, ErrTruncated)
		}
		return err // io.EOF at a frame boundary is a clean end
	}
	return nil
}

// AppendRequest appends the encoding of q to b. It does not validate q;
// WriteRequest does.
func AppendRequest(b []byte, q *Request) []byte {
	b = append(b, requestMagic[0], requestMagic[1], version(q.Flags), byte(q.Op))
	b = binary.BigEndian.AppendUint16(b, uint16(len(q.Path)))
	b = binary.BigEndian.AppendUint16(b, uint16(q.Flags))
	b = binary.BigEndian.AppendUint64(b, uint64(q.Offset))
	b = binary.BigEndian.AppendUint64(b, uint64(q.Length))
	return append(b, q.Path...)
}

// WriteRequest validates q and writes it in one Write call.
func WriteRequest(w io.Writer, q *Request) error {
	if err := q.validate(); err != nil {
		return err
	}
	_, err := w.Write(AppendRequest(make([]byte, 0, RequestHeaderLen+len(q.Path)), q))
	return err
}

func (q *Request) validate() error {
	switch q.Op {
	case OpGet, OpStat, OpList:
	default:
		return errorf(StatusBadRequest, "unknown operation %d", uint8(q.Op))
	}
	if len(q.Path) > MaxPath {
		return errorf(StatusBadRequest, "path is %d bytes, the limit is %d", len(q.Path), MaxPath)
	}
	if !utf8.ValidString(q.Path) || strings.IndexByte(q.Path, 0) >= 0 {
		return errorf(StatusBadRequest, "path is not valid UTF-8 or contains NUL")
	}
	if q.Offset < 0 || q.Length < 0 {
		return errorf(StatusBadRequest, "negative offset or length")
	}
	if q.Op != OpGet && (q.Offset != 0 || q.Length != 0) {
		return errorf(StatusBadRequest, "%v takes no offset or length", q.Op)
	}
	if q.Flags&^requestFlags != 0 {
		return errorf(StatusBadRequest, "unknown request flags %#x", uint16(q.Flags&^requestFlags))
	}
	if q.Flags&FlagDigest != 0 && q.Op != OpGet && q.Op != OpStat {
		return errorf(StatusBadRequest, "%v takes no digest flag", q.Op)
	}
	return nil
}

// ReadRequest reads one request. hdr is scratch space for the fixed header
// so that a server can keep it inside its per-connection state. It returns
// io.EOF if the stream ended cleanly before a request, and *Error for a
// request the server must refuse (after which it closes the connection).
func ReadRequest(r io.Reader, hdr *[RequestHeaderLen]byte) (Request, error) {
	if err := readFull(r, hdr[:], "request header"); err != nil {
		return Request{}, err
	}
	q, n, err := DecodeRequestHeader(hdr)
	if err != nil {
		return q, err
	}
	p := make([]byte, n)
	if err := readFull(r, p, "request path"); err != nil {
		if err == io.EOF {
			err = fmt.Errorf("request path: %w", ErrTruncated)
		}
		return q, err
	}
	return q, q.SetPath(p)
}

// AppendResponse appends the encoding of the response header (with its
// message, truncated to MaxMessage, and its digest if Flags says so) to b.
// It is a version 1 frame unless s has flags. A server sets flags only in
// answer to a request that asked for them (so never to a version 1 client).
func AppendResponse(b []byte, s *Response) []byte {
	msg := s.Message
	if len(msg) > MaxMessage {
		msg = msg[:MaxMessage]
	}
	f := s.Flags & responseFlags
	b = append(b, responseMagic[0], responseMagic[1], version(f), byte(s.Status), byte(s.Kind), byte(f))
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	b = binary.BigEndian.AppendUint64(b, uint64(s.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(s.MTime))
	b = binary.BigEndian.AppendUint64(b, uint64(s.BodyLen))
	b = append(b, msg...)
	if f&FlagDigest != 0 {
		b = append(b, s.Digest[:]...)
	}
	return b
}

// ReadResponse reads one response header (not its body) of version 1 or 2.
//
// The magic is checked as soon as it has arrived, not once the whole
// header has: a server that speaks another protocol often answers with
// fewer bytes than a header's 32 (an HTTP 400 without fields, an SMTP or
// FTP greeting), then closes or waits. What it sent is then a protocol
// violation (*Error), not a truncated frame or a timeout, whatever the
// connection did after it.
func ReadResponse(r io.Reader) (Response, error) {
	var hdr [ResponseHeaderLen]byte
	got := 0
	var err error
	for got < len(responseMagic) && err == nil && (got == 0 || hdr[0] == responseMagic[0]) {
		var m int
		m, err = r.Read(hdr[got:])
		got += m
	}
	if got > 0 && hdr[0] != responseMagic[0] || got > 1 && hdr[1] != responseMagic[1] {
		return Response{}, badMagic(r, hdr[:], got)
	}
	if got < len(responseMagic) {
		if err == io.EOF && got > 0 {
			err = fmt.Errorf("response header: %w", ErrTruncated)
		}
		return Response{}, err // io.EOF before any byte is a clean end
	}
	if err := readFull(r, hdr[got:], "response header"); err != nil {
		if err == io.EOF {
			err = fmt.Errorf("response header: %w", ErrTruncated)
		}
		return Response{}, err
	}
	if hdr[2] < 1 || hdr[2] > Version {
		return Response{}, errorf(StatusUnsupportedVersion, "server speaks protocol version %d, this client %d", hdr[2], Version)
	}
	s := Response{Status: Status(hdr[3]), Kind: Kind(hdr[4])}
	n := int(binary.BigEndian.Uint16(hdr[6:]))
	size := binary.BigEndian.Uint64(hdr[8:])
	s.MTime = int64(binary.BigEndian.Uint64(hdr[16:]))
	body := binary.BigEndian.Uint64(hdr[24:])
	if hdr[2] == 1 && hdr[5] != 0 {
		return s, errorf(StatusBadRequest, "reserved response byte is %d", hdr[5])
	}
	if f := Flags(hdr[5]); f&^responseFlags != 0 {
		return s, errorf(StatusBadRequest, "unknown response flags %#x", uint8(f&^responseFlags))
	}
	s.Flags = Flags(hdr[5])
	if s.Flags&FlagDigest != 0 && s.Status != StatusOK {
		return s, errorf(StatusBadRequest, "error response %q carries a digest", s.Status)
	}
	if n > MaxMessage {
		return s, errorf(StatusBadRequest, "response message is %d bytes, the limit is %d", n, MaxMessage)
	}
	if size > math.MaxInt64 || body > math.MaxInt64 {
		return s, errorf(StatusBadRequest, "response size or body length out of range")
	}
	s.Size, s.BodyLen = int64(size), int64(body)
	if s.Status != StatusOK && s.BodyLen != 0 {
		return s, errorf(StatusBadRequest, "error response %q carries a %d-byte body", s.Status, s.BodyLen)
	}
	if n > 0 {
		m := make([]byte, n)
		if err := readFull(r, m, "response message"); err != nil {
			if err == io.EOF {
				err = fmt.Errorf("response message: %w", ErrTruncated)
			}
			return s, err
		}
		s.Message = strings.ToValidUTF8(string(m), "\uFFFD")
	}
	if s.Flags&FlagDigest != 0 {
		if err := readFull(r, s.Digest[:], "response digest"); err != nil {
			if err == io.EOF {
				err = fmt.Errorf("response digest: %w", ErrTruncated)
			}
			return s, err
		}
	}
	return s, nil
}

// badMagic is the error for a response whose first n bytes in hdr are not
// the magic. An HTTP server's answer ("HTTP/", read on to its fifth byte
// if it has not arrived whole) is told apart; otherwise the message shows
// how the answer begins.
func badMagic(r io.Reader, hdr []byte, n int) error {
	const http = "HTTP/"
	if n < len(http) && strings.HasPrefix(http, string(hdr[:n])) {
		m, _ := io.ReadAtLeast(r, hdr[n:], len(http)-n)
		n += m
	}
	if n >= len(http) && string(hdr[:len(http)]) == http {
		return &Error{Status: StatusBadRequest, HTTP: true, Msg: "not a zfs-serve response: the server answered in HTTP"}
	}
	b := hdr[:min(n, 16)]
	if len(b) > 2 {
		return errorf(StatusBadRequest, "not a zfs-serve response (bad magic %q: it begins %q)", b[:2], b)
	}
	return errorf(StatusBadRequest, "not a zfs-serve response (bad magic %q)", b)
}

// DecodeRequestHeader decodes a fixed request header. The path (pathLen
// bytes) follows it on the stream; pass it to SetPath. Servers that read the
// header and the path separately (to time them separately) use this pair;
// ReadRequest does both.
func DecodeRequestHeader(hdr *[RequestHeaderLen]byte) (q Request, pathLen int, err error) {
	if hdr[0] != requestMagic[0] || hdr[1] != requestMagic[1] {
		return q, 0, errorf(StatusBadRequest, "not a zfs-serve request (bad magic %q)", hdr[:2])
	}
	if hdr[2] < 1 || hdr[2] > Version {
		return q, 0, errorf(StatusUnsupportedVersion, "protocol version %d not supported, this server speaks 1 to %d", hdr[2], Version)
	}
	q.Op = Op(hdr[3])
	n := int(binary.BigEndian.Uint16(hdr[4:]))
	flags := binary.BigEndian.Uint16(hdr[6:])
	off := binary.BigEndian.Uint64(hdr[8:])
	length := binary.BigEndian.Uint64(hdr[16:])
	if n > MaxPath {
		return q, 0, errorf(StatusBadRequest, "path is %d bytes, the limit is %d", n, MaxPath)
	}
	if hdr[2] == 1 && flags != 0 {
		return q, 0, errorf(StatusBadRequest, "request flags %#x in a version 1 request", flags)
	}
	if f := Flags(flags); f&^requestFlags != 0 {
		return q, 0, errorf(StatusBadRequest, "unknown request flags %#x", uint16(f&^requestFlags))
	}
	q.Flags = Flags(flags)
	if off > math.MaxInt64 || length > math.MaxInt64 {
		return q, 0, errorf(StatusBadRequest, "offset or length out of range")
	}
	q.Offset, q.Length = int64(off), int64(length)
	return q, n, nil
}

// SetPath sets the path read after the header and validates the request.
func (q *Request) SetPath(p []byte) error {
	q.Path = string(p)
	return q.validate()
}
