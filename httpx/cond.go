package httpx

import (
	"strconv"
	"time"
)

// ETag is the strong entity tag of a file's identity, like nginx's but
// with the inode: `"INO-MTIME-SIZE"`, each in lowercase hexadecimal, mtime
// in nanoseconds (a negative one as its 64-bit two's complement, so that
// the tag stays a plain hex triple).
func ETag(ino uint64, mtimeNanos, size int64) string {
	var buf [64]byte
	b := append(buf[:0], '"')
	b = strconv.AppendUint(b, ino, 16)
	b = append(b, '-')
	b = strconv.AppendUint(b, uint64(mtimeNanos), 16)
	b = append(b, '-')
	b = strconv.AppendUint(b, uint64(size), 16)
	b = append(b, '"')
	return string(b)
}

// Preconditions evaluates steps 1 to 4 of RFC 9110 section 13.2.2 for a GET
// or HEAD of a file whose strong entity tag is etag and whose modification
// time is mod (a zero mod meaning none: the date conditions are then
// ignored). The arguments are the fields' values, "" when absent. It
// returns 412 (Precondition Failed), 304 (Not Modified) or 0 to go on.
//
//  1. If-Match, when present, must match etag by strong comparison: "*"
//     matches, a list matches when one of its tags does, and a value that
//     is not a valid list matches nothing. Otherwise 412.
//  2. Without If-Match, a valid If-Unmodified-Since date earlier than mod
//     gives 412; an invalid date is ignored.
//  3. If-None-Match, when present, gives 304 if it matches etag by weak
//     comparison (W/ ignored), "*" included.
//  4. Without If-None-Match, a valid If-Modified-Since date not earlier
//     than mod gives 304.
//
// Dates are compared at one-second resolution, the resolution of an
// HTTP-date.
func Preconditions(ifMatch, ifUnmodifiedSince, ifNoneMatch, ifModifiedSince, etag string, mod time.Time) int {
	if v := stripOWS(ifMatch); v != "" {
		if !etagListMatch(v, etag, false) {
			return 412
		}
	} else if t, ok := ParseHTTPDate(ifUnmodifiedSince); ok && !mod.IsZero() && mod.Unix() > t.Unix() {
		return 412
	}
	if v := stripOWS(ifNoneMatch); v != "" {
		if etagListMatch(v, etag, true) {
			return 304
		}
	} else if t, ok := ParseHTTPDate(ifModifiedSince); ok && !mod.IsZero() && mod.Unix() <= t.Unix() {
		return 304
	}
	return 0
}

// RangeApplies evaluates If-Range (RFC 9110 section 13.1.5): whether the
// Range header is to be honoured, or the whole representation sent. It is
// true when ifRange is empty, when it is a strong entity tag equal to etag
// (a weak one never matches), or when it is an HTTP-date equal to mod at
// one-second resolution (never when mod is zero). Anything else,
// unparsable values included, is false.
//
// Like net/http and nginx, it does not check that mod is a strong
// validator (RFC 9110 section 8.8.2.2): after a file is written twice
// within one second, a date If-Range from between the writes still
// passes. Clients send the entity tag when they have one.
func RangeApplies(ifRange, etag string, mod time.Time) bool {
	v := stripOWS(ifRange)
	if v == "" {
		return true
	}
	if v[0] == '"' || len(v) > 1 && v[0] == 'W' && v[1] == '/' {
		tag, weak, rest, ok := scanETag(v)
		return ok && rest == "" && !weak && etagEqual(tag, false, etag, false)
	}
	t, ok := ParseHTTPDate(v)
	return ok && !mod.IsZero() && t.Unix() == mod.Unix()
}

// etagListMatch reports whether the If-Match or If-None-Match value list
// matches etag: "*" or a list of entity tags with optional whitespace and
// empty elements around the commas. A value that is not such a list
// matches nothing (as in net/http, which stops at the first bad element).
func etagListMatch(list, etag string, weakCompare bool) bool {
	for list != "" {
		switch {
		case list[0] == ',' || list[0] == ' ' || list[0] == '\t':
			list = list[1:]
			continue
		case list[0] == '*':
			list = stripOWS(list[1:])
			return list == "" || list[0] == ','
		}
		tag, weak, rest, ok := scanETag(list)
		if !ok {
			return false
		}
		if etagEqual(tag, weak, etag, weakCompare) {
			return true
		}
		list = stripOWS(rest)
		if list != "" && list[0] != ',' {
			return false
		}
	}
	return false
}

// etagEqual compares the opaque-tag tag (weak or not) with the entity tag
// etag: by weak comparison, the opaque-tags are equal; by strong
// comparison, neither is weak as well (RFC 9110 section 8.8.3.2). An etag
// that is not a valid entity-tag equals nothing.
func etagEqual(tag string, weak bool, etag string, weakCompare bool) bool {
	etag, etagWeak, rest, ok := scanETag(etag)
	return ok && rest == "" && tag == etag && (weakCompare || !weak && !etagWeak)
}

// scanETag reads one entity-tag from the start of s: [W/] DQUOTE *etagc
// DQUOTE, with etagc any visible ASCII but DQUOTE, or obs-text. It returns
// the opaque-tag with its quotes, whether it was weak, and what follows.
func scanETag(s string) (tag string, weak bool, rest string, ok bool) {
	if len(s) >= 2 && s[0] == 'W' && s[1] == '/' {
		weak, s = true, s[2:]
	}
	if s == "" || s[0] != '"' {
		return "", false, "", false
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return s[:i+1], weak, s[i+1:], true
		case c < 0x21 || c == 0x7f:
			return "", false, "", false
		}
	}
	return "", false, "", false
}
