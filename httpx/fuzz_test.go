package httpx

import (
	"bufio"
	"bytes"
	"errors"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

// smuggling are heads that try to make a proxy in front and this server
// disagree about where a request ends, or are otherwise ambiguous (seeds).
var smuggling = []string{
	head("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Transfer-Encoding: chunked") + "0\r\n\r\n",
	head("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Content-Length: 5") + "0\r\n\r\n",
	head("GET / HTTP/1.1", "Host: a", "Transfer-Encoding : chunked") + "0\r\n\r\n",
	head("GET / HTTP/1.1", "Host: a", "Transfer-Encoding:\tchunked") + "0\r\n\r\n",
	head("GET / HTTP/1.1", "Host: a", "Transfer-Encoding: xchunked"),
	head("GET / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Transfer-encoding: identity"),
	head("GET / HTTP/1.1", "Host: a", "X: y", " Transfer-Encoding: chunked"),
	head("GET / HTTP/1.1", "Host: a", "X: y\r\n\tContent-Length: 5"),
	head("GET / HTTP/1.1", "Host: a", "Content-Length: 0", "Content-Length: 0"),
	head("GET / HTTP/1.1", "Host: a", "Content-Length: 0, 5"),
	head("GET / HTTP/1.1", "Host: a", "Content-Length: +5"),
	head("GET / HTTP/1.1", "Host: a", "Content-Length: 0") + head("GET /admin HTTP/1.1", "Host: a"),
	head("GET / HTTP/1.1", "Host: a", "Content-Length: 44") + head("GET /admin HTTP/1.1", "Host: a"),
	head("GET / HTTP/1.1", "Host: a", "Content-Length\x00: 5"),
	head("GET / HTTP/1.1", "Host: a", "X: a\x00b"),
	head("GET / HTTP/1.1", "Host: a", "X: a\rContent-Length: 5"),
	"GET / HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello",
	"GET / HTTP/1.1\r\nHost: a\r\nX: y\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n\n",
	"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
	head("GET /a HTTP/1.1", "Host: a", "Host: b"),
	head("GET http://a/ HTTP/1.1", "Host: b"),
	head("GET /a%2f..%2fetc HTTP/1.1", "Host: a"),
	head("GET /a%00 HTTP/1.1", "Host: a"),
	head("GET /a#/../b HTTP/1.1", "Host: a"),
	head("GET /a b HTTP/1.1", "Host: a"),
	head("GET /a HTTP/1.1 HTTP/1.1", "Host: a"),
	head("GET  /a HTTP/1.1", "Host: a"),
	head("GET /a HTTP/1.1", "Host: a", "Range: bytes=0-0", "Range: bytes=1-1"),
	head("GET /a HTTP/1.1", "Host: a", "Connection: keep-alive", "Connection: close"),
	head("GET /a HTTP/1.0", "Connection: close, keep-alive"),
	head("OPTIONS * HTTP/1.1", "Host: a"),
	head("CONNECT a:443 HTTP/1.1", "Host: a:443"),
	head("GET http://u@a/ HTTP/1.1", "Host: a"),
	head("OPTIONS * HTTP/1.0"),
	head("CONNECT [::1]:443 HTTP/1.1", "Host: [::1]:443"),
	head("POST h:80 HTTP/1.1", "Host: h", "Content-Length: 0"),
	head("GET HTTP://Example.COM HTTP/1.1", "Host: x"),
	head("HEAD hTtPs://h:8443?x HTTP/1.1", "Host: x"),
	head("GET http://[::ffff:1.2.3.4]:8080//a/%2e%2E/ HTTP/1.1", "Host: x"),
	head("GET /%41%2e%2E/%C3%A9%20+?%zz HTTP/1.0"),
	"\r\n\r\n" + head("GET / HTTP/1.1", "Host: a", "If-Match: \"a\"", "If-Match: \"b\"", "Accept: */*", "accept: text/html"),
}

func seed(add func(b []byte)) {
	for _, c := range clientRequests {
		add([]byte(c.head))
	}
	for _, s := range smuggling {
		add([]byte(s))
	}
}

// FuzzParse: Parse never panics, an accepted head satisfies the invariants
// of Request, parses the same alone, and no prefix of it is accepted.
func FuzzParse(f *testing.F) {
	seed(func(b []byte) { f.Add(b, uint16(0)) })
	f.Fuzz(func(t *testing.T, b []byte, split uint16) {
		var r Request
		n, err := Parse(b, &r)
		if n < 0 || n > len(b) || err != nil && n != 0 {
			t.Fatalf("n = %d of %d, err %v", n, len(b), err)
		}
		if err != nil {
			var e *Error
			switch {
			case errors.Is(err, ErrIncomplete):
				if len(b) >= MaxHead {
					t.Fatalf("ErrIncomplete with %d bytes", len(b))
				}
			case !errors.As(err, &e):
				t.Fatalf("error %T %v", err, err)
			case e.Status != 400 && e.Status != 413 && e.Status != 414 && e.Status != 431 && e.Status != 505:
				t.Fatalf("status %d", e.Status)
			}
			return
		}
		checkRequest(t, &r, b[:n])

		var again Request
		if m, err := Parse(b[:n], &again); m != n || err != nil || again != r {
			t.Fatalf("b[:n] parses as %d, %v, %+v; want %d, %+v", m, err, again, n, r)
		}
		prefix := func(k int) {
			if m, err := Parse(b[:k], &again); m != 0 || err != ErrIncomplete {
				t.Fatalf("prefix of %d of %d bytes: %d, %v", k, n, m, err)
			}
		}
		if n <= 1024 {
			for k := 0; k < n; k++ {
				prefix(k)
			}
		} else {
			prefix(int(split) % n)
			for k := n - 64; k < n; k++ {
				prefix(k)
			}
		}
	})
}

// checkRequest checks the invariants of a request Parse accepted from h.
func checkRequest(t *testing.T, r *Request, h []byte) {
	t.Helper()
	if len(h) > MaxHead || !bytes.HasSuffix(h, []byte("\r\n\r\n")) {
		t.Fatalf("accepted %d bytes ending %q", len(h), h[max(0, len(h)-4):])
	}
	if r.Minor != 0 && r.Minor != 1 {
		t.Fatalf("Minor %d", r.Minor)
	}
	if r.Method == "" || firstNot(r.Method, tchar) >= 0 {
		t.Fatalf("Method %q", r.Method)
	}
	if r.Target == "" || firstNot(r.Target, targetChar) >= 0 {
		t.Fatalf("Target %q", r.Target)
	}
	if r.Path == "" {
		// Only an asterisk-form or authority-form target, never for GET or HEAD.
		if r.Method == "GET" || r.Method == "HEAD" || r.Target != "*" && strings.ContainsAny(r.Target, "/?") {
			t.Fatalf("%s %q with no Path", r.Method, r.Target)
		}
	} else if r.Path[0] != '/' || strings.IndexByte(r.Path, 0) >= 0 || !utf8.ValidString(r.Path) {
		t.Fatalf("Path %q", r.Path)
	}
	if !strings.HasSuffix(r.Target, r.Query) || strings.Contains(r.Query, "#") {
		t.Fatalf("Query %q of %q", r.Query, r.Target)
	}
	if !validAuthority(r.Host, true) || r.Minor == 1 && !bytes.Contains(bytes.ToLower(h), []byte("\nhost:")) {
		t.Fatalf("Host %q", r.Host)
	}
	if r.KeepAlive && r.Minor == 0 && !bytes.Contains(bytes.ToLower(h), []byte("keep-alive")) {
		t.Fatalf("HTTP/1.0 kept alive without keep-alive")
	}
}

// FuzzParseDifferential: whatever Parse accepts, net/http's ReadRequest
// accepts too, and reads the same request.
//
// Deliberate differences, where the comparison is restricted:
//   - ReadRequest does not skip the empty lines before the request line
//     that RFC 9112 section 2.2 lets a server ignore (net/http's server
//     skips up to four CR or LF bytes, and only after a POST): they are cut
//     off before ReadRequest sees the head.
//   - An authority-form target ("host:port") is authority-form to net/http
//     only with CONNECT; with another method url.ParseRequestURI reads it as
//     a scheme and an opaque part ("h:80") or refuses it ("1.2.3.4:80",
//     "invalid URI for request"). Parse accepts it for any method but GET
//     and HEAD, with Path "", for the caller to answer 405. So such a
//     request net/http refuses is not a failure, and Path is compared only
//     for origin-form and absolute-form targets.
//   - With CONNECT, net/http reads every target not starting with "/" as
//     authority-form: "*" as the host "*", "http://h/a" as the host "http:"
//     and the path "//h/a". Parse reads those as the asterisk-form and the
//     absolute-form, and keeps the Host field for every target but the
//     absolute-form. Host, Path and Query are not compared for such a
//     CONNECT, which the caller answers 405.
//   - net/http's URL.Path is "" for an absolute-form target without a path
//     ("http://h", "http://h?q"); Parse's Path is "/" (RFC 9112 section
//     3.2.2: "/" is the path of an empty one).
func FuzzParseDifferential(f *testing.F) {
	seed(func(b []byte) { f.Add(b) })
	f.Fuzz(matchNetHTTP)
}

// matchNetHTTP checks that if Parse accepts b, net/http reads the same
// request from it (see FuzzParseDifferential).
func matchNetHTTP(t *testing.T, b []byte) {
	var r Request
	n, err := Parse(b, &r)
	if err != nil {
		return
	}
	h := b[:n]
	for i := 0; i < 2 && bytes.HasPrefix(h, []byte("\r\n")); i++ {
		h = h[2:]
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(h)))
	authorityForm := r.Path == "" && r.Target != "*"
	connect := r.Method == "CONNECT" && r.Target[0] != '/'
	if err != nil {
		if authorityForm && r.Method != "CONNECT" {
			return
		}
		t.Fatalf("Parse accepted %q as %+v; net/http: %v", h, r, err)
	}
	if req.Method != r.Method || req.RequestURI != r.Target || req.ProtoMajor != 1 || req.ProtoMinor != r.Minor {
		t.Fatalf("%q: net/http %q %q %d.%d; Parse %+v", h, req.Method, req.RequestURI, req.ProtoMajor, req.ProtoMinor, r)
	}
	if req.Host != r.Host && !connect {
		t.Fatalf("%q: Host %q, net/http %q", h, r.Host, req.Host)
	}
	if req.Close != !r.KeepAlive {
		t.Fatalf("%q: KeepAlive %v, net/http Close %v", h, r.KeepAlive, req.Close)
	}
	if r.Path != "" && !connect {
		p := req.URL.Path
		if p == "" && req.URL.Host != "" {
			p = "/"
		}
		if p != r.Path || req.URL.RawQuery != r.Query {
			t.Fatalf("%q: Path %q Query %q, net/http %q %q", h, r.Path, r.Query, req.URL.Path, req.URL.RawQuery)
		}
	}
	for _, f := range []struct {
		name, got string
	}{
		{"Range", r.Range}, {"If-Range", r.IfRange}, {"If-Match", r.IfMatch}, {"If-None-Match", r.IfNoneMatch},
		{"If-Modified-Since", r.IfModifiedSince}, {"If-Unmodified-Since", r.IfUnmodifiedSince}, {"Accept", r.Accept},
	} {
		if want := strings.Join(req.Header.Values(f.name), ", "); f.got != want {
			t.Fatalf("%q: %s %q, net/http %q", h, f.name, f.got, want)
		}
	}
}

// TestParseMatchesNetHTTP runs the differential check on heads built from
// the pieces where the two parsers could disagree, which byte-level
// fuzzing rarely assembles into a head Parse accepts.
func TestParseMatchesNetHTTP(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	chars := func(set string, max int) string {
		b := make([]byte, rng.IntN(max))
		for i := range b {
			b[i] = set[rng.IntN(len(set))]
		}
		return string(b)
	}
	accepted := 0
	for range 30000 {
		target := pick("/", "/a?b", "/a?", "/%41%2e%2E/%C3%A9", "//a", "*", "h:80", "1.2.3.4:80", "[::1]:1",
			"http://h", "http://h?x", "HTTP://H:80/a?b", "https://[::ffff:1.2.3.4]:1/", "http://a.b-c_d~!$&'()*+,;=:9/")
		if rng.IntN(2) == 0 {
			target = pick("/", "http://", "HTTPS://", "") + chars("/?%:@[]a1.-_~!$&'()*+,;=2Ff0C3A9Z\"<>{}|^`", 12)
		}
		host := pick("h", "", "h:80", "[::1]:8", "1.2.3.4", "h:")
		if rng.IntN(2) == 0 {
			host = chars("[]:.1fa%@-_~!$&'()*+,;=\"<>{}|^` \t", 10)
		}
		s := pick("", "", "\r\n", "\r\n\r\n") +
			pick("GET", "HEAD", "POST", "OPTIONS", "CONNECT", "get") + " " + target + " " + pick("HTTP/1.1", "HTTP/1.0") + "\r\n"
		if rng.IntN(4) > 0 {
			s += "Host: " + host + "\r\n"
		}
		for range rng.IntN(6) {
			s += pick("Range", "If-Range", "if-match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "ACCEPT", "Connection", "Content-Length", "X") +
				":" + pick("", "a", " a ", "\ta\t", `"x", W/"y"`, "close", "keep-alive", "Keep-Alive, close", "0", "a,b", "\x80\xff", "foo ,  close") + "\r\n"
		}
		b := []byte(s + "\r\n")
		var r Request
		if _, err := Parse(b, &r); err == nil {
			accepted++
		}
		matchNetHTTP(t, b)
	}
	if accepted < 3000 {
		t.Errorf("only %d heads accepted: the test checks little", accepted)
	}
}
