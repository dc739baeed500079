package fetch

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// Servers that lie: a body shorter than its Content-Length, a GET whose
// size or ETag differs from the HEAD's, bytes past the body. zfetch never
// renames a wrong file into place.
func TestHTTPLyingServers(t *testing.T) {
	data := randBytes(200000, 16)
	cases := map[string]func(s *httpFake) func(int, http.ResponseWriter, *http.Request) bool{
		"short body": func(s *httpFake) func(int, http.ResponseWriter, *http.Request) bool {
			return func(n int, w http.ResponseWriter, r *http.Request) bool {
				if r.Method != "GET" {
					return false
				}
				hijackHead(w, fmt.Sprintf("HTTP/1.1 200 OK\nContent-Length: %d\n\n", len(data)), data[:1000])
				return true
			}
		},
		"other size": func(s *httpFake) func(int, http.ResponseWriter, *http.Request) bool {
			return func(n int, w http.ResponseWriter, r *http.Request) bool {
				if r.Method != "GET" {
					return false
				}
				w.Header().Set("Content-Length", fmt.Sprint(len(data)-10))
				w.WriteHeader(200)
				w.Write(data[:len(data)-10])
				return true
			}
		},
		"other etag": func(s *httpFake) func(int, http.ResponseWriter, *http.Request) bool {
			return func(n int, w http.ResponseWriter, r *http.Request) bool {
				if r.Method != "GET" {
					return false
				}
				w.Header().Set("ETag", `"other"`)
				w.Header().Set("Content-Length", fmt.Sprint(len(data)))
				w.WriteHeader(200)
				w.Write(data)
				return true
			}
		},
	}
	for name, hook := range cases {
		t.Run(name, func(t *testing.T) {
			s := newHTTPFake(t, false)
			s.put("/f", data, lastMod)
			s.hook = hook(s)
			c, _ := testClient(t, Options{})
			dst := filepath.Join(t.TempDir(), "out")
			_, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out"})
			if err == nil {
				t.Fatal("succeeded")
			}
			if _, err := os.Stat(dst); err == nil {
				t.Fatal("a final file was written")
			}
		})
	}
	// Extra bytes after a body: the file is right, the connection is not
	// reused.
	s := newHTTPFake(t, false)
	s.put("/f", data, lastMod)
	s.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		if r.Method != "GET" {
			return false
		}
		hijackHead(w, fmt.Sprintf("HTTP/1.1 200 OK\nContent-Length: %d\nETag: %s\n\n", len(data), s.files["/f"].etag), append(append([]byte(nil), data...), "garbage"...))
		return true
	}
	c, _ := testClient(t, Options{})
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out"}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, lastMod.UnixNano())
}
