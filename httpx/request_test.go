package httpx

import (
	"errors"
	"strings"
	"testing"
)

// head joins lines with CRLF and ends the head with an empty line.
func head(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n\r\n" }

// clientRequests are request heads as real clients send them (also the
// fuzzers' seeds).
var clientRequests = []struct{ name, head string }{
	{"curl", head("GET /data/file.bin HTTP/1.1", "Host: localhost:8080", "User-Agent: curl/7.88.1", "Accept: */*")},
	{"curl range", head("GET /data/file.bin HTTP/1.1", "Host: localhost:8080", "Range: bytes=0-1023", "User-Agent: curl/8.5.0", "Accept: */*")},
	{"curl -I", head("HEAD /data/a%20b.txt HTTP/1.1", "Host: [::1]:8080", "User-Agent: curl/7.88.1", "Accept: */*")},
	{"curl proxy", head("GET http://example.com/data/x?y=1 HTTP/1.1", "Host: example.com", "User-Agent: curl/7.88.1", "Accept: */*", "Proxy-Connection: Keep-Alive")},
	{"wget", head("GET /data/file.bin HTTP/1.1", "Host: 127.0.0.1:8080", "User-Agent: Wget/1.21.3", "Accept: */*", "Accept-Encoding: identity", "Connection: Keep-Alive")},
	{"wget -c", head("GET /data/file.bin HTTP/1.1", "Range: bytes=1048576-", "User-Agent: Wget/1.21.3", "Accept: */*", "Accept-Encoding: identity", "Host: 127.0.0.1:8080", "Connection: Keep-Alive")},
	{"aria2c", head("GET /data/file.bin HTTP/1.1", "User-Agent: aria2/1.36.0", "Accept: */*", "Host: 127.0.0.1:8080", "Pragma: no-cache", "Cache-Control: no-cache", "Range: bytes=0-1048575", "Want-Digest: SHA-512;q=1, SHA-256;q=1, SHA;q=0.1")},
	{"chromium", head("GET /index.html HTTP/1.1",
		"Host: files.example.org",
		"Connection: keep-alive",
		`sec-ch-ua: "Chromium";v="124", "Not-A.Brand";v="99"`,
		"sec-ch-ua-mobile: ?0",
		`sec-ch-ua-platform: "Linux"`,
		"Upgrade-Insecure-Requests: 1",
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
		"Sec-Fetch-Site: none",
		"Sec-Fetch-Mode: navigate",
		"Sec-Fetch-User: ?1",
		"Sec-Fetch-Dest: document",
		"Accept-Encoding: gzip, deflate, br, zstd",
		"Accept-Language: en-US,en;q=0.9",
		`If-None-Match: "5f2a-61b0c8a4"`,
		"If-Modified-Since: Wed, 21 Oct 2015 07:28:00 GMT")},
	{"chromium video", head("GET /video/a.mp4 HTTP/1.1",
		"Host: files.example.org",
		"Connection: keep-alive",
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		"Accept-Encoding: identity;q=1, *;q=0",
		"Accept: */*",
		"Sec-Fetch-Site: same-origin",
		"Sec-Fetch-Mode: no-cors",
		"Sec-Fetch-Dest: video",
		"Referer: http://files.example.org/video/",
		"Accept-Language: en-US,en;q=0.9",
		"Range: bytes=65536-",
		`If-Range: "5f2a-61b0c8a4"`)},
	{"ab HTTP/1.0", head("GET / HTTP/1.0", "Host: localhost", "User-Agent: ApacheBench/2.3", "Accept: */*")},
	{"HTTP/1.0 keep-alive", head("GET /a HTTP/1.0", "Connection: Keep-Alive", "User-Agent: Wget/1.12")},
}

func TestParseClients(t *testing.T) {
	for _, c := range clientRequests {
		var r Request
		n, err := Parse([]byte(c.head), &r)
		if err != nil || n != len(c.head) {
			t.Errorf("%s: Parse = %d, %v; want %d, nil", c.name, n, err, len(c.head))
		}
		if r.Method != "GET" && r.Method != "HEAD" || !strings.HasPrefix(r.Path, "/") || r.KeepAlive != (c.name != "ab HTTP/1.0") {
			t.Errorf("%s: %+v", c.name, r)
		}
	}
}

// parse returns the status Parse answers for in: 0 if it accepts all of
// in, -1 for ErrIncomplete.
func parse(t *testing.T, in string, r *Request) int {
	t.Helper()
	n, err := Parse([]byte(in), r)
	var e *Error
	switch {
	case err == nil:
		if n != len(in) {
			t.Errorf("%.60q: used %d of %d bytes", in, n, len(in))
		}
		return 0
	case n != 0:
		t.Errorf("%.60q: %d bytes used with error %v", in, n, err)
	case errors.Is(err, ErrIncomplete):
		return -1
	case !errors.As(err, &e):
		t.Fatalf("%.60q: error %v is not an *Error", in, err)
	}
	return e.Status
}

// statusCase is a head and the status Parse must answer: 0 accepted, -1
// ErrIncomplete.
type statusCase struct {
	name, in string
	status   int
}

func runStatus(t *testing.T, cases []statusCase) {
	t.Helper()
	for _, c := range cases {
		var r Request
		if got := parse(t, c.in, &r); got != c.status {
			var err error
			_, err = Parse([]byte(c.in), &r)
			t.Errorf("%s: %.80q: status %d (%v), want %d", c.name, c.in, got, err, c.status)
		}
	}
}

const h11 = "GET / HTTP/1.1\r\nHost: a\r\n"

func TestParseFraming(t *testing.T) {
	big := func(n int) string { return strings.Repeat("a", n) }
	line := "X: " + big(90) + "\r\n"
	headers := func(k int) string { return "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: y\r\n", k-1) + "\r\n" }
	exact := "GET / HTTP/1.1\r\nHost: a\r\nX: " // padded to MaxHead bytes below
	exact += big(MaxHead-len(exact)-4) + "\r\n\r\n"
	runStatus(t, []statusCase{
		{"empty", "", -1},
		{"request line only", "GET / HTTP/1.1", -1},
		{"request line CR", "GET / HTTP/1.1\r", -1},
		{"no blank line", h11, -1},
		{"half blank line", h11 + "\r", -1},
		{"partial header", h11 + "Range: by", -1},
		{"one empty line first", "\r\n" + h11 + "\r\n", 0},
		{"two empty lines first", "\r\n\r\n" + h11 + "\r\n", 0},
		{"three empty lines first", "\r\n\r\n\r\n" + h11 + "\r\n", 400},
		{"LF first", "\n" + h11 + "\r\n", 400},
		{"bare LF request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
		{"bare LF header", "GET / HTTP/1.1\r\nHost: a\n\r\n", 400},
		{"bare LF end", h11 + "\n", 400},
		{"all bare LF", "GET / HTTP/1.1\nHost: a\n\n", 400},
		{"bare LF request line, incomplete", "GET / HTTP/1.1\nHost: a", 400},
		{"bare CR request line", "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", 400},
		{"bare CR target", "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"bare CR header", h11 + "X: a\rb\r\n\r\n", 400},
		{"bare CR name", h11 + "X\r: a\r\n\r\n", 400},
		{"bare CR line", h11 + "\r\r\n", 400},
		{"bare CR, incomplete request line", "GET / HTTP/1.1\rHost", 400},
		{"bare CR, incomplete header", h11 + "X: a\rb", 400},
		{"bare CR, incomplete", h11 + "X: a\r\nY: b\r\r", 400},
		{"bare LF, incomplete", h11 + "X: a\nY: b", 400},
		{"invalid field, incomplete", h11 + "X a\r\n", -1},
		{"request line of MaxHead", "GET /" + big(MaxHead), 414},
		{"request line over MaxHead", "GET /" + big(MaxHead) + " HTTP/1.1\r\nHost: a\r\n\r\n", 414},
		{"head over MaxHead, incomplete", h11 + strings.Repeat(line, MaxHead/len(line)+1), 431},
		{"head over MaxHead, complete", h11 + strings.Repeat(line, MaxHead/len(line)+1) + "\r\n", 431},
		{"head of MaxHead", exact, 0},
		{"head of MaxHead+1", exact[:len(exact)-4] + "a\r\n\r\n", 431},
		{"MaxHeaders fields", headers(MaxHeaders), 0},
		{"MaxHeaders+1 fields", headers(MaxHeaders + 1), 431},
	})
	// A complete head followed by more (a pipelined request, or past MaxHead).
	for _, in := range []string{h11 + "\r\nGET /b HTTP/1.1\r\n", h11 + "\r\n" + big(2*MaxHead)} {
		var r Request
		if n, err := Parse([]byte(in), &r); err != nil || n != len(h11)+2 {
			t.Errorf("%.60q: Parse = %d, %v; want %d, nil", in, n, err, len(h11)+2)
		}
	}
}

func TestParseRequestLine(t *testing.T) {
	runStatus(t, []statusCase{
		{"GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", 0},
		{"other method", "PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
		{"lower case method", "get / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
		{"token method", "M-1!#$%&'*+.^_`|~ / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
		{"bad method byte", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"leading space", " GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"two spaces before version", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400},
		{"tab", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"HTTP/0.9", "GET /\r\n\r\n", 400},
		{"no target", "GET HTTP/1.1\r\n\r\n", 400},
		{"empty line", "\r\n\r\n\r\n", 400},
		{"lower case version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
		{"short version", "GET / HTTP/1\r\nHost: a\r\n\r\n", 400},
		{"long version", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400},
		{"version letters", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"HTTP/0.9 version", "GET / HTTP/0.9\r\n\r\n", 505},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
	})
}

func TestParseTarget(t *testing.T) {
	type want struct{ path, query, host string }
	ok := map[string]want{
		"GET / HTTP/1.1":                          {"/", "", "a"},
		"GET /a/b?x=1&y HTTP/1.1":                 {"/a/b", "x=1&y", "a"},
		"GET /a? HTTP/1.1":                        {"/a", "", "a"},
		"GET /a?b?c HTTP/1.1":                     {"/a", "b?c", "a"},
		"GET /a?%zz%00%2F HTTP/1.1":               {"/a", "%zz%00%2F", "a"},
		"GET //x/../y/./ HTTP/1.1":                {"//x/../y/./", "", "a"},
		"GET /%41%2e%2E/%C3%A9%20+ HTTP/1.1":      {"/A../é +", "", "a"},
		"GET /%25 HTTP/1.1":                       {"/%", "", "a"},
		"GET /%252F HTTP/1.1":                     {"/%2F", "", "a"},
		"GET /a:b@c;d=e,f HTTP/1.1":               {"/a:b@c;d=e,f", "", "a"},
		"GET http://example.com/a%20b?q HTTP/1.1": {"/a b", "q", "example.com"},
		"GET HTTP://Example.COM HTTP/1.1":         {"/", "", "Example.COM"},
		"GET hTtPs://h:8443?x HTTP/1.1":           {"/", "x", "h:8443"},
		"GET http://[::1]:80/a HTTP/1.1":          {"/a", "", "[::1]:80"},
		"GET http://[::ffff:1.2.3.4]/ HTTP/1.1":   {"/", "", "[::ffff:1.2.3.4]"},
		"GET http://1.2.3.4:/ HTTP/1.1":           {"/", "", "1.2.3.4:"},
		"GET http://h//a HTTP/1.1":                {"//a", "", "h"},
		"OPTIONS * HTTP/1.1":                      {"", "", "a"},
		"CONNECT example.com:443 HTTP/1.1":        {"", "", "a"},
		"CONNECT [::1]:443 HTTP/1.1":              {"", "", "a"},
		"POST h:80 HTTP/1.1":                      {"", "", "a"},
	}
	for line, w := range ok {
		var r Request
		in := line + "\r\nHost: a\r\n\r\n"
		if st := parse(t, in, &r); st != 0 || r.Path != w.path || r.Query != w.query || r.Host != w.host {
			t.Errorf("%q: status %d, Path %q, Query %q, Host %q; want %q, %q, %q", line, st, r.Path, r.Query, r.Host, w.path, w.query, w.host)
		}
		if r.Target != strings.Split(line, " ")[1] {
			t.Errorf("%q: Target %q", line, r.Target)
		}
	}
	var cases []statusCase
	for _, target := range []string{
		"*", "h:80", "ftp://h/", "http:/a", "http:a", "a", "?a", "%2Fa",
		"/a\x7f", "/\x80", "/\xff", "/a\x01", "/a\x00", "/a#f", "/#", "http://h/#",
		"/%G1", "/%", "/a%", "/%4", "/%4g", "/%00", "/a%2Fb", "/a%2fb", "/%C3", "/%FF", "/%C3%28", "/%ED%A0%80",
		"http:///a", "http://", "http://?x", "http://u@h/", "http://u:p@h/", "http://h:x/", "http://h:1:2/",
		"http://:80/", "http://[1.2.3.4]/", "http://[fe80::1%25eth0]/", "http://[::1/", "http://[::1]x/",
		"http://[v1.x]/", "http://h%41/", "http://h_{}/", "http://é/",
	} {
		cases = append(cases, statusCase{"GET " + target, "GET " + target + " HTTP/1.1\r\nHost: a\r\n\r\n", 400})
	}
	for _, target := range []string{"*", "h:80", "[::1]:443", "h:"} {
		cases = append(cases, statusCase{"HEAD " + target, "HEAD " + target + " HTTP/1.1\r\nHost: a\r\n\r\n", 400})
	}
	for _, target := range []string{"h", "ftp://h/", "*x", "h:80/", "h:x", "u@h:80", ":80", "mailto:a@b", "h:80?x"} {
		cases = append(cases, statusCase{"OPTIONS " + target, "OPTIONS " + target + " HTTP/1.1\r\nHost: a\r\n\r\n", 400})
	}
	runStatus(t, cases)

	var r Request
	Parse([]byte("GET /a%2fb HTTP/1.1\r\nHost: a\r\n\r\n"), &r)
	if _, err := Parse([]byte("GET /a%2fb HTTP/1.1\r\nHost: a\r\n\r\n"), &r); err == nil || !strings.Contains(err.Error(), "encoded slash") || !strings.Contains(err.Error(), "refused") {
		t.Errorf("encoded slash: %v", err)
	}
}

func TestParseFields(t *testing.T) {
	runStatus(t, []statusCase{
		{"space before colon", h11 + "Range : bytes=0-1\r\n\r\n", 400},
		{"tab before colon", h11 + "Range\t: bytes=0-1\r\n\r\n", 400},
		{"space before colon, Host", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
		{"empty name", h11 + ": a\r\n\r\n", 400},
		{"space in name", h11 + "X A: b\r\n\r\n", 400},
		{"bad name byte", h11 + "X(A): b\r\n\r\n", 400},
		{"obs-text name", h11 + "X\xe9: b\r\n\r\n", 400},
		{"no colon", h11 + "XA\r\n\r\n", 400},
		{"obs-fold", h11 + "X: a\r\n b\r\n\r\n", 400},
		{"obs-fold tab", h11 + "X: a\r\n\tb\r\n\r\n", 400},
		{"first line folded", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400},
		{"NUL", h11 + "X: a\x00b\r\n\r\n", 400},
		{"DEL", h11 + "X: a\x7fb\r\n\r\n", 400},
		{"VT", h11 + "X: a\vb\r\n\r\n", 400},
		{"ESC", h11 + "X: \x1b[1m\r\n\r\n", 400},
		{"obs-text value", h11 + "X: \x80\xff\r\n\r\n", 0},
		{"tab in value", h11 + "X: a\tb\r\n\r\n", 0},
		{"empty value", h11 + "X:\r\n\r\n", 0},
		{"token name", h11 + "!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n", 0},
		// Request bodies.
		{"Content-Length 0", h11 + "Content-Length: 0\r\n\r\n", 0},
		{"Content-Length 000", h11 + "content-length:000 \r\n\r\n", 0},
		{"Content-Length 1", h11 + "Content-Length: 1\r\n\r\n", 413},
		{"Content-Length huge", h11 + "Content-Length: 000000000000000000000000000000000001\r\n\r\n", 413},
		{"Content-Length -1", h11 + "Content-Length: -1\r\n\r\n", 400},
		{"Content-Length +0", h11 + "Content-Length: +0\r\n\r\n", 400},
		{"Content-Length 0x0", h11 + "Content-Length: 0x0\r\n\r\n", 400},
		{"Content-Length 0 0", h11 + "Content-Length: 0 0\r\n\r\n", 400},
		{"Content-Length empty", h11 + "Content-Length:\r\n\r\n", 400},
		{"Content-Length list", h11 + "Content-Length: 0, 0\r\n\r\n", 400},
		{"Content-Length twice equal", h11 + "Content-Length: 0\r\nContent-Length: 0\r\n\r\n", 400},
		{"Content-Length twice", h11 + "Content-Length: 0\r\nCONTENT-LENGTH: 5\r\n\r\n", 400},
		{"Content-Length, incomplete", h11 + "Content-Length: 5\r\n", -1},
		{"Transfer-Encoding", h11 + "Transfer-Encoding: chunked\r\n\r\n", 400},
		{"Transfer-Encoding identity", h11 + "transfer-encoding: identity\r\n\r\n", 400},
		{"Transfer-Encoding empty", h11 + "Transfer-Encoding:\r\n\r\n", 400},
		{"Transfer-Encoding HTTP/1.0", "GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"Content-Length then Transfer-Encoding", h11 + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"Transfer-Encoding then Content-Length", h11 + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400},
		// Host.
		{"HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"HTTP/1.1 absolute-form without Host", "GET http://h/ HTTP/1.1\r\n\r\n", 400},
		{"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", 0},
		{"two Hosts", h11 + "Host: a\r\n\r\n", 400},
		{"two Hosts, absolute-form", "GET http://h/ HTTP/1.1\r\nHost: h\r\nhost: h\r\n\r\n", 400},
		{"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 0},
		{"Host IPv4:port", "GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n", 0},
		{"Host IPv6", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n", 0},
		{"Host sub-delims", "GET / HTTP/1.1\r\nHost: a-b.c_d~!$&'()*+,;=\r\n\r\n", 0},
		{"Host empty port", "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", 0},
	})
	for _, host := range []string{"a b", "a/b", "a@b", "u:p@b", "a?b", "a#b", "a%41", "é", "\x80", "a:b", "a:1:2", ":80", "[::1", "[::1]x", "[1.2.3.4]", "[fe80::1%25eth0]", "[v1.x]", "a\"b", "a<b", "a{b", "a\\b", "a|b", "a^b", "a`b"} {
		in := "GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
		runStatus(t, []statusCase{{"Host " + host, in, 400}})
		in = "GET http://h/ HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
		runStatus(t, []statusCase{{"absolute-form, Host " + host, in, 400}})
	}
	// Fields that may appear once.
	for _, name := range []string{"Range", "If-Range", "If-Modified-Since", "If-Unmodified-Since"} {
		in := h11 + name + ": a\r\n" + strings.ToLower(name) + ": a\r\n\r\n"
		runStatus(t, []statusCase{{name + " twice", in, 400}})
	}
}

func TestParseValues(t *testing.T) {
	var r Request
	in := "GET http://example.com/ HTTP/1.1\r\n" +
		"host: other\r\n" +
		"RANGE: \t bytes=0-1 \t\r\n" +
		"if-range:\"e\"\r\n" +
		"If-Match: \"a\"\r\n" +
		"If-None-Match: W/\"b\" \r\n" +
		"If-Modified-Since: Wed, 21 Oct 2015 07:28:00 GMT\r\n" +
		"If-Unmodified-Since:  Thu, 22 Oct 2015 07:28:00 GMT\r\n" +
		"Accept: text/html\r\n" +
		"IF-MATCH:\r\n" +
		"accept: */*\r\n" +
		"If-Match: \"c\", \"d\"\r\n" +
		"Connection: keep-alive\r\n" +
		"\r\n"
	if st := parse(t, in, &r); st != 0 {
		t.Fatalf("status %d", st)
	}
	want := Request{
		Method: "GET", Target: "http://example.com/", Path: "/", Minor: 1, Host: "example.com", KeepAlive: true,
		Range: "bytes=0-1", IfRange: `"e"`, IfMatch: `"a", , "c", "d"`, IfNoneMatch: `W/"b"`,
		IfModifiedSince: "Wed, 21 Oct 2015 07:28:00 GMT", IfUnmodifiedSince: "Thu, 22 Oct 2015 07:28:00 GMT",
		Accept: "text/html, */*",
	}
	if r != want {
		t.Errorf("got  %+v\nwant %+v", r, want)
	}
	// Parse starts from an empty Request.
	if parse(t, "GET /x HTTP/1.0\r\n\r\n", &r); r != (Request{Method: "GET", Target: "/x", Path: "/x"}) {
		t.Errorf("second Parse into the same Request: %+v", r)
	}
}

func TestParseKeepAlive(t *testing.T) {
	for _, c := range []struct {
		minor int
		conn  []string
		want  bool
	}{
		{1, nil, true},
		{1, []string{"close"}, false},
		{1, []string{"Close"}, false},
		{1, []string{"keep-alive, close"}, false},
		{1, []string{"foo,  CLOSE \t"}, false},
		{1, []string{"keep-alive", "close"}, false},
		{1, []string{"closed"}, true},
		{1, []string{"close-ish, x"}, true},
		{1, []string{"Upgrade"}, true},
		{1, []string{""}, true},
		{0, nil, false},
		{0, []string{"keep-alive"}, true},
		{0, []string{"Keep-Alive"}, true},
		{0, []string{"foo ,keep-alive"}, true},
		{0, []string{"keep-alive, close"}, false},
		{0, []string{"keep-alive", "close"}, false},
		{0, []string{"close"}, false},
		{0, []string{"keepalive"}, false},
	} {
		in := "GET / HTTP/1." + string(rune('0'+c.minor)) + "\r\nHost: a\r\n"
		for _, v := range c.conn {
			in += "Connection: " + v + "\r\n"
		}
		var r Request
		if st := parse(t, in+"\r\n", &r); st != 0 || r.KeepAlive != c.want || r.Minor != c.minor {
			t.Errorf("HTTP/1.%d, Connection %q: status %d, KeepAlive %v, want %v", c.minor, c.conn, st, r.KeepAlive, c.want)
		}
	}
}

// A typical request costs few allocations: Target and the fields kept
// (the method is a constant, Path and Query substrings of Target, and
// Host, the same as the request before it on the connection, is that
// request's string again).
func TestParseAllocs(t *testing.T) {
	for _, c := range []struct {
		name string
		max  float64
	}{{"curl", 2}, {"wget -c", 3}, {"chromium", 4}} {
		var in []byte
		for _, cr := range clientRequests {
			if cr.name == c.name {
				in = []byte(cr.head)
			}
		}
		var r Request
		got := testing.AllocsPerRun(100, func() {
			if _, err := Parse(in, &r); err != nil {
				t.Fatal(err)
			}
		})
		if got > c.max {
			t.Errorf("%s: %v allocations, want at most %v", c.name, got, c.max)
		}
	}
}

// Host is reused from the request before only when it is the same: a
// connection's requests may name other hosts, and an absolute-form
// target's authority is the Host whatever the field says.
func TestParseHostReuse(t *testing.T) {
	var r Request
	for _, c := range []struct{ head, want string }{
		{"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n", "a.example"},
		{"GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n", "a.example"},
		{"GET / HTTP/1.1\r\nHost: b.example:8080\r\n\r\n", "b.example:8080"},
		{"GET http://c.example/y HTTP/1.1\r\nHost: b.example:8080\r\n\r\n", "c.example"},
		{"GET / HTTP/1.1\r\nHost: c.example\r\n\r\n", "c.example"},
		{"GET / HTTP/1.0\r\n\r\n", ""},
		{"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n", "a.example"},
	} {
		if st := parse(t, c.head, &r); st != 0 || r.Host != c.want {
			t.Errorf("%q: status %d, Host %q, want %q", c.head, st, r.Host, c.want)
		}
	}
	in := []byte("GET /small/0001.bin HTTP/1.1\r\nHost: a.example\r\n\r\n")
	if n := testing.AllocsPerRun(100, func() { Parse(in, &r) }); n != 1 {
		t.Errorf("the same Host again: %v allocations, want 1 (Target)", n)
	}
}

func BenchmarkParse(b *testing.B) {
	for _, name := range []string{"curl", "wget -c", "chromium"} {
		var in []byte
		for _, c := range clientRequests {
			if c.name == name {
				in = []byte(c.head)
			}
		}
		b.Run(strings.ReplaceAll(name, " ", "_"), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			var r Request
			for b.Loop() {
				if _, err := Parse(in, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
