package httpx

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	type rs = []Range
	const k = 10000 // the size in RFC 9110's examples
	tests := []struct {
		s    string
		size int64
		max  int
		want rs
		err  error
	}{
		// RFC 9110 section 14.1.2's examples.
		{"bytes=0-499", k, 0, rs{{0, 500}}, nil},
		{"bytes=500-999", k, 0, rs{{500, 500}}, nil},
		{"bytes=-500", k, 0, rs{{9500, 500}}, nil},
		{"bytes=9500-", k, 0, rs{{9500, 500}}, nil},
		{"bytes=0-0,-1", k, 0, rs{{0, 1}, {9999, 1}}, nil},
		{"bytes= 0-999, 4500-5499, -1000", k, 0, rs{{0, 1000}, {4500, 1000}, {9000, 1000}}, nil},
		{"bytes=500-600,601-999", k, 0, rs{{500, 101}, {601, 399}}, nil},
		{"bytes=500-700,601-999", k, 0, rs{{500, 201}, {601, 399}}, nil},

		// Requested order is kept; nothing is merged.
		{"bytes=9000-9099,0-9", k, 0, rs{{9000, 100}, {0, 10}}, nil},
		{"bytes=0-9,0-9", k, 0, rs{{0, 10}, {0, 10}}, nil},
		// Clipping.
		{"bytes=0-99999999999", k, 0, rs{{0, k}}, nil},
		{"bytes=9999-10000", k, 0, rs{{9999, 1}}, nil},
		{"bytes=-20000", k, 0, rs{{0, k}}, nil},
		{"bytes=-10000", k, 0, rs{{0, k}}, nil},
		{"bytes=0-", k, 0, rs{{0, k}}, nil},
		{"bytes=00-007", k, 0, rs{{0, 8}}, nil},
		// Unsatisfiable ranges next to satisfiable ones are dropped.
		{"bytes=20000-,0-1", k, 0, rs{{0, 2}}, nil},
		{"bytes=-0,5-5", k, 0, rs{{5, 1}}, nil},
		// The #rule: whitespace around commas, empty elements.
		{"bytes=0-1,,2-3", k, 0, rs{{0, 2}, {2, 2}}, nil},
		{"bytes=,0-1,", k, 0, rs{{0, 2}}, nil},
		{"bytes=0-1 ,\t2-3 , ", k, 0, rs{{0, 2}, {2, 2}}, nil},
		{" bytes=0-1\t", k, 0, rs{{0, 2}}, nil},
		// Units are case-insensitive.
		{"BYTES=0-4", k, 0, rs{{0, 5}}, nil},
		{"Bytes=-1", k, 0, rs{{9999, 1}}, nil},
		// Small representations.
		{"bytes=0-0", 1, 0, rs{{0, 1}}, nil},
		{"bytes=-1", 1, 0, rs{{0, 1}}, nil},
		{"bytes=-5", 1, 0, rs{{0, 1}}, nil},
		{"bytes=0-5", 1, 0, rs{{0, 1}}, nil},

		// Unsatisfiable: 416.
		{"bytes=10000-", k, 0, nil, ErrUnsatisfiable},
		{"bytes=10000-20000", k, 0, nil, ErrUnsatisfiable},
		{"bytes=-0", k, 0, nil, ErrUnsatisfiable},
		{"bytes=-0,10000-,20000-30000", k, 0, nil, ErrUnsatisfiable},
		{"bytes=9223372036854775807-", k, 0, nil, ErrUnsatisfiable},
		{"bytes=0-", 0, 0, nil, ErrUnsatisfiable},
		{"bytes=0-0", 0, 0, nil, ErrUnsatisfiable},
		{"bytes=-0", 0, 0, nil, ErrUnsatisfiable},
		{"bytes=1-1", 1, 0, nil, ErrUnsatisfiable},

		// Ignored: the whole representation with 200.
		{"", k, 0, nil, nil},
		// A suffix-range of an empty representation is satisfiable (RFC
		// 9110 section 14.1.2) but selects nothing: ignored, not 416.
		{"bytes=-5", 0, 0, nil, nil},
		{"bytes=-1", 0, 0, nil, nil},
		{"bytes=0-0,-1", 0, 0, nil, nil},
		{"bytes=-0,-1", 0, 0, nil, nil},
		{"bytes=-1,-1", 0, 1, nil, nil},
		{"items=0-5", k, 0, nil, nil},
		{"bytes", k, 0, nil, nil},
		{"bytes 0-4", k, 0, nil, nil},
		{"bytes =0-4", k, 0, nil, nil},
		{"bytes=", k, 0, nil, nil},
		{"bytes=,", k, 0, nil, nil},
		{"bytes= , ", k, 0, nil, nil},
		{"bytesx=0-1", k, 0, nil, nil},
		{"bytes=5-4", k, 0, nil, nil},
		{"bytes=0-1,5-4", k, 0, nil, nil},
		{"bytes=5-4,20000-", k, 0, nil, nil},
		{"bytes=a-b", k, 0, nil, nil},
		{"bytes=-", k, 0, nil, nil},
		{"bytes=1", k, 0, nil, nil},
		{"bytes=--1", k, 0, nil, nil},
		{"bytes=+1-2", k, 0, nil, nil},
		{"bytes=1-+2", k, 0, nil, nil},
		{"bytes=1-2-3", k, 0, nil, nil},
		{"bytes=0 -1", k, 0, nil, nil},
		{"bytes=0- 1", k, 0, nil, nil},
		{"bytes=0-1;2-3", k, 0, nil, nil},
		{"bytes=0-1\r\n", k, 0, nil, nil},
		{"bytes=0x10-", k, 0, nil, nil},
		{"bytes=１-２", k, 0, nil, nil},
		// Overflow.
		{"bytes=9223372036854775808-", k, 0, nil, nil},
		{"bytes=0-9223372036854775808", k, 0, nil, nil},
		{"bytes=-9223372036854775808", k, 0, nil, nil},
		{"bytes=99999999999999999999999-", k, 0, nil, nil},
		// Abuse: more bytes than the representation has.
		{"bytes=0-,0-", k, 0, nil, nil},
		{"bytes=0-5000,5000-", k, 0, nil, nil},
		{"bytes=-1,-1", 1, 0, nil, nil},
		{"bytes=0-0,0-0", 1, 0, nil, nil},
		{"bytes=0-4999,5000-", k, 0, rs{{0, 5000}, {5000, 5000}}, nil},
		{"bytes=0-0," + strings.Repeat("0-0,", k), k, 0, nil, nil},
		{"bytes=" + strings.Repeat("0-0,", k), k, 0, slices.Repeat(rs{{0, 1}}, k), nil},
		// Unknown size.
		{"bytes=0-1", -1, 0, nil, nil},

		// maxRanges counts the ranges written, satisfiable or not.
		{"bytes=0-0,1-1,2-2", k, 2, nil, nil},
		{"bytes=0-0,1-1,2-2", k, 3, rs{{0, 1}, {1, 1}, {2, 1}}, nil},
		{"bytes=0-0,1-1,2-2", k, -1, rs{{0, 1}, {1, 1}, {2, 1}}, nil},
		{"bytes=0-0,,1-1,", k, 2, rs{{0, 1}, {1, 1}}, nil},
		{"bytes=0-0", k, 1, rs{{0, 1}}, nil},
		{"bytes=0-0,20000-", k, 1, nil, nil},
		{"bytes=20000-,30000-", k, 1, nil, nil},
		{"bytes=20000-", k, 1, nil, ErrUnsatisfiable},
	}
	for _, tt := range tests {
		got, err := ParseRange(tt.s, tt.size, tt.max)
		if !slices.Equal(got, tt.want) || !errors.Is(err, tt.err) || err != nil && got != nil {
			t.Errorf("ParseRange(%q, %d, %d) = %v, %v; want %v, %v", trunc(tt.s), tt.size, tt.max, trunc(fmt.Sprint(got)), err, trunc(fmt.Sprint(tt.want)), tt.err)
		}
	}
}

func trunc(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

func TestContentRange(t *testing.T) {
	tests := []struct {
		r    Range
		size int64
		want string
	}{
		{Range{0, 500}, 10000, "bytes 0-499/10000"},
		{Range{9999, 1}, 10000, "bytes 9999-9999/10000"},
		{Range{0, 1}, 1, "bytes 0-0/1"},
		{Range{1<<63 - 2, 1}, 1<<63 - 1, "bytes 9223372036854775806-9223372036854775806/9223372036854775807"},
	}
	for _, tt := range tests {
		if got := ContentRange(tt.r, tt.size); got != tt.want {
			t.Errorf("ContentRange(%v, %d) = %q, want %q", tt.r, tt.size, got, tt.want)
		}
	}
}

// checkRanges holds ParseRange's promises about its result.
func checkRanges(t *testing.T, s string, size int64, maxRanges int, rs []Range, err error) {
	t.Helper()
	if err != nil {
		if err != ErrUnsatisfiable || rs != nil {
			t.Fatalf("ParseRange(%q, %d, %d) = %v, %v", s, size, maxRanges, rs, err)
		}
		return
	}
	if rs == nil {
		return
	}
	if len(rs) == 0 || maxRanges > 0 && len(rs) > maxRanges {
		t.Fatalf("ParseRange(%q, %d, %d): %d ranges", s, size, maxRanges, len(rs))
	}
	var total int64
	for _, r := range rs {
		if r.Start < 0 || r.Length <= 0 || r.Start >= size || r.Length > size-r.Start {
			t.Fatalf("ParseRange(%q, %d, %d): range %v out of [0,%d)", s, size, maxRanges, r, size)
		}
		total += r.Length
		if total > size {
			t.Fatalf("ParseRange(%q, %d, %d): total %d > size", s, size, maxRanges, total)
		}
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-499", "bytes=-500", "bytes=9500-", "bytes=0-0,-1",
		"bytes=0-1,,2-3", "bytes=0-,0-", "BYTES= 1-2 , 3-", "bytes=9223372036854775807-",
		"bytes=-9223372036854775808", "bytes=5-4", "bytes=,", ""} {
		f.Add(s, int64(10000), 0)
		f.Add(s, int64(1), 2)
		f.Add(s, int64(0), 1)
	}
	f.Add("bytes=0-0", int64(1<<63-1), -1)
	f.Fuzz(func(t *testing.T, s string, size int64, maxRanges int) {
		rs, err := ParseRange(s, size, maxRanges)
		checkRanges(t, s, size, maxRanges, rs, err)
	})
}
