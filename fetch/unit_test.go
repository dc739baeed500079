package fetch

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

func TestParseURL(t *testing.T) {
	ok := map[string]Target{
		"zfs://127.0.0.1:7071/a/b":             {Addr: "127.0.0.1:7071", Path: "/a/b"},
		"127.0.0.1/a":                          {Addr: "127.0.0.1:7070", Path: "/a"},
		"localhost:9/dir/name%20with%20spaces": {Addr: "localhost:9", Path: "/dir/name with spaces"},
		"zfs://[::1]:80/x":                     {Addr: "[::1]:80", Path: "/x"},
		"[::1]/x":                              {Addr: "[::1]:7070", Path: "/x"},
		"host":                                 {Addr: "host:7070", Path: "/"},
		"zfs://h/%C3%BC%E2%9C%93":              {Addr: "h:7070", Path: "/ü✓"},
	}
	for in, want := range ok {
		got, err := ParseURL(in)
		if err != nil || got != want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"ftp://h/x", "zfs:///x", "/x", "h:0/x", "h:99999/x", "h:port/x", "h/%zz", "[::1/x", "h/a%00b", "zfs://h/" + strings.Repeat("a", wire.MaxPath+1)} {
		if got, err := ParseURL(in); err == nil {
			t.Errorf("ParseURL(%q) = %+v, want an error", in, got)
		}
	}
}

func TestTargetStringRoundTrips(t *testing.T) {
	for _, p := range []string{"/a b/c", "/ü✓", "/100%", "/q?x#y"} {
		tg := Target{Addr: "h:1", Path: p}
		back, err := ParseURL(tg.String())
		if err != nil || back != tg {
			t.Errorf("%q -> %q -> %+v, %v", p, tg.String(), back, err)
		}
	}
	if got := (Target{Addr: "h:1", Path: "/d"}).Join("f g"); got.Path != "/d/f g" {
		t.Errorf("Join: %+v", got)
	}
	if got := (Target{Addr: "h:1", Path: "/"}).Join("f"); got.Path != "/f" {
		t.Errorf("Join at root: %+v", got)
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"zfs://127.0.0.1:7070/a", "h/x%20y", "[::1]:1/", "zfs://h:65535/%C3%BC"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseURL(s)
		if err != nil {
			return
		}
		if !strings.HasPrefix(tg.Path, "/") || len(tg.Path) > wire.MaxPath || strings.IndexByte(tg.Path, 0) >= 0 {
			t.Fatalf("ParseURL(%q) accepted path %q", s, tg.Path)
		}
		back, err := ParseURL(tg.String())
		if err != nil || back != tg {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, tg, tg.String(), back, err)
		}
	})
}

func TestDecodeState(t *testing.T) {
	good := &State{Source: "zfs://h/x", Size: 100, MTime: 5, Prealloc: true, Pending: [][2]int64{{0, 10}, {10, 20}, {50, 100}}}
	got, err := DecodeState(good.Encode())
	if err != nil || got.Size != 100 || got.Remaining() != 70 || !got.Prealloc {
		t.Fatalf("decode: %+v, %v", got, err)
	}
	bad := []string{
		``, `{}`, `{"v":2,"size":1,"pending":[]}`, `{"v":1,"size":-1}`,
		`{"v":1,"size":10,"pending":[[5,3]]}`, `{"v":1,"size":10,"pending":[[0,11]]}`,
		`{"v":1,"size":10,"pending":[[0,5],[4,8]]}`, `{"v":1,"size":10,"pending":[[-1,5]]}`,
		`{"v":1,"size":10,"pending":[[2,2]]}`,
	}
	for _, b := range bad {
		if s, err := DecodeState([]byte(b)); err == nil {
			t.Errorf("DecodeState(%s) = %+v, want an error", b, s)
		}
	}
}

func FuzzDecodeState(f *testing.F) {
	f.Add((&State{Size: 10, Pending: [][2]int64{{0, 10}}}).Encode())
	f.Add([]byte(`{"v":1,"size":9223372036854775807,"pending":[[0,9223372036854775807]]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeState(b)
		if err != nil {
			return
		}
		var prev int64
		for _, r := range s.Pending {
			if r[0] < prev || r[1] <= r[0] || r[1] > s.Size {
				t.Fatalf("accepted bad range %v in %+v", r, s)
			}
			prev = r[1]
		}
		if s.Remaining() < 0 || s.Remaining() > s.Size {
			t.Fatalf("remaining %d of %d", s.Remaining(), s.Size)
		}
		again, err := DecodeState(s.Encode())
		if err != nil || again.Size != s.Size || !slices.Equal(again.Pending, s.Pending) {
			t.Fatalf("re-encode: %+v, %v", again, err)
		}
	})
}

func TestSplit(t *testing.T) {
	cases := []struct {
		in   [][2]int64
		n    int
		min  int64
		want [][2]int64
	}{
		{[][2]int64{{0, 100}}, 4, 10, [][2]int64{{0, 25}, {25, 50}, {50, 75}, {75, 100}}},
		{[][2]int64{{0, 100}}, 3, 10, [][2]int64{{0, 34}, {34, 67}, {67, 100}}},
		{[][2]int64{{0, 100}}, 4, 40, [][2]int64{{0, 50}, {50, 100}}},
		{[][2]int64{{0, 10}}, 4, 40, [][2]int64{{0, 10}}},
		{[][2]int64{{0, 10}, {50, 100}}, 3, 1, [][2]int64{{0, 10}, {50, 67}, {67, 84}, {84, 100}}},
		{nil, 4, 1, nil},
	}
	for _, c := range cases {
		if got := split(c.in, c.n, c.min); !slices.Equal(got, c.want) {
			t.Errorf("split(%v, %d, %d) = %v, want %v", c.in, c.n, c.min, got, c.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	base, ceil := 250*time.Millisecond, 8*time.Second
	for n := 1; n < 40; n++ {
		want := min(base<<min(n-1, 20), ceil)
		lo, hi := backoff(n, base, ceil, func() float64 { return 0 }), backoff(n, base, ceil, func() float64 { return 0.999999 })
		if lo != want/2 || hi > want || hi < want-want/1000 {
			t.Errorf("backoff(%d) in [%v, %v], want [%v, %v]", n, lo, hi, want/2, want)
		}
	}
}

func TestRetryableAndReason(t *testing.T) {
	cases := []struct {
		err       error
		retryable bool
		reason    string
	}{
		{&StatusError{Status: wire.StatusDraining, Message: "draining: x"}, true, "server draining"},
		{&StatusError{Status: wire.StatusBusy}, true, "server busy"},
		{&StatusError{Status: wire.StatusNotFound, Message: "not found: /a/b"}, false, "not found: /a/b"},
		{&connError{fmt.Errorf("dial: %w", syscall.ECONNREFUSED)}, true, "connection refused"},
		{&connError{io.ErrUnexpectedEOF}, true, "connection closed by the server"},
		{&connError{syscall.ECONNRESET}, true, "connection reset"},
		{&LocalError{Op: "write", Path: "x", Err: syscall.ENOSPC}, false, "write x: no space left on device"},
		{&VerifyError{Msg: "m"}, false, "verification failed: m"},
		{fmt.Errorf("GET /x: %w", &wire.Error{Msg: "bad magic"}), false, "GET /x: bad magic"},
		{&changedError{msg: "changed"}, false, "changed"},
	}
	for _, c := range cases {
		if got := Retryable(c.err); got != c.retryable {
			t.Errorf("Retryable(%v) = %v", c.err, got)
		}
		if got := Reason(c.err); got != c.reason {
			t.Errorf("Reason(%v) = %q, want %q", c.err, got, c.reason)
		}
	}
	ge := &GiveUpError{Attempts: 3, Err: &connError{syscall.ECONNREFUSED}}
	if ge.Error() != "connection refused (gave up after 3 attempts)" || !errors.Is(ge, syscall.ECONNREFUSED) {
		t.Errorf("GiveUpError: %v", ge)
	}
	e := Event{Kind: EventRetry, Err: &StatusError{Status: wire.StatusDraining}, Delay: 2 * time.Second}
	if got := RetryMessage(e); got != "server draining, retrying in 2s" {
		t.Errorf("RetryMessage = %q", got)
	}
}

// TestDiffersFrom: a mirror's file is compared with the reference by size,
// then digests where both give one, else mtimes: to the nanosecond
// between two native answers, to the second when either is HTTP's
// Last-Modified.
func TestDiffersFrom(t *testing.T) {
	const s = int64(1_700_000_000) * 1e9
	native := func(size, mtime int64, sha string) ident { return ident{Size: size, MTime: mtime, SHA256: sha} }
	http := func(size, mtime int64) ident {
		return ident{Size: size, MTime: mtime, LastModified: time.Unix(0, mtime).UTC().Format(time.RFC1123)}
	}
	for _, tc := range []struct {
		name   string
		m, ref ident
		differ bool
	}{
		{"same", native(5, s+7, ""), native(5, s+7, ""), false},
		{"size", native(6, s+7, ""), native(5, s+7, ""), true},
		{"native ns", native(5, s+8, ""), native(5, s+7, ""), true},
		{"native s", native(5, s+1e9, ""), native(5, s, ""), true},
		{"digests decide over mtime", native(5, s+8, "ab"), native(5, s+7, "ab"), false},
		{"digests differ", native(5, s+7, "ab"), native(5, s+7, "cd"), true},
		{"http vs native, same second", http(5, s), native(5, s+7, ""), false},
		{"native vs http, same second", native(5, s+7, ""), http(5, s), false},
		{"http vs native, next second", http(5, s+1e9), native(5, s+7, ""), true},
		{"no mtime", native(5, 0, ""), native(5, s, ""), false},
		// A copy that kept fewer digits (tar, scp -p: seconds; utimes:
		// microseconds; NTFS, SMB: 100 ns) is compared to its precision.
		{"copy in whole seconds", native(5, s, ""), native(5, s+500_000_007, ""), false},
		{"reference in whole seconds", native(5, s+500_000_007, ""), native(5, s, ""), false},
		{"copy in whole seconds, another second", native(5, s+1e9, ""), native(5, s+500_000_007, ""), true},
		{"copy in microseconds", native(5, s+123_456_000, ""), native(5, s+123_456_789, ""), false},
		{"copy in 100 ns", native(5, s+123_456_700, ""), native(5, s+123_456_789, ""), false},
		{"copy in microseconds, another", native(5, s+123_457_000, ""), native(5, s+123_456_789, ""), true},
		{"two versions, same second, in ns", native(5, s+987_654_321, ""), native(5, s+123_456_789, ""), true},
		{"two versions, same second, in ms", native(5, s+501_000_000, ""), native(5, s+500_000_000, ""), true},
		{"before 1970, whole seconds", native(5, -2e9, ""), native(5, -1_500_000_007, ""), false},
	} {
		if got := tc.m.differsFrom(tc.ref); (got != "") != tc.differ {
			t.Errorf("%s: %q, want differ=%v", tc.name, got, tc.differ)
		}
	}
}
