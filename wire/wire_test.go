package wire

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	for _, q := range []Request{
		{Op: OpGet, Path: "a/b c/ünï.bin", Offset: 10, Length: 20},
		{Op: OpGet, Path: ""},
		{Op: OpStat, Path: "/x"},
		{Op: OpList, Path: strings.Repeat("d", MaxPath)},
	} {
		var buf bytes.Buffer
		if err := WriteRequest(&buf, &q); err != nil {
			t.Fatalf("write %+v: %v", q, err)
		}
		var hdr [RequestHeaderLen]byte
		got, err := ReadRequest(&buf, &hdr)
		if err != nil || got != q {
			t.Fatalf("round trip %+v: got %+v, %v", q, got, err)
		}
		if _, err := ReadRequest(&buf, &hdr); err != io.EOF {
			t.Fatalf("after last request: %v, want io.EOF", err)
		}
	}
}

func TestReadRequestErrors(t *testing.T) {
	good := AppendRequest(nil, &Request{Op: OpGet, Path: "file", Offset: 1})
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name   string
		in     []byte
		status Status // 0 with truncated=true means ErrTruncated
		trunc  bool
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), StatusBadRequest, false},
		{"version", mod(func(b []byte) []byte { b[2] = 9; return b }), StatusUnsupportedVersion, false},
		{"huge path length", mod(func(b []byte) []byte { b[4], b[5] = 0xff, 0xff; return b }), StatusBadRequest, false},
		{"flags", mod(func(b []byte) []byte { b[7] = 1; return b }), StatusBadRequest, false},
		{"unknown op", mod(func(b []byte) []byte { b[3] = 77; return b }), StatusBadRequest, false},
		{"offset overflow", mod(func(b []byte) []byte { b[8] = 0x80; return b }), StatusBadRequest, false},
		{"stat with offset", AppendRequest(nil, &Request{Op: OpStat, Path: "x", Offset: 5}), StatusBadRequest, false},
		{"nul in path", AppendRequest(nil, &Request{Op: OpGet, Path: "a\x00b"}), StatusBadRequest, false},
		{"bad utf8", AppendRequest(nil, &Request{Op: OpGet, Path: "a\xffb"}), StatusBadRequest, false},
		{"truncated header", good[:10], 0, true},
		{"truncated path", good[:len(good)-1], 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr [RequestHeaderLen]byte
			_, err := ReadRequest(bytes.NewReader(tt.in), &hdr)
			if tt.trunc {
				if !errors.Is(err, ErrTruncated) {
					t.Fatalf("err = %v, want ErrTruncated", err)
				}
				return
			}
			var we *Error
			if !errors.As(err, &we) || we.Status != tt.status {
				t.Fatalf("err = %v, want *Error with status %v", err, tt.status)
			}
			if we.Msg == "" {
				t.Fatal("empty error message")
			}
		})
	}
}

func TestWriteRequestValidates(t *testing.T) {
	for _, q := range []Request{
		{Op: 0, Path: "x"},
		{Op: OpGet, Path: strings.Repeat("x", MaxPath+1)},
		{Op: OpGet, Path: "x", Offset: -1},
		{Op: OpList, Path: "x", Length: 3},
	} {
		if err := WriteRequest(io.Discard, &q); err == nil {
			t.Errorf("WriteRequest(%+v) = nil, want error", q)
		}
	}
}

func TestResponseRoundTrip(t *testing.T) {
	for _, s := range []Response{
		{Status: StatusOK, Kind: KindFile, Size: 1 << 40, MTime: -5, BodyLen: 1 << 40},
		{Status: StatusNotFound, Message: "not found: /a/b"},
		{Status: StatusOK, Kind: KindDir, Size: 3, BodyLen: 99},
	} {
		b := AppendResponse(nil, &s)
		got, err := ReadResponse(bytes.NewReader(b))
		if err != nil || got != s {
			t.Fatalf("round trip %+v: got %+v, %v", s, got, err)
		}
	}
	long := Response{Status: StatusInternal, Message: strings.Repeat("m", MaxMessage+10)}
	got, err := ReadResponse(bytes.NewReader(AppendResponse(nil, &long)))
	if err != nil || len(got.Message) != MaxMessage {
		t.Fatalf("long message: %d bytes, %v", len(got.Message), err)
	}
}

func TestReadResponseErrors(t *testing.T) {
	good := AppendResponse(nil, &Response{Status: StatusOK, Kind: KindFile, Size: 5, BodyLen: 5})
	for name, b := range map[string][]byte{
		"magic":         append([]byte("XX"), good[2:]...),
		"error w/ body": AppendResponse(nil, &Response{Status: StatusNotFound, BodyLen: 1}),
		"msg too long":  func() []byte { c := append([]byte(nil), good...); c[6], c[7] = 0xff, 0xff; return c }(),
		"body overflow": func() []byte { c := append([]byte(nil), good...); c[24] = 0xff; return c }(),
	} {
		if _, err := ReadResponse(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := ReadResponse(bytes.NewReader(good[:31])); !errors.Is(err, ErrTruncated) {
		t.Errorf("truncated: %v", err)
	}
	// An HTTP server's answer is told apart from other bad magic.
	for in, http := range map[string]bool{
		"HTTP/1.1 400 Bad Request\r\nServer: x\r\n":  true,
		"HTTP 1.1 400 Bad Request\r\nServer: xy\r\n": false,
		"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n":         false,
	} {
		var we *Error
		_, err := ReadResponse(strings.NewReader(in))
		if !errors.As(err, &we) || we.HTTP != http {
			t.Errorf("%q: %#v", in, err)
		}
	}
}

// chunks is a connection that delivers its chunks one Read each, then
// ends with end (io.EOF, a reset...), or, with end nil, stands for a peer
// that goes silent: a Read past the chunks fails the test.
type chunks struct {
	t   *testing.T
	in  []string
	end error
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.in) == 0 {
		if c.end == nil {
			c.t.Fatalf("read past what the peer sent: it would wait for ever")
		}
		return 0, c.end
	}
	n := copy(p, c.in[0])
	if c.in[0] = c.in[0][n:]; c.in[0] == "" {
		c.in = c.in[1:]
	}
	return n, nil
}

// TestReadResponseShortAnswers: a server that speaks another protocol
// and answers with fewer bytes than a header's 32, then closes, resets or
// waits, is a protocol violation (*Error) as soon as its first bytes are
// in, not a truncated frame (a connection failure, retried) or a wait
// for bytes that never come. A cut inside a real header ("ZR...") is
// still truncation.
func TestReadResponseShortAnswers(t *testing.T) {
	reset := errors.New("connection reset by peer")
	for _, c := range []struct {
		in   []string
		end  error
		http bool
	}{
		{[]string{"HTTP/1.1 400 Bad Request\r\n\r\n"}, io.EOF, true}, // 28 bytes
		{[]string{"HTTP/1.1 400 Bad Request\r\n\r\n"}, reset, true},
		{[]string{"HTTP/1.0 400\r\n"}, nil, true},
		{[]string{"HT", "TP/1.1 400 Bad Request\r\n\r\n"}, nil, true},
		{[]string{"HT"}, io.EOF, false},
		{[]string{"220 mail.example ESMTP\r\n"}, nil, false},
		{[]string{"+OK\r\n"}, io.EOF, false},
		{[]string{"\x15\x03\x03\x00\x02\x02\x46"}, reset, false}, // a TLS alert
		{[]string{"X"}, nil, false},
		{[]string{"X"}, io.EOF, false},
	} {
		var we *Error
		_, err := ReadResponse(&chunks{t, append([]string(nil), c.in...), c.end})
		if !errors.As(err, &we) || we.HTTP != c.http || errors.Is(err, ErrTruncated) {
			t.Errorf("%q then %v: %v, want a protocol error (HTTP %v)", c.in, c.end, err, c.http)
		}
	}
	if _, err := ReadResponse(&chunks{t, []string{"220 mail.example ESMTP\r\n"}, nil}); err == nil || !strings.Contains(err.Error(), `it begins "220 mail.example"`) {
		t.Errorf("greeting: %v", err)
	}
	good := string(AppendResponse(nil, &Response{Status: StatusOK, Kind: KindFile, Size: 5, BodyLen: 5}))
	for _, in := range []string{"Z", "ZR", "ZR\x01", good[:31]} {
		if _, err := ReadResponse(&chunks{t, []string{in}, io.EOF}); !errors.Is(err, ErrTruncated) {
			t.Errorf("%q then EOF: %v, want truncated", in, err)
		}
	}
	if _, err := ReadResponse(&chunks{t, nil, io.EOF}); err != io.EOF {
		t.Errorf("nothing then EOF: %v, want io.EOF", err)
	}
	if _, err := ReadResponse(&chunks{t, []string{good[:1], good[1:3], good[3:]}, nil}); err != nil {
		t.Errorf("a header in pieces: %v", err)
	}
}

func TestListRoundTrip(t *testing.T) {
	in := []Entry{
		{Kind: KindFile, Name: "a file with spaces", Size: 12, MTime: 99},
		{Kind: KindDir, Name: "sub"},
		{Kind: KindSymlink, Name: "link"},
		{Kind: KindOther, Name: "fifo"},
	}
	var b []byte
	for i := range in {
		b = AppendEntry(b, &in[i])
	}
	got, err := ReadList(bytes.NewReader(b), int64(len(b)))
	if err != nil || len(got) != len(in) {
		t.Fatalf("got %v, %v", got, err)
	}
	for i := range in {
		if got[i] != in[i] {
			t.Errorf("entry %d: %+v != %+v", i, got[i], in[i])
		}
	}
	for _, bad := range []Entry{{Kind: KindFile, Name: ".."}, {Kind: KindFile, Name: "a/b"}, {Kind: 9, Name: "x"}} {
		e := AppendEntry(nil, &bad)
		if _, err := ReadList(bytes.NewReader(e), int64(len(e))); err == nil {
			t.Errorf("entry %+v accepted", bad)
		}
	}
	if _, err := ReadList(bytes.NewReader(b), MaxListBody+1); err == nil {
		t.Error("oversized list body accepted")
	}
	if _, err := ReadList(bytes.NewReader(b[:len(b)-1]), int64(len(b))); err == nil {
		t.Error("truncated list accepted")
	}
}

// TestReadListAllocationBound: a body of the shortest entries costs about
// four times its size to decode, not many times more.
func TestReadListAllocationBound(t *testing.T) {
	var b []byte
	for i := 0; len(b) < 4<<20; i++ {
		b = AppendEntry(b, &Entry{Kind: KindFile, Name: string(rune('a' + i%26))})
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	es, err := ReadList(bytes.NewReader(b), int64(len(b)))
	runtime.ReadMemStats(&after)
	if err != nil || len(es) != len(b)/(EntryHeaderLen+1) {
		t.Fatalf("%d entries, %v", len(es), err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 9*uint64(len(b))/2 {
		t.Fatalf("decoding a %d-byte body allocated %d bytes (%.1fx)", len(b), got, float64(got)/float64(len(b)))
	}
}

func TestVersion2RoundTrip(t *testing.T) {
	sum := [DigestLen]byte{1, 2, 3, 31: 0xff}
	for _, q := range []Request{
		{Op: OpGet, Path: "/f", Offset: 1, Length: 2, Flags: FlagDigest},
		{Op: OpStat, Path: "/f", Flags: FlagDigest},
	} {
		b := AppendRequest(nil, &q)
		if b[2] != 2 {
			t.Errorf("%+v: version byte %d, want 2", q, b[2])
		}
		var hdr [RequestHeaderLen]byte
		got, err := ReadRequest(bytes.NewReader(b), &hdr)
		if err != nil || got != q {
			t.Errorf("round trip %+v: got %+v, %v", q, got, err)
		}
	}
	for _, s := range []Response{
		{Status: StatusOK, Kind: KindFile, Size: 9, MTime: 3, BodyLen: 9, Flags: FlagDigest, Digest: sum},
		{Status: StatusOK, Kind: KindFile, Size: 9, MTime: 3, Flags: FlagDigest, Digest: sum, Message: "m"},
	} {
		b := AppendResponse(nil, &s)
		if b[2] != 2 || len(b) != ResponseHeaderLen+len(s.Message)+DigestLen {
			t.Errorf("%+v: version %d, %d bytes", s, b[2], len(b))
		}
		got, err := ReadResponse(bytes.NewReader(b))
		if err != nil || got != s {
			t.Errorf("round trip %+v: got %+v, %v", s, got, err)
		}
	}
	// A version 2 request or response without flags is valid too.
	b := AppendRequest(nil, &Request{Op: OpGet, Path: "x"})
	b[2] = 2
	var hdr [RequestHeaderLen]byte
	if q, err := ReadRequest(bytes.NewReader(b), &hdr); err != nil || q.Flags != 0 {
		t.Errorf("version 2 without flags: %+v, %v", q, err)
	}
	r := AppendResponse(nil, &Response{Status: StatusOK})
	r[2] = 2
	if s, err := ReadResponse(bytes.NewReader(r)); err != nil || s.Flags != 0 {
		t.Errorf("version 2 response without flags: %+v, %v", s, err)
	}
}

func TestVersion2Errors(t *testing.T) {
	v2 := func(q Request) []byte { b := AppendRequest(nil, &q); b[2] = 2; return b }
	for name, b := range map[string][]byte{
		"unknown flag":   v2(Request{Op: OpGet, Path: "x", Flags: 2}),
		"digest on LIST": v2(Request{Op: OpList, Path: "x", Flags: FlagDigest}),
		"flags in version1": func() []byte {
			b := AppendRequest(nil, &Request{Op: OpGet, Path: "x", Flags: FlagDigest})
			b[2] = 1
			return b
		}(),
		"version 3": func() []byte { b := AppendRequest(nil, &Request{Op: OpGet, Path: "x"}); b[2] = 3; return b }(),
	} {
		var hdr [RequestHeaderLen]byte
		if _, err := ReadRequest(bytes.NewReader(b), &hdr); err == nil {
			t.Errorf("request %s: no error", name)
		}
	}
	if err := WriteRequest(io.Discard, &Request{Op: OpList, Path: "x", Flags: FlagDigest}); err == nil {
		t.Error("WriteRequest accepted LIST with FlagDigest")
	}
	ok := AppendResponse(nil, &Response{Status: StatusOK, Kind: KindFile, Flags: FlagDigest})
	for name, b := range map[string][]byte{
		"unknown flag":       func() []byte { c := bytes.Clone(ok); c[5] = 0x80; return c }(),
		"flags in version 1": func() []byte { c := bytes.Clone(ok); c[2] = 1; return c }(),
		"digest on error":    func() []byte { c := bytes.Clone(ok); c[3] = byte(StatusNotFound); return c }(),
		"version 0":          func() []byte { c := bytes.Clone(ok); c[2] = 0; return c }(),
	} {
		if _, err := ReadResponse(bytes.NewReader(b)); err == nil {
			t.Errorf("response %s: no error", name)
		}
	}
	if _, err := ReadResponse(bytes.NewReader(ok[:len(ok)-1])); !errors.Is(err, ErrTruncated) {
		t.Errorf("truncated digest: %v, want ErrTruncated", err)
	}
}
