package httpx

import (
	"testing"
	"time"
)

func TestETag(t *testing.T) {
	tests := []struct {
		ino         uint64
		mtime, size int64
		want        string
	}{
		{0, 0, 0, `"0-0-0"`},
		{0x1a2b, 1765002716123456789, 12, `"1a2b-187e8c9e72236515-c"`},
		{1<<64 - 1, 1<<63 - 1, 1<<63 - 1, `"ffffffffffffffff-7fffffffffffffff-7fffffffffffffff"`},
		{7, -1, 1, `"7-ffffffffffffffff-1"`},
	}
	for _, tt := range tests {
		got := ETag(tt.ino, tt.mtime, tt.size)
		if got != tt.want {
			t.Errorf("ETag(%#x, %d, %d) = %s, want %s", tt.ino, tt.mtime, tt.size, got, tt.want)
		}
		if tag, weak, rest, ok := scanETag(got); !ok || weak || rest != "" || tag != got {
			t.Errorf("ETag %s is not a strong entity-tag", got)
		}
	}
}

func TestPreconditions(t *testing.T) {
	const etag = `"a-b-c"`
	mod := time.Date(2025, 12, 6, 6, 31, 56, 500_000_000, time.UTC) // .5 s past the date below
	const (
		at     = "Sat, 06 Dec 2025 06:31:56 GMT"
		before = "Sat, 06 Dec 2025 06:31:55 GMT"
		after  = "Sat, 06 Dec 2025 06:31:57 GMT"
	)
	tests := []struct {
		ifMatch, ifUnmodSince, ifNoneMatch, ifModSince string
		want                                           int
	}{
		{"", "", "", "", 0},

		// If-Match: strong comparison.
		{etag, "", "", "", 0},
		{"*", "", "", "", 0},
		{" * ", "", "", "", 0},
		{`"x", "a-b-c"`, "", "", "", 0},
		{`"x",,"a-b-c" ,`, "", "", "", 0},
		{`"x"`, "", "", "", 412},
		{`W/"a-b-c"`, "", "", "", 412},
		{`"A-B-C"`, "", "", "", 412},
		{`a-b-c`, "", "", "", 412},
		{`"a-b-c`, "", "", "", 412},
		{`"x" "a-b-c"`, "", "", "", 412},
		{`"x", bad, "a-b-c"`, "", "", "", 412},
		{"*x", "", "", "", 412},
		// If-Match wins over If-Unmodified-Since, and passes on to If-None-Match.
		{etag, before, "", "", 0},
		{etag, "", etag, "", 304},
		{`"x"`, "", etag, "", 412},

		// If-Unmodified-Since, at one-second resolution.
		{"", at, "", "", 0},
		{"", after, "", "", 0},
		{"", before, "", "", 412},
		{"", "Saturday, 06-Dec-25 06:31:55 GMT", "", "", 412},
		{"", "Sat Dec  6 06:31:55 2025", "", "", 412},
		{"", "yesterday", "", "", 0},
		{"", at + ", " + before, "", "", 0},

		// If-None-Match: weak comparison.
		{"", "", etag, "", 304},
		{"", "", `W/"a-b-c"`, "", 304},
		{"", "", "*", "", 304},
		{"", "", `"x", W/"a-b-c"`, "", 304},
		{"", "", `"x", *`, "", 304},
		{"", "", `"x"`, "", 0},
		{"", "", `"x",W/"y"`, "", 0},
		{"", "", `w/"a-b-c"`, "", 0},
		{"", "", `"x", junk, "a-b-c"`, "", 0},
		// If-None-Match wins over If-Modified-Since.
		{"", "", `"x"`, at, 0},
		{"", "", etag, before, 304},

		// If-Modified-Since, at one-second resolution.
		{"", "", "", at, 304},
		{"", "", "", after, 304},
		{"", "", "", before, 0},
		{"", "", "", "Sat, 06 Dec 2025 06:31:56 UTC", 0},
		{"", "", "", "garbage", 0},
		{"", "", "", "Sun, 06 Nov 1994 08:49:37 GMT", 0},

		// 412 before 304.
		{`"x"`, "", "*", "", 412},
		{"", before, "", at, 412},
	}
	for _, tt := range tests {
		got := Preconditions(tt.ifMatch, tt.ifUnmodSince, tt.ifNoneMatch, tt.ifModSince, etag, mod)
		if got != tt.want {
			t.Errorf("Preconditions(If-Match %q, If-Unmodified-Since %q, If-None-Match %q, If-Modified-Since %q) = %d, want %d",
				tt.ifMatch, tt.ifUnmodSince, tt.ifNoneMatch, tt.ifModSince, got, tt.want)
		}
	}
	// Without a modification time the dates say nothing.
	if got := Preconditions("", before, "", at, etag, time.Time{}); got != 0 {
		t.Errorf("Preconditions with zero mod = %d, want 0", got)
	}
}

func TestRangeApplies(t *testing.T) {
	const etag = `"a-b-c"`
	mod := time.Date(2025, 12, 6, 6, 31, 56, 999_999_999, time.UTC)
	tests := []struct {
		ifRange string
		want    bool
	}{
		{"", true},
		{etag, true},
		{" " + etag + "\t", true},
		{`W/"a-b-c"`, false},
		{`"a-b-d"`, false},
		{`"a-b-c", "x"`, false},
		{`"a-b-c"x`, false},
		{`"a-b-c`, false},
		{"*", false},
		{"Sat, 06 Dec 2025 06:31:56 GMT", true},
		{"Saturday, 06-Dec-25 06:31:56 GMT", true},
		{"Sat Dec  6 06:31:56 2025", true},
		{"Sat, 06 Dec 2025 06:31:55 GMT", false},
		{"Sat, 06 Dec 2025 06:31:57 GMT", false},
		{"Sat, 06 Dec 2025 06:31:56 PST", false},
		{"not a date", false},
		{"W/", false},
	}
	for _, tt := range tests {
		if got := RangeApplies(tt.ifRange, etag, mod); got != tt.want {
			t.Errorf("RangeApplies(%q) = %v, want %v", tt.ifRange, got, tt.want)
		}
	}
	if RangeApplies("Sat, 06 Dec 2025 06:31:56 GMT", etag, time.Time{}) {
		t.Error("RangeApplies(date) with zero mod = true")
	}
}

func FuzzPreconditions(f *testing.F) {
	f.Add(`"a"`, "Sat, 06 Dec 2025 06:31:56 GMT", `W/"a", "b"`, "Sat Dec  6 06:31:56 2025", `"a"`, int64(1765002716))
	f.Add("*", "", "*", "", `"x"`, int64(0))
	f.Add(`"a`, "Saturday, 06-Dec-25 06:31:56 GMT", `,,W/`, "x", `W/"b"`, int64(-1))
	f.Fuzz(func(t *testing.T, im, ius, inm, ims, etag string, mod int64) {
		switch got := Preconditions(im, ius, inm, ims, etag, time.Unix(mod, 0)); got {
		case 0, 304, 412:
		default:
			t.Fatalf("Preconditions = %d", got)
		}
		// An If-Match of the etag itself never fails.
		if tag, weak, rest, ok := scanETag(etag); ok && !weak && rest == "" {
			if got := Preconditions(tag, "", "", "", etag, time.Unix(mod, 0)); got != 0 {
				t.Fatalf("Preconditions(If-Match %s) for %s = %d", tag, etag, got)
			}
			if got := Preconditions("", "", "W/"+tag, "", etag, time.Unix(mod, 0)); got != 304 {
				t.Fatalf("Preconditions(If-None-Match W/%s) for %s = %d", tag, etag, got)
			}
		}
	})
}

func FuzzRangeApplies(f *testing.F) {
	f.Add(`"a"`, `"a"`, int64(1765002716))
	f.Add(`W/"a"`, `"a"`, int64(0))
	f.Add("Sat, 06 Dec 2025 06:31:56 GMT", `"a"`, int64(1765002716))
	f.Add("Sat Dec  6 06:31:56 2025", `"a"`, int64(-5))
	f.Fuzz(func(t *testing.T, ifRange, etag string, mod int64) {
		got := RangeApplies(ifRange, etag, time.Unix(mod, 0))
		if ifRange == "" && !got {
			t.Fatal("RangeApplies(\"\") = false")
		}
		if _, weak, _, _ := scanETag(stripOWS(ifRange)); weak && got {
			t.Fatalf("RangeApplies(%q) with a weak tag = true", ifRange)
		}
		if got && stripOWS(ifRange) != "" && stripOWS(ifRange) != etag {
			if t1, ok := ParseHTTPDate(ifRange); !ok || t1.Unix() != mod {
				t.Fatalf("RangeApplies(%q, %q, %d) = true", ifRange, etag, mod)
			}
		}
	})
}
