package e2e

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// liarPy is an HTTP/1.1 server (Python's http.server) that serves one file
// under every path and lies as the path says. It takes no Range requests
// (so zfetch's -x falls back to one stream), and announces the file's
// Repr-Digest.
const liarPy = `
import base64, hashlib, http.server, itertools, sys
DATA = open(sys.argv[1], "rb").read()
COUNT = itertools.count()
def b64(b): return base64.b64encode(hashlib.sha256(b).digest()).decode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_HEAD(self): self.answer(False)
    def do_GET(self): self.answer(True)
    def answer(self, get):
        lie = self.path.strip("/")
        body, length, etag, digest = DATA, len(DATA), '"v1"', b64(DATA)
        if lie == "wrong-digest": digest = b64(b"another file")
        if lie == "etag": etag = '"v%d"' % next(COUNT)
        if get and lie == "bigger": body = DATA + b"more"; length = len(body)
        if get and lie == "smaller": body = DATA[:-4]; length = len(body)
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.send_header("Last-Modified", "Sun, 06 Dec 2026 07:00:00 GMT")
        self.send_header("ETag", etag)
        self.send_header("Repr-Digest", "sha-256=:%s:" % digest)
        self.end_headers()
        if not get: return
        if lie == "short":
            self.wfile.write(body[:len(body)//2]); self.wfile.flush()
            self.close_connection = True
            return
        if lie == "trailing":
            self.wfile.write(body + b"HTTP/1.1 200 OK\r\n\r\ngarbage after the body")
            self.close_connection = True
            return
        self.wfile.write(body)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print("%s:%d" % srv.server_address, flush=True)
srv.serve_forever()
`

func startLiar(t *testing.T, file string) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "liar.py")
	if err := os.WriteFile(script, []byte(liarPy), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, script, file)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard // broken pipes when zfetch hangs up on a lie
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		addr <- strings.TrimSpace(l)
	}()
	select {
	case a := <-addr:
		return a
	case <-time.After(20 * time.Second):
		t.Fatal("the Python server did not start")
	}
	return ""
}

// TestZfetchLyingHTTPServer: whatever an HTTP server gets wrong — a digest
// that does not match, a body shorter than its Content-Length, a GET whose
// size or ETag is not the HEAD's — zfetch exits non-zero and leaves no
// final file (and an existing one untouched). Bytes after a body are not
// taken for the file.
func TestZfetchLyingHTTPServer(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	sum := WriteRandom(t, src, 3<<20+77)
	addr := startLiar(t, src)
	for _, c := range []struct {
		lie  string
		code int
	}{
		{"honest", 0},
		{"wrong-digest", 5},
		{"short", 4},
		{"bigger", 5},
		{"smaller", 5},
		{"etag", 5},
		{"trailing", 0},
	} {
		for _, x := range []string{"1", "3"} {
			t.Run(c.lie+"-x"+x, func(t *testing.T) {
				dst := filepath.Join(t.TempDir(), "out")
				if err := os.WriteFile(dst, []byte("the user's file"), 0o644); err != nil {
					t.Fatal(err)
				}
				r := Zfetch(t, "-q", "-x", x, "--retries", "2", "-o", dst, "http://"+addr+"/"+c.lie)
				if r.Code != c.code {
					t.Fatalf("exit %d, want %d: %s", r.Code, c.code, r.Stderr)
				}
				got, _ := os.ReadFile(dst)
				if c.code == 0 {
					if s := FileSHA256(t, dst); s != sum {
						t.Fatalf("sha256 %s, want %s", s, sum)
					}
					return
				}
				if string(got) != "the user's file" {
					t.Fatalf("the existing file was replaced (%d bytes)", len(got))
				}
				if c.lie == "wrong-digest" {
					if _, err := os.Stat(dst + ".part"); err == nil {
						t.Errorf("a .part whose digest is wrong was kept")
					}
				}
				t.Logf("%s", strings.TrimSpace(r.Stderr))
			})
		}
	}
}
