package fetch

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

var lastMod = time.Unix(1_700_000_000, 0)

func sumHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestHTTPFetchEveryModeAndConns(t *testing.T) {
	s := newHTTPFake(t, false)
	for _, size := range []int{0, 1, 4096, 2*MinSplit + 12345} {
		data := randBytes(size, uint64(size))
		p := fmt.Sprintf("/f%d", size)
		s.put(p, data, lastMod)
		for _, mode := range []RecvMode{RecvCopy, RecvSplice, RecvMmap} {
			for _, conns := range []int{1, 4} {
				t.Run(fmt.Sprintf("%d-%s-x%d", size, mode, conns), func(t *testing.T) {
					c, rec := testClient(t, Options{Recv: mode, Conns: conns})
					dst := filepath.Join(t.TempDir(), "out")
					if _, err := c.Fetch(context.Background(), Job{Src: s.target(p), Dst: dst, Name: "out"}); err != nil {
						t.Fatal(err)
					}
					checkFile(t, dst, data, lastMod.UnixNano())
					done := rec.kinds(EventDone)
					if len(done) != 1 || done[0].SHA256 != sumHex(data) {
						t.Errorf("done events %+v: want the server's digest checked", done)
					}
				})
			}
		}
	}
}

func TestHTTPStream(t *testing.T) {
	s := newHTTPFake(t, false)
	data := randBytes(3<<20+7, 3)
	s.put("/f", data, lastMod)
	c, rec := testClient(t, Options{})
	out, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Out: out, Name: "-"}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out.Name())
	if sumHex(got) != sumHex(data) {
		t.Fatalf("stream differs (%d bytes)", len(got))
	}
	if d := rec.kinds(EventDone); len(d) != 1 || d[0].SHA256 != sumHex(data) {
		t.Errorf("done: %+v", d)
	}
}

// cutGet answers the first GET with the head and only cut bytes of the
// body, then closes the connection.
func cutGet(s *httpFake, p string, cut int) func(int, http.ResponseWriter, *http.Request) bool {
	first := true
	return func(n int, w http.ResponseWriter, r *http.Request) bool {
		if r.Method != "GET" || !first {
			return false
		}
		first = false
		s.mu.Lock()
		f := s.files[p]
		s.mu.Unlock()
		hijackHead(w, fmt.Sprintf("HTTP/1.1 200 OK\nContent-Length: %d\nETag: %s\nLast-Modified: %s\n\n",
			len(f.data), f.etag, f.mtime.UTC().Format(http.TimeFormat)), f.data[:cut])
		return true
	}
}

// An interrupted download resumes with a Range and If-Range on the ETag,
// and only the rest crosses the network.
func TestHTTPResumeIfRange(t *testing.T) {
	s := newHTTPFake(t, false)
	data := randBytes(1<<20+333, 5)
	f := s.put("/f", data, lastMod)
	s.hook = cutGet(s, "/f", 300000)
	dst := filepath.Join(t.TempDir(), "out")
	c, _ := testClient(t, Options{Retries: -1})
	c.opts.Retries = 0
	_, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out"})
	var ge *GiveUpError
	if !errors.As(err, &ge) {
		t.Fatalf("first run: %v, want a GiveUpError", err)
	}
	if fi, err := os.Stat(dst + ".part"); err != nil || fi.Size() != 300000 {
		t.Fatalf(".part: %v, %v", fi, err)
	}
	s.hook = nil
	before := s.sent.Load()
	c2, rec := testClient(t, Options{})
	if _, err := c2.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out", Resume: true}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, lastMod.UnixNano())
	if got := s.sent.Load() - before; got != int64(len(data)-300000) {
		t.Errorf("the resume received %d body bytes, want %d", got, len(data)-300000)
	}
	var ranged *httpReq
	for _, r := range s.requests() {
		if r.Range != "" {
			ranged = &r
		}
	}
	if ranged == nil || ranged.Range != fmt.Sprintf("bytes=300000-%d", len(data)-1) || ranged.IfRange != f.etag {
		t.Errorf("resume request: %+v", ranged)
	}
	if d := rec.kinds(EventStart); len(d) != 1 || d[0].Resumed != 300000 {
		t.Errorf("start: %+v", d)
	}
}

// A file replaced between the HEAD and the ranged GET (same size, same
// mtime, another ETag): If-Range fails, the server sends it whole, and the
// download starts over instead of joining the two.
func TestHTTPChangedIsNotJoined(t *testing.T) {
	s := newHTTPFake(t, false)
	v1, v2 := randBytes(1<<20, 1), randBytes(1<<20, 2)
	s.put("/f", v1, lastMod)
	dst := filepath.Join(t.TempDir(), "out")
	s.hook = cutGet(s, "/f", 400000)
	c, _ := testClient(t, Options{})
	c.opts.Retries = 0
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out"}); err == nil {
		t.Fatal("first run succeeded")
	}
	// The second run's HEAD sees v1; its GET finds v2.
	s.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		if r.Method == "GET" && r.Header.Get("Range") != "" {
			s.put("/f", v2, lastMod)
		}
		return false
	}
	c2, rec := testClient(t, Options{})
	if _, err := c2.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out", Resume: true}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, v2, lastMod.UnixNano())
	if r := rec.kinds(EventRestart); len(r) == 0 || !strings.Contains(r[0].Err.Error(), "ETag") {
		t.Errorf("restart events: %+v", r)
	}
}

// servesWhole is a hook that answers every request with all of data (200,
// Range ignored), with Accept-Ranges: acceptRanges unless "".
func servesWhole(data []byte, acceptRanges string) func(n int, w http.ResponseWriter, r *http.Request) bool {
	return func(n int, w http.ResponseWriter, r *http.Request) bool {
		if acceptRanges != "" {
			w.Header().Set("Accept-Ranges", acceptRanges)
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Header().Set("Last-Modified", lastMod.UTC().Format(http.TimeFormat))
		w.WriteHeader(200)
		if r.Method == "GET" {
			w.Write(data)
		}
		return true
	}
}

// A server that ignores Range (always 200, whole file) still serves -x
// (one stream) and resumes (skipping the bytes already in place).
func TestHTTPServerIgnoresRanges(t *testing.T) {
	s := newHTTPFake(t, false)
	data := randBytes(2*MinSplit+999, 9)
	s.put("/f", data, lastMod)
	whole := servesWhole(data, "")
	s.hook = whole
	c, _ := testClient(t, Options{Conns: 4})
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out"}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, lastMod.UnixNano())

	// Resume: cut the first run, then a server that ignores ranges.
	dst2 := filepath.Join(t.TempDir(), "out2")
	s.hook = cutGet(s, "/f", 500000)
	c2, _ := testClient(t, Options{})
	c2.opts.Retries = 0
	if _, err := c2.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst2, Name: "out2"}); err == nil {
		t.Fatal("cut run succeeded")
	}
	s.hook = whole
	c3, _ := testClient(t, Options{})
	res, err := c3.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst2, Name: "out2", Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst2, data, lastMod.UnixNano())
	if res.Resumed != 500000 {
		t.Errorf("resumed %d, want 500000", res.Resumed)
	}
}

// A server that says it does not do ranges (Accept-Ranges: none) is
// fetched in one stream from the start: -x must not open a GET of the
// whole file per segment, each read from byte 0 to its own part.
func TestHTTPAcceptRangesNone(t *testing.T) {
	s := newHTTPFake(t, false)
	data := randBytes(8*MinSplit+999, 11)
	s.put("/f", data, lastMod)
	s.hook = servesWhole(data, "none")
	c, _ := testClient(t, Options{Conns: 4})
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out"}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, lastMod.UnixNano())
	gets := 0
	for _, r := range s.requests() {
		if r.Method == "GET" {
			gets++
		}
		if r.Range != "" {
			t.Errorf("a Range request to a server that said Accept-Ranges: none: %+v", r)
		}
	}
	if gets != 1 || s.sent.Load() != int64(len(data)) {
		t.Errorf("%d GETs, %d body bytes sent for a file of %d: want one GET of the file", gets, s.sent.Load(), len(data))
	}
}

func TestHTTPRetryAfter(t *testing.T) {
	for _, code := range []int{503, 429} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			s := newHTTPFake(t, false)
			data := randBytes(5000, 4)
			s.put("/f", data, lastMod)
			s.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
				if n == 0 {
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(code)
					return true
				}
				return false
			}
			c, rec := testClient(t, Options{})
			dst := filepath.Join(t.TempDir(), "out")
			if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out"}); err != nil {
				t.Fatal(err)
			}
			checkFile(t, dst, data, lastMod.UnixNano())
			r := rec.kinds(EventRetry)
			if len(r) != 1 || r[0].Delay < time.Second || Reason(r[0].Err) != fmt.Sprintf("server busy (HTTP %d)", code) {
				t.Fatalf("retries: %+v", r)
			}
		})
	}
}

func TestHTTPRefusalsAreNotRetried(t *testing.T) {
	s := newHTTPFake(t, false)
	s.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/forbidden" {
			http.Error(w, "no", http.StatusForbidden)
			return true
		}
		return false
	}
	c, _ := testClient(t, Options{})
	for p, want := range map[string]wire.Status{"/missing": wire.StatusNotFound, "/forbidden": wire.StatusForbidden} {
		before := len(s.requests())
		_, err := c.Fetch(context.Background(), Job{Src: s.target(p), Dst: filepath.Join(t.TempDir(), "x"), Name: "x"})
		var se *StatusError
		if !errors.As(err, &se) || se.Status != want || Retryable(err) {
			t.Errorf("%s: %v", p, err)
		}
		if n := len(s.requests()) - before; n != 1 {
			t.Errorf("%s: %d requests, want 1", p, n)
		}
	}
}

func TestHTTPRedirects(t *testing.T) {
	s := newHTTPFake(t, false)
	data := randBytes(70000, 8)
	s.put("/real", data, lastMod)
	s.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		switch r.URL.Path {
		case "/moved":
			http.Redirect(w, r, "/real", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusMovedPermanently)
		case "/dir":
			http.Redirect(w, r, "/dir/", http.StatusMovedPermanently)
		case "/dir/":
			w.Write([]byte("<html>a listing</html>"))
		default:
			return false
		}
		return true
	}
	c, _ := testClient(t, Options{})
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/moved"), Dst: dst, Name: "out"}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, lastMod.UnixNano())
	_, err := c.Fetch(context.Background(), Job{Src: s.target("/loop"), Dst: dst + "2", Name: "out2"})
	if err == nil || !strings.Contains(err.Error(), "more than 10 redirects") || Retryable(err) {
		t.Errorf("loop: %v", err)
	}
	_, err = c.Fetch(context.Background(), Job{Src: s.target("/dir"), Dst: dst + "3", Name: "out3"})
	var se *StatusError
	if !errors.As(err, &se) || se.Status != wire.StatusNotRegular {
		t.Errorf("directory: %v", err)
	}

	// https -> http is refused.
	ts := newHTTPFake(t, true)
	ts.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		http.Redirect(w, r, s.url("/real"), http.StatusFound)
		return true
	}
	ct, _ := testClient(t, Options{TLS: &tls.Config{RootCAs: certPool(ts)}})
	_, err = ct.Fetch(context.Background(), Job{Src: ts.target("/x"), Dst: dst + "4", Name: "out4"})
	if err == nil || !strings.Contains(err.Error(), "https to http") {
		t.Errorf("https -> http: %v", err)
	}
}

func certPool(s *httpFake) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.srv.Certificate())
	return p
}

func TestHTTPSCertificates(t *testing.T) {
	s := newHTTPFake(t, true)
	data := randBytes(3<<20, 12)
	s.put("/f", data, lastMod)
	dir := t.TempDir()

	c, _ := testClient(t, Options{})
	_, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: filepath.Join(dir, "a"), Name: "a"})
	var ce *CertError
	if !errors.As(err, &ce) || Retryable(err) {
		t.Fatalf("untrusted: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a")); err == nil {
		t.Error("a file was written from an untrusted server")
	}

	for name, conf := range map[string]*tls.Config{"cacert": {RootCAs: certPool(s)}, "insecure": {InsecureSkipVerify: true}} {
		for _, conns := range []int{1, 3} {
			c, rec := testClient(t, Options{TLS: conf, Conns: conns})
			dst := filepath.Join(dir, fmt.Sprintf("%s-%d", name, conns))
			if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: name}); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			checkFile(t, dst, data, lastMod.UnixNano())
			if d := rec.kinds(EventDone); len(d) != 1 || d[0].SHA256 != sumHex(data) {
				t.Errorf("%s: done %+v", name, d)
			}
		}
	}
}

// A digest that does not match leaves no final file and no .part, and a
// file the user had under that name is untouched.
func TestHTTPDigestMismatch(t *testing.T) {
	s := newHTTPFake(t, false)
	data := randBytes(2*MinSplit+5, 14)
	f := s.put("/f", data, lastMod)
	f.digest = "sha-256=:" + strings.Repeat("A", 43) + "=:"
	for _, conns := range []int{1, 4} {
		dst := filepath.Join(t.TempDir(), "out")
		if err := os.WriteFile(dst, []byte("the user's"), 0o644); err != nil {
			t.Fatal(err)
		}
		c, _ := testClient(t, Options{Conns: conns})
		_, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out"})
		var ve *VerifyError
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), "sha256") {
			t.Fatalf("x%d: %v, want a VerifyError", conns, err)
		}
		if b, _ := os.ReadFile(dst); string(b) != "the user's" {
			t.Errorf("x%d: the existing file was replaced", conns)
		}
		for _, p := range []string{dst + ".part", dst + ".part" + StateSuffix} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("x%d: %s kept", conns, p)
			}
		}
	}
	// Streams exit 5 too (the bytes are out, but the status says so).
	out, _ := os.Create(filepath.Join(t.TempDir(), "s"))
	defer out.Close()
	c, _ := testClient(t, Options{})
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Out: out, Name: "-"}); err == nil {
		t.Error("stream with a wrong digest succeeded")
	}
	// --no-verify ignores the server's digest; --sha256 wins over it.
	c, _ = testClient(t, Options{NoVerify: true})
	dst := filepath.Join(t.TempDir(), "nv")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "nv"}); err != nil {
		t.Errorf("--no-verify: %v", err)
	}
	c, rec := testClient(t, Options{})
	dst = filepath.Join(t.TempDir(), "user")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "user", SHA256: sumHex(data)}); err != nil {
		t.Errorf("--sha256: %v", err)
	}
	if d := rec.kinds(EventDone); len(d) != 1 || d[0].SHA256 != sumHex(data) {
		t.Errorf("--sha256 done: %+v", d)
	}
}

// The older Digest field is read too; a resumed file's kept prefix is
// hashed (from the .part) with the rest.
func TestHTTPLegacyDigestAndResume(t *testing.T) {
	s := newHTTPFake(t, false)
	data := randBytes(1<<20+17, 15)
	f := s.put("/f", data, lastMod)
	legacy := strings.Replace(f.digest, "sha-256=:", "SHA-256=", 1)
	legacy = strings.TrimSuffix(legacy, ":")
	f.digest = ""
	s.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Digest", legacy)
		return false
	}
	dst := filepath.Join(t.TempDir(), "out")
	cut := cutGet(s, "/f", 123456)
	s.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Digest", legacy)
		return cut(n, w, r)
	}
	c, _ := testClient(t, Options{})
	c.opts.Retries = 0
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out"}); err == nil {
		t.Fatal("cut run succeeded")
	}
	c2, rec := testClient(t, Options{})
	if _, err := c2.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out", Resume: true}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, lastMod.UnixNano())
	if d := rec.kinds(EventDone); len(d) != 1 || d[0].SHA256 != sumHex(data) {
		t.Errorf("done: %+v", d)
	}
}

// -c on a complete file: skipped when its size and Last-Modified match;
// without a Last-Modified only a digest can tell (the file is hashed);
// with neither it is fetched again.
func TestHTTPResumeComplete(t *testing.T) {
	data := randBytes(100000, 17)
	for _, c := range []struct {
		name       string
		noLM, noDG bool
		skipped    bool
	}{
		{"last-modified", false, true, true},
		{"digest only", true, false, true},
		{"neither", true, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newHTTPFake(t, false)
			f := s.put("/f", data, lastMod)
			f.noLM = c.noLM
			if c.noDG {
				f.digest = ""
			}
			f.etag = ""
			dst := filepath.Join(t.TempDir(), "out")
			cl, _ := testClient(t, Options{})
			if _, err := cl.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out"}); err != nil {
				t.Fatal(err)
			}
			before := s.sent.Load()
			cl, _ = testClient(t, Options{})
			res, err := cl.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out", Resume: true})
			if err != nil {
				t.Fatal(err)
			}
			if res.Skipped != c.skipped || (s.sent.Load() > before) == c.skipped {
				t.Errorf("skipped %v, %d bytes sent again; want skipped %v", res.Skipped, s.sent.Load()-before, c.skipped)
			}
			got, _ := os.ReadFile(dst)
			if sumHex(got) != sumHex(data) {
				t.Error("content differs")
			}
		})
	}
}
