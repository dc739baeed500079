package fetch

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/zfs-serve/zfs-serve/wire"
)

// Default ports when a URL names none.
const (
	DefaultPort      = 7070 // zfs-serve's native protocol
	DefaultHTTPPort  = 80
	DefaultHTTPSPort = 443
)

// Target is a parsed zfetch URL: a file (or, with -r, a directory) on a
// zfs-serve server over its native protocol, or on any HTTP/1.1 server.
type Target struct {
	// Scheme is "" for zfs-serve's native protocol (zfs://, or no
	// scheme), "http" or "https".
	Scheme string
	Addr   string // host:port, the port always given
	Path   string // absolute, unescaped
	// RawPath is Path as sent in an HTTP request line: percent-encoded as
	// the URL had it (where that is a valid encoding of Path). HTTP only.
	RawPath string
	// Query is the URL's query, without "?", as sent. HTTP only.
	Query string
}

// IsHTTP reports whether t is fetched over HTTP or HTTPS.
func (t Target) IsHTTP() bool { return t.Scheme == "http" || t.Scheme == "https" }

// TLS reports whether t is fetched over TLS.
func (t Target) TLS() bool { return t.Scheme == "https" }

// Host is t's host name or address, without port or brackets.
func (t Target) Host() string {
	h, _, err := net.SplitHostPort(t.Addr)
	if err != nil {
		return t.Addr
	}
	return h
}

// hostHeader is the authority an HTTP request names: the host, and the
// port unless it is the scheme's default.
func (t Target) hostHeader() string {
	_, port, _ := net.SplitHostPort(t.Addr)
	if (t.Scheme == "http" && port == strconv.Itoa(DefaultHTTPPort)) ||
		(t.Scheme == "https" && port == strconv.Itoa(DefaultHTTPSPort)) {
		h := t.Host()
		if strings.Contains(h, ":") {
			return "[" + h + "]"
		}
		return h
	}
	return t.Addr
}

// requestURI is what an HTTP request line asks for.
func (t Target) requestURI() string {
	p := t.RawPath
	if p == "" {
		p = (&url.URL{Path: t.Path}).EscapedPath()
	}
	if t.Query != "" {
		p += "?" + t.Query
	}
	return p
}

// String returns the URL of t, percent-encoded where needed.
func (t Target) String() string {
	if !t.IsHTTP() {
		return "zfs://" + t.Addr + (&url.URL{Path: t.Path}).EscapedPath()
	}
	return t.Scheme + "://" + t.hostHeader() + t.requestURI()
}

// Join returns the target of name, a slash-separated path, inside the
// directory t (without t's query).
func (t Target) Join(name string) Target {
	p := t.Path
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	j := Target{Scheme: t.Scheme, Addr: t.Addr, Path: p + name}
	if t.IsHTTP() {
		raw := t.RawPath
		if !strings.HasSuffix(raw, "/") {
			raw += "/"
		}
		segs := strings.Split(name, "/")
		for i, seg := range segs {
			segs[i] = url.PathEscape(seg)
		}
		j.RawPath = raw + strings.Join(segs, "/")
	}
	return j
}

// dir returns t as a directory: its path with a trailing slash.
func (t Target) dir() Target {
	if strings.HasSuffix(t.Path, "/") {
		return t
	}
	d := t
	d.Path += "/"
	if t.IsHTTP() {
		d.RawPath = t.requestPath() + "/"
	}
	return d
}

func (t Target) requestPath() string {
	if t.RawPath != "" {
		return t.RawPath
	}
	return (&url.URL{Path: t.Path}).EscapedPath()
}

// ParseURL accepts zfs://HOST[:PORT]/PATH and HOST[:PORT]/PATH (zfs-serve's
// native protocol, port 7070 by default), and http:// and https:// URLs,
// with percent-encoding in PATH. IPv6 hosts go in brackets.
func ParseURL(s string) (Target, error) {
	if i := strings.Index(s, "://"); i >= 0 {
		switch scheme := strings.ToLower(s[:i]); scheme {
		case "zfs":
			return parseNative(s, s[i+3:])
		case "http", "https":
			return parseHTTP(s, scheme)
		default:
			return Target{}, fmt.Errorf("%q: unsupported scheme %q (want zfs://, http:// or https://)", s, s[:i])
		}
	}
	return parseNative(s, s)
}

func parseNative(raw, s string) (Target, error) {
	hostport, p, _ := strings.Cut(s, "/")
	if hostport == "" {
		return Target{}, fmt.Errorf("%q: no host", raw)
	}
	p, err := url.PathUnescape("/" + p)
	if err != nil {
		return Target{}, fmt.Errorf("%q: bad percent-encoding: %w", raw, err)
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: the whole thing is the host (IPv6 in brackets allowed).
		host, port = hostport, strconv.Itoa(DefaultPort)
		if strings.HasPrefix(host, "[") {
			if !strings.HasSuffix(host, "]") {
				return Target{}, fmt.Errorf("%q: bad host %q", raw, hostport)
			}
			host = host[1 : len(host)-1]
		}
	}
	if host == "" || strings.ContainsAny(host, "[]@ ") {
		return Target{}, fmt.Errorf("%q: bad host %q", raw, hostport)
	}
	if err := checkPort(port); err != nil {
		return Target{}, fmt.Errorf("%q: %w", raw, err)
	}
	if err := checkPath(p); err != nil {
		return Target{}, fmt.Errorf("%q: %w", raw, err)
	}
	return Target{Addr: net.JoinHostPort(host, port), Path: p}, nil
}

func checkPort(port string) error {
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 || port[0] == '+' {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

func checkPath(p string) error {
	if len(p) > wire.MaxPath {
		return fmt.Errorf("path longer than %d bytes", wire.MaxPath)
	}
	if strings.IndexByte(p, 0) >= 0 {
		return fmt.Errorf("path contains NUL")
	}
	return nil
}

// parseHTTP parses an http:// or https:// URL. Credentials in the URL are
// refused (zfetch sends none), the fragment is dropped, and the host must
// be ASCII (IDNs in their punycode form).
func parseHTTP(s, scheme string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Target{}, fmt.Errorf("%q: %w", s, unwrapURLErr(err))
	}
	if u.Opaque != "" {
		return Target{}, fmt.Errorf("%q: not a hierarchical URL", s)
	}
	if u.User != nil {
		return Target{}, fmt.Errorf("%q: credentials in URLs are not supported", s)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return Target{}, fmt.Errorf("%q: no host", s)
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("[]@/?#\\\"<>^`{|}", c) >= 0 {
			return Target{}, fmt.Errorf("%q: bad host %q (non-ASCII names go in their xn-- form)", s, host)
		}
	}
	if port == "" {
		if strings.HasSuffix(u.Host, ":") {
			return Target{}, fmt.Errorf("%q: empty port", s)
		}
		port = strconv.Itoa(DefaultHTTPPort)
		if scheme == "https" {
			port = strconv.Itoa(DefaultHTTPSPort)
		}
	}
	if err := checkPort(port); err != nil {
		return Target{}, fmt.Errorf("%q: %w", s, err)
	}
	p, raw := u.Path, u.EscapedPath()
	if p == "" {
		p, raw = "/", "/"
	}
	if !strings.HasPrefix(p, "/") {
		return Target{}, fmt.Errorf("%q: bad path", s)
	}
	if err := checkPath(p); err != nil {
		return Target{}, fmt.Errorf("%q: %w", s, err)
	}
	return Target{Scheme: scheme, Addr: net.JoinHostPort(host, port), Path: p, RawPath: raw, Query: cleanQuery(u.RawQuery)}, nil
}

// cleanQuery percent-encodes the bytes a request line cannot carry.
func cleanQuery(q string) string {
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c <= ' ' || c >= 0x7f || c == '#' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func unwrapURLErr(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// resolve returns the target a redirect's Location names, relative to t.
func (t Target) resolve(loc string) (Target, error) {
	base, err := url.Parse(t.String())
	if err != nil {
		return Target{}, err
	}
	ref, err := url.Parse(loc)
	if err != nil {
		return Target{}, fmt.Errorf("bad Location %q: %w", loc, unwrapURLErr(err))
	}
	u := base.ResolveReference(ref)
	u.Fragment, u.RawFragment = "", ""
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return Target{}, fmt.Errorf("redirect to %q: not an http(s) URL", loc)
	}
	return parseHTTP(u.String(), scheme)
}
