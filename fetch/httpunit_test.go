package fetch

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

func TestParseHTTPURL(t *testing.T) {
	ok := map[string]Target{
		"http://h/a/b":             {Scheme: "http", Addr: "h:80", Path: "/a/b", RawPath: "/a/b"},
		"HTTPS://h:8443":           {Scheme: "https", Addr: "h:8443", Path: "/", RawPath: "/"},
		"http://[::1]:81/x?y=1#f":  {Scheme: "http", Addr: "[::1]:81", Path: "/x", RawPath: "/x", Query: "y=1"},
		"https://h/a%20b/%C3%BC":   {Scheme: "https", Addr: "h:443", Path: "/a b/ü", RawPath: "/a%20b/%C3%BC"},
		"http://h/a%2Fb":           {Scheme: "http", Addr: "h:80", Path: "/a/b", RawPath: "/a%2Fb"},
		"http://h/q?a=%20&b=c d":   {Scheme: "http", Addr: "h:80", Path: "/q", RawPath: "/q", Query: "a=%20&b=c%20d"},
		"zfs://h/x":                {Addr: "h:7070", Path: "/x"},
		"http://xn--bcher-kva.de/": {Scheme: "http", Addr: "xn--bcher-kva.de:80", Path: "/", RawPath: "/"},
	}
	for in, want := range ok {
		got, err := ParseURL(in)
		if err != nil || got != want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"http://", "http:///x", "http://u:p@h/x", "http://h:0/", "http://h:99999/", "http://h:/x",
		"http://bücher.de/", "http://h/%zz", "http://h/a%00", "ftp://h/x", "http:h/x", "http://h\x7f/"} {
		if got, err := ParseURL(in); err == nil {
			t.Errorf("ParseURL(%q) = %+v, want an error", in, got)
		}
	}
	tg, _ := ParseURL("http://h:80/d/x?q")
	if s := tg.String(); s != "http://h/d/x?q" {
		t.Errorf("String: %q", s)
	}
	if j := tg.Join("a b"); j.String() != "http://h/d/x/a%20b" || j.Path != "/d/x/a b" {
		t.Errorf("Join: %+v %q", j, j.String())
	}
	if j := tg.Join("s/a?b"); j.String() != "http://h/d/x/s/a%3Fb" || j.Path != "/d/x/s/a?b" {
		t.Errorf("Join of a path: %+v %q", j, j.String())
	}
	if h := (Target{Scheme: "https", Addr: "[::1]:443"}).hostHeader(); h != "[::1]" {
		t.Errorf("hostHeader: %q", h)
	}
}

func TestParseResponseHead(t *testing.T) {
	type want struct {
		code   int
		cl     int64
		chunk  bool
		close  bool
		used   int
		header map[string]string
	}
	ok := map[string]want{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\nhello":                 {200, 5, false, false, 53 - 5 - 0, map[string]string{"etag": `"x"`}},
		"HTTP/1.1 206 Partial\nContent-Length: 2\n\nab":                                    {206, 2, false, false, 40, nil},
		"HTTP/1.0 200 OK\r\n\r\n":                                                          {200, -1, false, true, 19, nil},
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n":           {200, 0, false, false, 61, nil},
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n": {200, -1, true, false, 71, nil},
		"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close\r\n\r\n":                         {200, -1, false, true, 49, nil},
		"HTTP/1.1 404\r\nContent-Length: 1, 1\r\nX: a\r\nX: b\r\n\r\n":                     {404, 1, false, false, 50, map[string]string{"x": "a, b"}},
	}
	for in, w := range ok {
		r, n, err := parseResponseHead([]byte(in))
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		body := in[n:]
		if r.Code != w.code || r.ContentLength != w.cl || r.Chunked != w.chunk || r.Close != w.close || !strings.HasSuffix(in[:n], "\n\n") && !strings.HasSuffix(in[:n], "\r\n\r\n") {
			t.Errorf("%q: %+v, used %d (body %q)", in, r, n, body)
		}
		for k, v := range w.header {
			if got := r.Header.get(k); got != v {
				t.Errorf("%q: %s = %q, want %q", in, k, got, v)
			}
		}
	}
	for _, in := range []string{"HTTP/1.1 200 OK\r\n", "HTTP/1.1 200 OK\r\nA: b\r\n", "", "H", "HTTP/", "HTTP/1.", "HTTP/1.1"} {
		if _, _, err := parseResponseHead([]byte(in)); err != errHeadIncomplete {
			t.Errorf("%q: %v, want incomplete", in, err)
		}
	}
	// Bytes that cannot begin a response are an error before the head
	// would end: a server of another protocol may say no more, and close
	// or wait.
	for in, want := range map[string]string{
		"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n": `not an HTTP/1.x response: "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"`,
		"220 mail.example ESMTP\r\n500 unrecognized": `not an HTTP/1.x response: "220 mail.example ESMTP"`,
		"ZR\x01\x01\x00\x00\x00\x04":                 "native protocol (a native port: fetch it with a zfs:// URL)",
		"HTTP/2":                                     `not an HTTP/1.x response: "HTTP/2"`,
		"x":                                          `not an HTTP/1.x response: "x"`,
		// A CRLF before the status line: the message shows it, not "".
		"\r\nHTTP/1.1 200 OK\r\n":                          `not an HTTP/1.x response: "\r\nHTTP/1.1 200 OK\r\n"`,
		"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n": `not an HTTP/1.x response: "\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"`,
	} {
		var he *httpError
		if _, _, err := parseResponseHead([]byte(in)); !errors.As(err, &he) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %s", in, err, want)
		}
	}
	for _, in := range []string{
		"HTTP/2 200 OK\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n", "http/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "HTTP/1.1 200 OK\r\n folded\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n", "HTTP/1.1 099 x\r\n\r\n", "SSH-2.0-OpenSSH\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", maxRespHead) + "\r\n\r\n",
	} {
		if r, _, err := parseResponseHead([]byte(in)); err == nil || err == errHeadIncomplete {
			t.Errorf("%q: %+v, %v; want an error", truncate([]byte(in), 60), r, err)
		}
	}
}

func FuzzParseResponseHead(f *testing.F) {
	for _, s := range []string{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "HTTP/1.1 206 x\nContent-Range: bytes 0-1/2\n\n",
		"HTTP/1.0 301 Moved\r\nLocation: /x\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := parseResponseHead(b)
		// A prefix refused as no response at all stays refused, however
		// many more bytes arrive.
		for k := range min(len(b), 16) {
			if _, _, perr := parseResponseHead(b[:k]); perr != nil && perr != errHeadIncomplete && err == nil {
				t.Fatalf("prefix %q refused (%v), the whole accepted", b[:k], perr)
			}
		}
		if err != nil {
			if err == errHeadIncomplete && len(b) >= maxRespHead {
				t.Fatalf("incomplete at %d bytes", len(b))
			}
			return
		}
		if n <= 0 || n > len(b) || n > maxRespHead+4 {
			t.Fatalf("used %d of %d", n, len(b))
		}
		if r.Code < 100 || r.Code > 999 || r.ContentLength < -1 {
			t.Fatalf("%+v", r)
		}
		// The head alone parses the same.
		r2, n2, err := parseResponseHead(b[:n])
		if err != nil || n2 != n || r2.Code != r.Code || r2.ContentLength != r.ContentLength || r2.Chunked != r.Chunked {
			t.Fatalf("head alone: %+v %d %v", r2, n2, err)
		}
	})
}

func TestContentRange(t *testing.T) {
	for in, want := range map[string][3]int64{"bytes 0-9/10": {0, 9, 10}, "bytes 5-5/*": {5, 5, -1}, "BYTES 1-2/3": {1, 2, 3}} {
		a, b, c, err := contentRange(in)
		if err != nil || [3]int64{a, b, c} != want {
			t.Errorf("%q: %d %d %d %v", in, a, b, c, err)
		}
	}
	for _, in := range []string{"", "bytes */10", "bytes 5-4/10", "bytes 0-10/10", "items 0-1/2", "bytes 0-1", "bytes -1-2/3", "bytes 0-1/x"} {
		if _, _, _, err := contentRange(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"0": 0, "7": 7 * time.Second, " 120 ": 2 * time.Minute, "99999999": maxRetryAfter,
		"Sun, 06 Dec 2026 08:00:30 GMT": 30 * time.Second, "Sun, 06 Dec 2026 07:00:00 GMT": 0,
		"Mon, 07 Dec 2026 08:00:00 GMT": maxRetryAfter, "-1": 0, "1.5": 0, "soon": 0, "": 0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("%q: %v, want %v", in, got, want)
		}
	}
}

func TestRedirectRules(t *testing.T) {
	from := func(u string) Target { tg, _ := ParseURL(u); return tg }
	resp := func(loc string) *httpResponse {
		return &httpResponse{Code: 302, Header: header{"location": {loc}}}
	}
	ok := map[[2]string]string{
		{"http://h/a/b", "c"}:                      "http://h/a/c",
		{"http://h/a/b", "/x?y"}:                   "http://h/x?y",
		{"http://h/a", "https://o:8443/z"}:         "https://o:8443/z",
		{"https://h/a", "https://o/z#frag"}:        "https://o/z",
		{"https://h/a", "//o/z"}:                   "https://o/z",
		{"http://h:8080/a", "http://h:8080/b%20c"}: "http://h:8080/b%20c",
	}
	for in, want := range ok {
		got, err := redirectTo(from(in[0]), resp(in[1]))
		if err != nil || got.String() != want {
			t.Errorf("%v: %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range [][2]string{{"https://h/a", "http://h/a"}, {"http://h/a", "ftp://h/a"}, {"http://h/a", ""}, {"http://h/a", "zfs://h/a"}} {
		if got, err := redirectTo(from(in[0]), resp(in[1])); err == nil {
			t.Errorf("%v followed to %v", in, got)
		} else if Retryable(err) {
			t.Errorf("%v: %v is retryable", in, err)
		}
	}
}

func TestDigestHeaders(t *testing.T) {
	sum := bytes.Repeat([]byte{0xab}, 32)
	b64 := base64.StdEncoding.EncodeToString(sum)
	hexs := strings.Repeat("ab", 32)
	for in, want := range map[string]string{
		"sha-256=:" + b64 + ":":                         hexs,
		"sha-512=:AAAA:, sha-256=:" + b64 + ":":         hexs,
		"sha-256=:" + b64 + ":;param=1":                 hexs,
		"sha-256=:" + strings.TrimRight(b64, "=") + ":": hexs,
		"sha-256=" + b64:                                "",
		"sha-256=:" + b64[:40] + ":":                    "",
		"SHA-256=:" + b64 + ":":                         "",
		"sha-256=:!!!:":                                 "",
		"":                                              "",
		"sha-256=:" + base64.StdEncoding.EncodeToString(sum[:31]) + ":": "",
	} {
		if got := reprDigestSHA256(in); got != want {
			t.Errorf("Repr-Digest %q: %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"SHA-256=" + b64:          hexs,
		"md5=xx, sha-256=" + b64:  hexs,
		"SHA-256=\"" + b64 + "\"": hexs,
		"SHA-256=:" + b64 + ":":   "",
		"SHA=" + b64:              "",
	} {
		if got := legacyDigestSHA256(in); got != want {
			t.Errorf("Digest %q: %q, want %q", in, got, want)
		}
	}
	h := header{"repr-digest": {"sha-256=:" + b64 + ":"}, "digest": {"SHA-256=" + base64.StdEncoding.EncodeToString(make([]byte, 32))}}
	if got := headerSHA256(h); got != hexs {
		t.Errorf("Repr-Digest does not win: %q", got)
	}
}

func FuzzDigestHeaders(f *testing.F) {
	f.Add("sha-256=:" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + ":")
	f.Add("SHA-256=" + base64.StdEncoding.EncodeToString(make([]byte, 32)))
	f.Add("sha-512=:AA==:, sha-256=:;x")
	f.Fuzz(func(t *testing.T, s string) {
		for _, d := range []string{reprDigestSHA256(s), legacyDigestSHA256(s)} {
			if d != "" && (len(d) != 64 || strings.Trim(d, "0123456789abcdef") != "") {
				t.Fatalf("%q -> %q", s, d)
			}
		}
	})
}

func TestParseListing(t *testing.T) {
	zfs := `[{"name":"a.txt","kind":"file","size":10,"mtime":"2026-12-06T06:31:56.123456789Z"},
	 {"name":"sub","kind":"dir","mtime":"2026-12-06T06:31:56Z"},{"name":"l","kind":"symlink","mtime":"2026-12-06T06:31:56Z"},
	 {"name":"p","kind":"other","mtime":"2026-12-06T06:31:56Z"}]`
	nginx := "[\n{ \"name\":\"e\", \"type\":\"directory\", \"mtime\":\"Sun, 06 Dec 2026 07:31:37 GMT\" },\n" +
		"{ \"name\":\"a.txt\", \"type\":\"file\", \"mtime\":\"Sun, 06 Dec 2026 07:31:37 GMT\", \"size\":3 }\n]\n"
	es, err := parseListing([]byte(zfs))
	if err != nil || len(es) != 4 || es[0] != (wire.Entry{Kind: wire.KindFile, Name: "a.txt", Size: 10, MTime: 1796538716123456789}) ||
		es[1].Kind != wire.KindDir || es[2].Kind != wire.KindSymlink || es[3].Kind != wire.KindOther {
		t.Errorf("zfs-serve: %+v, %v", es, err)
	}
	es, err = parseListing([]byte(nginx))
	if err != nil || len(es) != 2 || es[0].Kind != wire.KindDir || es[1] != (wire.Entry{Kind: wire.KindFile, Name: "a.txt", Size: 3, MTime: 1796542297000000000}) {
		t.Errorf("nginx: %+v, %v", es, err)
	}
	var nl *errNotListing
	for _, in := range []string{"<html></html>", `{"a":1}`, `[{"kind":"file"}]`, `[{"name":"x","kind":"fifo"}]`, `[1]`, `[`} {
		if _, err := parseListing([]byte(in)); !errors.As(err, &nl) {
			t.Errorf("%q: %v, want not a listing", in, err)
		}
	}
	for _, in := range []string{`[{"name":"..","kind":"dir"}]`, `[{"name":"a/b","kind":"file"}]`, `[{"name":"","type":"file"}]`, `[{"name":"x","kind":"file","size":-1}]`} {
		if _, err := parseListing([]byte(in)); err == nil || errors.As(err, &nl) {
			t.Errorf("%q: %v, want an invalid entry", in, err)
		}
	}
}

func FuzzParseListing(f *testing.F) {
	f.Add([]byte(`[{"name":"a","kind":"file","size":1,"mtime":"2026-12-06T06:31:56Z"}]`))
	f.Add([]byte(`[{"name":"e","type":"directory","mtime":"Sun, 06 Dec 2026 07:31:37 GMT"}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := parseListing(b)
		if err != nil {
			return
		}
		for _, e := range es {
			if !wire.ValidName(e.Name) || e.Size < -1 || e.Kind < wire.KindFile || e.Kind > wire.KindOther {
				t.Fatalf("%q -> %+v", b, e)
			}
		}
	})
}

func FuzzParseHTTPURL(f *testing.F) {
	for _, s := range []string{"http://h/a", "https://[::1]:8443/x%20y?q=1", "http://h/%C3%BC#f", "HTTP://H:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseURL(s)
		if err != nil || !tg.IsHTTP() {
			return
		}
		if !strings.HasPrefix(tg.Path, "/") || strings.IndexByte(tg.Path, 0) >= 0 {
			t.Fatalf("%q: path %q", s, tg.Path)
		}
		line := tg.requestURI() + tg.hostHeader()
		for i := 0; i < len(line); i++ {
			if line[i] <= ' ' || line[i] >= 0x7f {
				t.Fatalf("%q: request line byte %#x in %q", s, line[i], line)
			}
		}
		back, err := ParseURL(tg.String())
		if err != nil || back != tg {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, tg, tg.String(), back, err)
		}
	})
}
