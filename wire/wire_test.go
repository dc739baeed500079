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
