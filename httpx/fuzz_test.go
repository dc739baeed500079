package httpx

import (
	"bufio"
	"bytes"
	"errors"
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
//   - With CONNECT, net/http takes Host from the target (authority-form,
//     or "*" read as one); Parse keeps the Host field, as its API says for
//     every target but the absolute-form. Host is not compared then.
//   - net/http's URL.Path is "" for an absolute-form target without a path
//     ("http://h", "http://h?q"); Parse's Path is "/" (RFC 9112 section
//     3.2.2: "/" is the path of an empty one).
func FuzzParseDifferential(f *testing.F) {
	seed(func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, b []byte) {
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
		targetForm := r.Path != ""
		if err != nil {
			if !targetForm && r.Target != "*" && r.Method != "CONNECT" {
				return
			}
			t.Fatalf("Parse accepted %q as %+v; net/http: %v", h, r, err)
		}
		if req.Method != r.Method || req.RequestURI != r.Target || req.ProtoMajor != 1 || req.ProtoMinor != r.Minor {
			t.Fatalf("%q: net/http %q %q %d.%d; Parse %+v", h, req.Method, req.RequestURI, req.ProtoMajor, req.ProtoMinor, r)
		}
		if req.Host != r.Host && (targetForm || r.Method != "CONNECT") {
			t.Fatalf("%q: Host %q, net/http %q", h, r.Host, req.Host)
		}
		if req.Close != !r.KeepAlive {
			t.Fatalf("%q: KeepAlive %v, net/http Close %v", h, r.KeepAlive, req.Close)
		}
		if targetForm {
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
	})
}
