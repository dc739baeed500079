package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// The decoders must never panic, never allocate past the limits, and must
// accept exactly what the encoders produce.

func FuzzReadRequest(f *testing.F) {
	f.Add(AppendRequest(nil, &Request{Op: OpGet, Path: "a/b", Offset: 3, Length: 9}))
	f.Add(AppendRequest(nil, &Request{Op: OpList, Path: "/"}))
	f.Add(AppendRequest(nil, &Request{Op: OpStat, Path: "/f", Flags: FlagDigest}))
	f.Add(AppendRequest(nil, &Request{Op: OpGet, Path: "x", Offset: 1, Flags: FlagDigest}))
	f.Add([]byte{'Z', 'Q', 2, 3, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'x'})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{'Z', 'Q', 1, 1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var hdr [RequestHeaderLen]byte
		r := bytes.NewReader(b)
		for {
			q, err := ReadRequest(r, &hdr)
			if err != nil {
				var we *Error
				if err != io.EOF && !errors.Is(err, ErrTruncated) && !errors.As(err, &we) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				return
			}
			if len(q.Path) > MaxPath {
				t.Fatalf("path of %d bytes accepted", len(q.Path))
			}
			if q.Flags&^FlagDigest != 0 || (q.Flags != 0 && q.Op == OpList) {
				t.Fatalf("flags %#x accepted with %v", q.Flags, q.Op)
			}
			var again [RequestHeaderLen]byte
			q2, err := ReadRequest(bytes.NewReader(AppendRequest(nil, &q)), &again)
			if err != nil || q2 != q {
				t.Fatalf("re-encode of %+v: %+v, %v", q, q2, err)
			}
		}
	})
}

func FuzzReadResponse(f *testing.F) {
	f.Add(AppendResponse(nil, &Response{Status: StatusOK, Kind: KindFile, Size: 4, BodyLen: 4}))
	f.Add(AppendResponse(nil, &Response{Status: StatusNotFound, Message: "not found: /x"}))
	f.Add(AppendResponse(nil, &Response{Status: StatusOK, Kind: KindFile, Size: 4, BodyLen: 4, Flags: FlagDigest, Digest: [DigestLen]byte{9}}))
	f.Add(AppendResponse(nil, &Response{Status: StatusOK, Kind: KindFile, Message: "m", Flags: FlagDigest}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		s, err := ReadResponse(r)
		// Bytes arriving one at a time (the magic is checked as it
		// arrives) decode the same, and fail the same way.
		s1, err1 := ReadResponse(iotest.OneByteReader(bytes.NewReader(b)))
		if (err == nil) != (err1 == nil) || s1 != s || errors.Is(err, ErrTruncated) != errors.Is(err1, ErrTruncated) {
			t.Fatalf("one byte at a time: %+v, %v; whole: %+v, %v", s1, err1, s, err)
		}
		if err != nil {
			return
		}
		if s.Flags&^FlagDigest != 0 || (s.Flags != 0 && s.Status != StatusOK) {
			t.Fatalf("flags %#x accepted with status %v", s.Flags, s.Status)
		}
		if s.Flags == 0 && s.Digest != [DigestLen]byte{} {
			t.Fatalf("digest set without FlagDigest: %+v", s)
		}
		// What was accepted re-encodes to the bytes read, unless the
		// message was not valid UTF-8 (it was repaired) or the frame was a
		// version 2 without flags (it re-encodes as version 1).
		used := b[:len(b)-r.Len()]
		raw := used[ResponseHeaderLen:min(len(used), ResponseHeaderLen+len(s.Message))]
		if string(raw) == s.Message && b[2] == version(s.Flags) {
			if again := AppendResponse(nil, &s); !bytes.Equal(again, used) {
				t.Fatalf("re-encode of %+v: %x, read %x", s, again, used)
			}
		}
		if len(s.Message) > 3*MaxMessage || s.Size < 0 || s.BodyLen < 0 {
			t.Fatalf("accepted %+v", s)
		}
		if s.Status != StatusOK && s.BodyLen != 0 {
			t.Fatalf("error with body accepted: %+v", s)
		}
	})
}

func FuzzReadList(f *testing.F) {
	var b []byte
	b = AppendEntry(b, &Entry{Kind: KindFile, Name: "f", Size: 1})
	b = AppendEntry(b, &Entry{Kind: KindDir, Name: "d"})
	f.Add(b, int64(len(b)))
	f.Add([]byte{1, 0xff, 0xff}, int64(1<<30))
	f.Fuzz(func(t *testing.T, b []byte, n int64) {
		es, err := ReadList(bytes.NewReader(b), n)
		if err != nil {
			return
		}
		var total int64
		for _, e := range es {
			if !ValidName(e.Name) || e.Size < 0 {
				t.Fatalf("accepted entry %+v", e)
			}
			total += EntryHeaderLen + int64(len(e.Name))
		}
		if total != n {
			t.Fatalf("entries cover %d bytes, body is %d", total, n)
		}
	})
}
