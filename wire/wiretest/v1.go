// Package wiretest keeps the version 1 codec of the native protocol as
// released, frozen, so that tests can play an old client or an old server
// against the current code: an old zfetch must still work against a new
// server, and a new client against an old server. Do not change it to
// follow package wire; it is the past.
package wiretest

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// Response is a version 1 response header.
type Response struct {
	Status  uint8
	Kind    uint8
	Size    int64
	MTime   int64
	BodyLen int64
	Message string
}

// ReadResponseV1 is version 1's ReadResponse: a version other than 1, or
// a non-zero reserved byte, is an error. (The message is not made valid
// UTF-8 here; nothing in these tests depends on it.)
func ReadResponseV1(r io.Reader) (Response, error) {
	var hdr [32]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Response{}, err
	}
	if hdr[0] != 'Z' || hdr[1] != 'R' {
		return Response{}, fmt.Errorf("not a zfs-serve response (bad magic %q)", hdr[:2])
	}
	if hdr[2] != 1 {
		return Response{}, fmt.Errorf("server speaks protocol version %d, this client 1", hdr[2])
	}
	s := Response{Status: hdr[3], Kind: hdr[4]}
	n := int(binary.BigEndian.Uint16(hdr[6:]))
	size := binary.BigEndian.Uint64(hdr[8:])
	s.MTime = int64(binary.BigEndian.Uint64(hdr[16:]))
	body := binary.BigEndian.Uint64(hdr[24:])
	if hdr[5] != 0 {
		return s, fmt.Errorf("reserved response byte is %d", hdr[5])
	}
	if n > 1024 {
		return s, fmt.Errorf("response message is %d bytes, the limit is 1024", n)
	}
	if size > math.MaxInt64 || body > math.MaxInt64 {
		return s, fmt.Errorf("response size or body length out of range")
	}
	s.Size, s.BodyLen = int64(size), int64(body)
	if s.Status != 0 && s.BodyLen != 0 {
		return s, fmt.Errorf("error response carries a body")
	}
	m := make([]byte, n)
	if _, err := io.ReadFull(r, m); err != nil {
		return s, err
	}
	s.Message = string(m)
	return s, nil
}

// Request is a version 1 request.
type Request struct {
	Op     uint8
	Path   string
	Offset int64
	Length int64
}

// AppendRequestV1 is version 1's AppendRequest.
func AppendRequestV1(b []byte, q *Request) []byte {
	b = append(b, 'Z', 'Q', 1, q.Op)
	b = binary.BigEndian.AppendUint16(b, uint16(len(q.Path)))
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(q.Offset))
	b = binary.BigEndian.AppendUint64(b, uint64(q.Length))
	return append(b, q.Path...)
}

// Statuses of version 1 that the tests need.
const (
	StatusOK                 = 0
	StatusBadRequest         = 1
	StatusUnsupportedVersion = 2
)

// CheckRequestV1 is what a version 1 server does with a request header:
// it returns 0 for a header it serves, else the status it answers with
// before it closes the connection.
func CheckRequestV1(hdr []byte) uint8 {
	if len(hdr) < 24 || hdr[0] != 'Z' || hdr[1] != 'Q' {
		return StatusBadRequest
	}
	if hdr[2] != 1 {
		return StatusUnsupportedVersion
	}
	if op := hdr[3]; op < 1 || op > 3 {
		return StatusBadRequest
	}
	if binary.BigEndian.Uint16(hdr[4:]) > 4096 || binary.BigEndian.Uint16(hdr[6:]) != 0 {
		return StatusBadRequest
	}
	if binary.BigEndian.Uint64(hdr[8:]) > math.MaxInt64 || binary.BigEndian.Uint64(hdr[16:]) > math.MaxInt64 {
		return StatusBadRequest
	}
	return StatusOK
}

// AppendResponseV1 is version 1's AppendResponse: what an old server sends.
func AppendResponseV1(b []byte, s *Response) []byte {
	b = append(b, 'Z', 'R', 1, s.Status, s.Kind, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.Message)))
	b = binary.BigEndian.AppendUint64(b, uint64(s.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(s.MTime))
	b = binary.BigEndian.AppendUint64(b, uint64(s.BodyLen))
	return append(b, s.Message...)
}
