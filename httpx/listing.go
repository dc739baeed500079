package httpx

import (
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/zfs-serve/zfs-serve/internal/human"
)

// Entry is one name in a directory listing.
type Entry struct {
	Name    string
	Kind    string // "file", "dir", "symlink" or "other"
	Size    int64  // of a file; not shown for other kinds
	ModTime time.Time
}

// listingCSS is all the style a listing has; it has no script.
const listingCSS = `body{font-family:system-ui,sans-serif;margin:1.5em}` +
	`table{border-collapse:collapse}th,td{padding:.15em 1em .15em 0;text-align:left}` +
	`td.s{text-align:right;white-space:nowrap}td.t{white-space:nowrap}` +
	`td:first-child{white-space:pre}a{text-decoration:none}a:hover{text-decoration:underline}`

// AppendListingHTML appends a complete HTML5 page listing entries, the
// directory at urlPath (the decoded request path, ending in "/"): title
// and heading "Index of PATH", a link to "../" except at "/", and a table
// of names (directories with a trailing "/"), sizes in binary units (the
// exact byte count in the cell's title; "-" for all but files) and
// modification times in UTC, directories first, each group sorted by name.
//
// Text is HTML-escaped, with invalid UTF-8 and control characters shown as
// U+FFFD; each link is the name percent-encoded except for unreserved
// characters (so it is relative, can hold no markup, and decodes back to
// the name's exact bytes). Entries named "", "." or ".." are left out.
// With omitted > 0, a line under the table says that many names are not
// shown because they are not valid UTF-8 (the caller leaves those out: no
// request can name them). The entries slice is not modified.
func AppendListingHTML(b []byte, urlPath string, entries []Entry, omitted int) []byte {
	es := slices.Clone(entries)
	slices.SortFunc(es, func(x, y Entry) int {
		if xd, yd := x.Kind == "dir", y.Kind == "dir"; xd != yd {
			if xd {
				return -1
			}
			return 1
		}
		return strings.Compare(x.Name, y.Name)
	})
	b = append(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"+
		"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>Index of "...)
	b = appendHTMLText(b, urlPath)
	b = append(b, "</title>\n<style>"+listingCSS+"</style>\n</head>\n<body>\n<h1>Index of "...)
	b = appendHTMLText(b, urlPath)
	b = append(b, "</h1>\n<table>\n<thead><tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr></thead>\n<tbody>\n"...)
	if urlPath != "/" {
		b = append(b, "<tr><td><a href=\"../\">../</a></td><td class=\"s\">-</td><td></td></tr>\n"...)
	}
	for _, e := range es {
		if e.Name == "" || e.Name == "." || e.Name == ".." {
			continue
		}
		b = append(b, "<tr><td><a href=\""...)
		b = appendPathSegment(b, e.Name)
		if e.Kind == "dir" {
			b = append(b, '/')
		}
		b = append(b, "\">"...)
		b = appendHTMLText(b, e.Name)
		if e.Kind == "dir" {
			b = append(b, '/')
		}
		b = append(b, "</a></td>"...)
		if e.Kind == "file" {
			b = append(b, "<td class=\"s\" title=\""...)
			b = strconv.AppendInt(b, e.Size, 10)
			b = append(b, " bytes\">"...)
			b = append(b, human.Bytes(e.Size)...)
			b = append(b, "</td>"...)
		} else {
			b = append(b, "<td class=\"s\">-</td>"...)
		}
		b = append(b, "<td class=\"t\">"...)
		b = e.ModTime.UTC().AppendFormat(b, "2006-01-02 15:04")
		b = append(b, "</td></tr>\n"...)
	}
	b = append(b, "</tbody>\n</table>\n"...)
	if omitted > 0 {
		b = append(b, "<p>"...)
		b = strconv.AppendInt(b, int64(omitted), 10)
		if omitted == 1 {
			b = append(b, " name not shown: it is"...)
		} else {
			b = append(b, " names not shown: they are"...)
		}
		b = append(b, " not valid UTF-8, which no request can name.</p>\n"...)
	}
	return append(b, "</body>\n</html>\n"...)
}

// AppendListingJSON appends entries as a JSON array sorted by name (byte
// order), an object per entry:
//
//	{"name":"a b","kind":"file","size":12,"mtime":"2026-12-06T06:31:56.123456789Z"}
//
// with size for files only and mtime in RFC 3339 with nanoseconds, in UTC.
// Strings are escaped as encoding/json does, so the output is valid JSON
// for any name; invalid UTF-8 in a name becomes U+FFFD, as there.
// The entries slice is not modified.
func AppendListingJSON(b []byte, entries []Entry) []byte {
	es := slices.Clone(entries)
	slices.SortFunc(es, func(x, y Entry) int { return strings.Compare(x.Name, y.Name) })
	b = append(b, '[')
	for i, e := range es {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendJSONString(b, e.Name)
		b = append(b, `,"kind":`...)
		b = appendJSONString(b, e.Kind)
		if e.Kind == "file" {
			b = append(b, `,"size":`...)
			b = strconv.AppendInt(b, e.Size, 10)
		}
		b = append(b, `,"mtime":"`...)
		b = e.ModTime.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000000Z07:00")
		b = append(b, `"}`...)
	}
	return append(b, ']')
}

// appendHTMLText appends s escaped for HTML text or a quoted attribute
// value. What an HTML document may not hold is replaced by U+FFFD: invalid
// UTF-8, control characters and noncharacters.
func appendHTMLText(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '<':
			b = append(b, "&lt;"...)
		case r == '>':
			b = append(b, "&gt;"...)
		case r == '&':
			b = append(b, "&amp;"...)
		case r == '"':
			b = append(b, "&#34;"...)
		case r == '\'':
			b = append(b, "&#39;"...)
		case r == utf8.RuneError && n == 1, r < 0x20, 0x7f <= r && r < 0xa0,
			0xfdd0 <= r && r <= 0xfdef, r&0xfffe == 0xfffe:
			b = utf8.AppendRune(b, utf8.RuneError)
		default:
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return b
}

// appendPathSegment appends s percent-encoded as one path segment,
// keeping only the unreserved characters (RFC 3986 section 2.3) as they
// are: a name with ":" cannot read as a scheme, nor one with "&" or a
// quote as markup.
func appendPathSegment(b []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' {
			b = append(b, c)
		} else {
			b = append(b, '%', hex[c>>4], hex[c&15])
		}
	}
	return b
}

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it: '"', '\\' and control characters, '<', '>' and '&' (so the
// output is safe in HTML too), U+2028 and U+2029, and invalid UTF-8
// replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r == '\n':
			b = append(b, `\n`...)
		case r == '\r':
			b = append(b, `\r`...)
		case r == '\t':
			b = append(b, `\t`...)
		case r < 0x20 || r == '<' || r == '>' || r == '&':
			b = append(b, '\\', 'u', '0', '0', hex[r>>4], hex[r&15])
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&15])
		case r == utf8.RuneError && n == 1:
			b = append(b, `\ufffd`...)
		default:
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}

// ListingHTMLLen is the length of AppendListingHTML's output for the same
// arguments, worked out without building it, so that a caller can make
// the page in one allocation of its size: a page of 50000 names is
// megabytes, and append's growth from a wrong guess would leave the
// guess and its copies as garbage of about the page's size again.
func ListingHTMLLen(urlPath string, entries []Entry, omitted int) int {
	n := len("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"+
		"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>Index of ") +
		len("</title>\n<style>"+listingCSS+"</style>\n</head>\n<body>\n<h1>Index of ") +
		len("</h1>\n<table>\n<thead><tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr></thead>\n<tbody>\n") +
		2*htmlTextLen(urlPath)
	if urlPath != "/" {
		n += len("<tr><td><a href=\"../\">../</a></td><td class=\"s\">-</td><td></td></tr>\n")
	}
	var scratch [64]byte
	for _, e := range entries {
		if e.Name == "" || e.Name == "." || e.Name == ".." {
			continue
		}
		n += len("<tr><td><a href=\"") + pathSegmentLen(e.Name) + len("\">") + htmlTextLen(e.Name) + len("</a></td>")
		if e.Kind == "dir" {
			n += 2
		}
		if e.Kind == "file" {
			n += len("<td class=\"s\" title=\"") + decimalLen(e.Size) + len(" bytes\">") + len(human.Bytes(e.Size)) + len("</td>")
		} else {
			n += len("<td class=\"s\">-</td>")
		}
		n += len("<td class=\"t\">") + timeLen(scratch[:0], e.ModTime, "2006-01-02 15:04", 16) + len("</td></tr>\n")
	}
	n += len("</tbody>\n</table>\n")
	if omitted > 0 {
		n += len("<p>") + decimalLen(int64(omitted)) + len(" not valid UTF-8, which no request can name.</p>\n")
		if omitted == 1 {
			n += len(" name not shown: it is")
		} else {
			n += len(" names not shown: they are")
		}
	}
	return n + len("</body>\n</html>\n")
}

// ListingJSONLen is the length of AppendListingJSON's output for the same
// entries, worked out without building it (see ListingHTMLLen).
func ListingJSONLen(entries []Entry) int {
	n := 2 // [ ]
	var scratch [64]byte
	for i, e := range entries {
		if i > 0 {
			n++
		}
		n += len(`{"name":`) + jsonStringLen(e.Name) + len(`,"kind":`) + jsonStringLen(e.Kind)
		if e.Kind == "file" {
			n += len(`,"size":`) + decimalLen(e.Size)
		}
		n += len(`,"mtime":"`) + timeLen(scratch[:0], e.ModTime, "2006-01-02T15:04:05.000000000Z07:00", 30) + len(`"}`)
	}
	return n
}

// timeLen is the length of t in UTC in layout, which is fixed, of four
// digit years, for the years 0 to 9999; others are formatted to tell.
func timeLen(scratch []byte, t time.Time, layout string, fixed int) int {
	t = t.UTC()
	if y := t.Year(); 0 <= y && y <= 9999 {
		return fixed
	}
	return len(t.AppendFormat(scratch, layout))
}

// decimalLen is the length of strconv.AppendInt(nil, n, 10).
func decimalLen(n int64) int {
	l := 1
	u := uint64(n)
	if n < 0 {
		l++
		u = -u
	}
	for ; u >= 10; u /= 10 {
		l++
	}
	return l
}

// htmlTextLen is the length of appendHTMLText(nil, s).
func htmlTextLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '<', r == '>':
			n += 4
		case r == '&', r == '"', r == '\'':
			n += 5
		case r == utf8.RuneError && w == 1, r < 0x20, 0x7f <= r && r < 0xa0,
			0xfdd0 <= r && r <= 0xfdef, r&0xfffe == 0xfffe:
			n += utf8.RuneLen(utf8.RuneError)
		default:
			n += w
		}
		i += w
	}
	return n
}

// pathSegmentLen is the length of appendPathSegment(nil, s).
func pathSegmentLen(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' {
			n++
		} else {
			n += 3
		}
	}
	return n
}

// jsonStringLen is the length of appendJSONString(nil, s).
func jsonStringLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t':
			n += 2
		case r < 0x20 || r == '<' || r == '>' || r == '&':
			n += 6
		case r == '\u2028' || r == '\u2029':
			n += 6
		case r == utf8.RuneError && w == 1:
			n += 6
		default:
			n += w
		}
		i += w
	}
	return n
}
