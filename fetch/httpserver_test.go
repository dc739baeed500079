package fetch

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// httpFake is an HTTP server for the client's tests: net/http's
// ServeContent (ranges, If-Range, HEAD, validators) over an in-memory
// tree, with hooks to lie, fail and count.
type httpFake struct {
	t   testing.TB
	srv *httptest.Server

	mu    sync.Mutex
	files map[string]*httpFile
	reqs  []httpReq
	// hook, if set, sees each request (n counts from 0) first; it returns
	// true if it answered it.
	hook func(n int, w http.ResponseWriter, r *http.Request) bool
	n    int

	sent atomic.Int64 // body bytes written
}

type httpFile struct {
	data   []byte
	mtime  time.Time
	etag   string // "" for none
	digest string // Repr-Digest value, "" for none
	noLM   bool   // send no Last-Modified
}

type httpReq struct {
	Method, Path, Range, IfRange string
}

func newHTTPFake(t testing.TB, tls bool) *httpFake {
	s := &httpFake{t: t, files: map[string]*httpFile{}}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	if tls {
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	t.Cleanup(s.srv.Close)
	return s
}

// put stores a file, with a strong ETag and the right Repr-Digest.
func (s *httpFake) put(p string, data []byte, mtime time.Time) *httpFile {
	sum := sha256.Sum256(data)
	f := &httpFile{data: data, mtime: mtime, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:8]) + `"`,
		digest: "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"}
	s.mu.Lock()
	s.files[p] = f
	s.mu.Unlock()
	return f
}

func (s *httpFake) url(p string) string { return s.srv.URL + p }

func (s *httpFake) target(p string) Target {
	t, err := ParseURL(s.url(p))
	if err != nil {
		s.t.Fatal(err)
	}
	return t
}

func (s *httpFake) requests() []httpReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]httpReq(nil), s.reqs...)
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n.Add(int64(n))
	return n, err
}

func (s *httpFake) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, httpReq{r.Method, r.URL.Path, r.Header.Get("Range"), r.Header.Get("If-Range")})
	n := s.n
	s.n++
	hook := s.hook
	f := s.files[r.URL.Path]
	s.mu.Unlock()
	w = countingWriter{w, &s.sent}
	if hook != nil && hook(n, w, r) {
		return
	}
	if f == nil {
		http.NotFound(w, r)
		return
	}
	if f.etag != "" {
		w.Header().Set("ETag", f.etag)
	}
	if f.digest != "" {
		w.Header().Set("Repr-Digest", f.digest)
	}
	mt := f.mtime
	if f.noLM {
		mt = time.Time{}
	}
	http.ServeContent(w, r, "", mt, bytes.NewReader(f.data))
}

// hijackHead answers a request with head and then body (raw bytes), and
// closes the connection.
func hijackHead(w http.ResponseWriter, head string, body []byte) {
	c, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	buf.WriteString(strings.ReplaceAll(head, "\n", "\r\n"))
	buf.Write(body)
	buf.Flush()
	if cw, ok := w.(countingWriter); ok {
		cw.n.Add(int64(len(body)))
	}
	c.Close()
}
