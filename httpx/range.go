package httpx

import (
	"errors"
	"slices"
	"strconv"
)

// Range is one satisfiable byte range of a representation: Length bytes
// from offset Start, with Length > 0 and Start+Length <= the size it was
// parsed for.
type Range struct{ Start, Length int64 }

// ErrUnsatisfiable is ParseRange's answer to a valid Range header none of
// whose ranges overlaps the representation: the response is 416 with
// Content-Range "bytes */SIZE".
var ErrUnsatisfiable = errors.New("httpx: range not satisfiable")

// ParseRange interprets the Range header value s for a representation of
// size bytes (RFC 9110 sections 14.1 and 14.2). The forms are "bytes=a-b",
// "bytes=a-" and the suffix "bytes=-n" (the last n bytes, the whole
// representation when n > size), in a comma-separated list with optional
// whitespace around the commas; empty list elements are ignored, as the
// #rule requires. The unit name is case-insensitive; numbers are 1*DIGIT.
//
// It returns (nil, nil), meaning the whole representation is sent with 200,
// when s is empty, when its unit is not "bytes", when it is invalid (a bad
// character, a number that overflows int64, a last-pos before its first-pos,
// no range at all), when it holds more than maxRanges ranges (counted as
// written, satisfiable or not; maxRanges <= 0 means no limit), and when the
// ranges are abusive: their total length, after the unsatisfiable ones are
// dropped and the rest clipped to size, exceeds size. That is the rule of
// Go's net/http and of nginx: a client cannot make the response much larger
// than the file by asking for overlapping ranges, and "bytes=0-0,-1" and
// the like stay allowed. Together with maxRanges it bounds a response to
// size bytes plus the multipart overhead of maxRanges parts.
//
// It returns ErrUnsatisfiable when s is valid but no range is satisfiable:
// every first-pos is >= size and every suffix-length is 0. For a size of
// 0, a suffix-range with a suffix-length other than 0 is satisfiable (RFC
// 9110 section 14.1.2) but selects no byte, which no 206 can describe: a
// range set with one is ignored (nil, nil: the empty representation with
// 200), and one without is unsatisfiable.
//
// Otherwise the satisfiable ranges are returned in the order written,
// clipped to size, neither merged nor reordered (RFC 9110 allows sending
// them as requested, and a client that asked for overlapping ranges gets
// what it asked for within the abuse rule). A negative size is treated as
// unknown: the header is ignored.
func ParseRange(s string, size int64, maxRanges int) ([]Range, error) {
	if size < 0 {
		return nil, nil
	}
	s = stripOWS(s)
	if len(s) < len("bytes=") || s[5] != '=' || !rangeUnitIsBytes(s[:5]) {
		return nil, nil
	}
	var buf [4]Range
	rs := buf[:0]
	var total int64 // of rs, <= size
	n := 0          // range-specs written
	empty := false  // a satisfiable range-spec selected no byte (size 0)
	for rest := s[len("bytes="):]; rest != ""; {
		elem := rest
		rest = ""
		for i := 0; i < len(elem); i++ {
			if elem[i] == ',' {
				elem, rest = elem[:i], elem[i+1:]
				break
			}
		}
		elem = stripOWS(elem)
		if elem == "" {
			continue
		}
		if n++; maxRanges > 0 && n > maxRanges {
			return nil, nil
		}
		r, ok, valid := rangeSpec(elem, size)
		if !valid {
			return nil, nil
		}
		if !ok {
			continue
		}
		if r.Length == 0 {
			empty = true
			continue
		}
		if r.Length > size-total {
			return nil, nil // abuse: more bytes than the file has
		}
		total += r.Length
		rs = append(rs, r)
	}
	switch {
	case n == 0:
		return nil, nil // "bytes=" or "bytes=,": no range-spec at all
	case len(rs) == 0 && empty:
		return nil, nil // "bytes=-5" of an empty file: satisfiable, and all of it is nothing
	case len(rs) == 0:
		return nil, ErrUnsatisfiable
	}
	return slices.Clone(rs), nil
}

// rangeSpec parses one non-empty range-spec. valid is false when it is not
// an int-range or suffix-range; ok is false when it is valid but not
// satisfiable for size. A suffix-range other than "-0" is satisfiable
// even for a size of 0, with a Length of 0 then.
func rangeSpec(elem string, size int64) (r Range, ok, valid bool) {
	if elem[0] == '-' {
		n, good := rangeNumber(elem[1:])
		if !good {
			return Range{}, false, false
		}
		if n == 0 {
			return Range{}, false, true
		}
		if size == 0 {
			return Range{}, true, true
		}
		n = min(n, size)
		return Range{Start: size - n, Length: n}, true, true
	}
	i := 0
	for i < len(elem) && elem[i] != '-' {
		i++
	}
	if i == len(elem) {
		return Range{}, false, false
	}
	first, good := rangeNumber(elem[:i])
	if !good {
		return Range{}, false, false
	}
	last := int64(-1) // none: to the end
	if i+1 < len(elem) {
		if last, good = rangeNumber(elem[i+1:]); !good || last < first {
			return Range{}, false, false
		}
	}
	if first >= size {
		return Range{}, false, true
	}
	if last < 0 || last >= size {
		last = size - 1
	}
	return Range{Start: first, Length: last - first + 1}, true, true
}

// rangeNumber parses 1*DIGIT, refusing a value that overflows int64.
func rangeNumber(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (1<<63-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// rangeUnitIsBytes reports whether the five bytes of s spell "bytes" in
// any case (range units are case-insensitive, RFC 9110 section 14.1).
func rangeUnitIsBytes(s string) bool {
	const unit = "bytes"
	for i := range len(unit) {
		if s[i]|0x20 != unit[i] {
			return false
		}
	}
	return true
}

// stripOWS removes OWS (spaces and horizontal tabs) from both ends of s.
func stripOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for s != "" && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// ContentRange formats the Content-Range value "bytes START-END/SIZE" of r.
func ContentRange(r Range, size int64) string {
	var buf [64]byte
	return string(AppendContentRange(buf[:0], r, size))
}

// AppendContentRange appends ContentRange(r, size) to b.
func AppendContentRange(b []byte, r Range, size int64) []byte {
	b = append(b, "bytes "...)
	b = strconv.AppendInt(b, r.Start, 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, r.Start+r.Length-1, 10)
	b = append(b, '/')
	return strconv.AppendInt(b, size, 10)
}
