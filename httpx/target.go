package httpx

import (
	"net/netip"
	"strings"
	"unicode/utf8"
)

// setTarget parses the request-target (RFC 9112 section 3.2) into
// r.Target, r.Path, r.Query and, for the absolute-form, r.Host. r.Method
// must be set already: it decides whether "*" and host:port are accepted.
func (r *Request) setTarget(t []byte) error {
	if len(t) == 0 {
		return errorf(400, "empty request-target")
	}
	if i := firstNot(t, targetChar); i >= 0 {
		if t[i] == '#' {
			return errorf(400, "fragment ('#') in request-target %.64q", t)
		}
		return errorf(400, "byte %#02x in request-target %.64q must be percent-encoded", t[i], t)
	}
	s := string(t) // the one copy: Path (when nothing is escaped), Query and Host are substrings
	r.Target = s
	switch {
	case s[0] == '/': // origin-form
		return r.setPathQuery(s)
	case hasPrefixFold(s, "http://") || hasPrefixFold(s, "https://"): // absolute-form
		rest := s[strings.IndexByte(s, ':')+3:]
		end := strings.IndexAny(rest, "/?")
		if end < 0 {
			end = len(rest)
		}
		auth := rest[:end]
		if auth == "" || !validAuthority(auth, false) {
			return errorf(400, "invalid authority %.64q in request-target", auth)
		}
		r.Host = auth
		return r.setPathQuery(rest[end:])
	case r.Method == "GET" || r.Method == "HEAD":
		return errorf(400, "request-target %.64q of %s is neither a path nor an http(s) URI", s, r.Method)
	case s == "*": // asterisk-form: OPTIONS, answered 405 by the caller
		return nil
	default: // authority-form: CONNECT, answered 405 by the caller
		if strings.IndexByte(s, ':') < 0 || !validAuthority(s, false) {
			return errorf(400, "request-target %.64q is neither a path, a URI, '*' nor host:port", s)
		}
		return nil
	}
}

// setPathQuery splits pq, the path and query of an origin-form or
// absolute-form target, at the first '?', keeps the query raw and
// percent-decodes the path. An empty path (absolute-form) is "/".
func (r *Request) setPathQuery(pq string) error {
	path, query, _ := strings.Cut(pq, "?")
	r.Query = query
	if path == "" {
		r.Path = "/"
		return nil
	}
	p, err := decodePath(path)
	if err != nil {
		return err
	}
	r.Path = p
	return nil
}

// decodePath percent-decodes p once (RFC 3986 section 2.1). It refuses a
// malformed escape, an encoded NUL, an encoded slash (which would make
// one path segment of two, or two of one, depending on who decodes) and a
// result that is not UTF-8. "." and ".." segments are left alone. p has
// only bytes 0x21-0x7e.
func decodePath(p string) (string, error) {
	i := strings.IndexByte(p, '%')
	if i < 0 {
		return p, nil
	}
	var b strings.Builder
	b.Grow(len(p))
	rest := p
	for ; i >= 0; i = strings.IndexByte(rest, '%') {
		if i+2 >= len(rest) || !isHex(rest[i+1]) || !isHex(rest[i+2]) {
			return "", errorf(400, "malformed percent-encoding %.3q in path %.64q", rest[i:], p)
		}
		c := unhex(rest[i+1])<<4 | unhex(rest[i+2])
		switch c {
		case 0:
			return "", errorf(400, "encoded NUL (%%00) in path %.64q", p)
		case '/':
			return "", errorf(400, "encoded slash (%s) in path %.64q is refused", rest[i:i+3], p)
		}
		b.WriteString(rest[:i])
		b.WriteByte(c)
		rest = rest[i+3:]
	}
	b.WriteString(rest)
	d := b.String()
	if !utf8.ValidString(d) {
		return "", errorf(400, "path %.64q is not UTF-8 once percent-decoded", p)
	}
	return d, nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// validAuthority reports whether s is `host [":" port]` (RFC 3986
// section 3.2 without userinfo; RFC 9110 section 7.2): host an IPv6
// literal in brackets or a reg-name (which covers IPv4 addresses), port
// *DIGIT. It is stricter than RFC 3986 in two ways nobody needs: no
// percent-encoding in the host and no IPvFuture or zone identifier. An
// empty s is valid only for the Host field (RFC 9110 section 7.2); an
// empty host with a port is never valid.
func validAuthority[S ~string | ~[]byte](s S, hostField bool) bool {
	if len(s) == 0 {
		return hostField
	}
	var port S
	if s[0] == '[' {
		end := -1
		for i := 1; i < len(s); i++ {
			if s[i] == ']' {
				end = i
				break
			}
		}
		if end < 0 || !validIPv6(s[1:end]) {
			return false
		}
		switch rest := s[end+1:]; {
		case len(rest) == 0:
		case rest[0] == ':':
			port = rest[1:]
		default:
			return false
		}
	} else {
		host := s
		for i := 0; i < len(s); i++ {
			if s[i] == ':' {
				host, port = s[:i], s[i+1:]
				break
			}
		}
		if len(host) == 0 || firstNot(host, hostChar) >= 0 {
			return false
		}
	}
	for i := 0; i < len(port); i++ {
		if !isDigit(port[i]) {
			return false
		}
	}
	return true
}

// validIPv6 reports whether s is an IPv6 address (an IPv4-mapped one
// included) without a zone.
func validIPv6[S ~string | ~[]byte](s S) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isHex(c) && c != ':' && c != '.' {
			return false // also: no zone ("%25eth0"), nothing netip would copy
		}
	}
	a, err := netip.ParseAddr(string(s))
	return err == nil && a.Is6()
}

// hasPrefixFold reports whether s starts with prefix, which is lower case
// ASCII, ignoring ASCII case in s.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && equalLower(s[:len(prefix)], prefix)
}
