package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// HTTP through the real clients people use: curl, wget, aria2c, Python's
// http.client and headless Chromium, on the same port zfetch uses.

// httpTree makes a served root with files and directories for HTTP tests
// and returns it with the sha256 of each file by path.
func httpTree(t *testing.T) (string, map[string]string) {
	t.Helper()
	root := shortTempDir(t)
	sums := map[string]string{}
	for name, size := range map[string]int64{
		"empty.bin":            0,
		"small.txt":            4 << 10,
		"mib-plus-one.bin":     1<<20 + 1,
		"big.bin":              16 << 20,
		"with space é.bin":     1000,
		"dir/index.html":       300,
		"list/a.txt":           10,
		"list/<b>&\"c'#?%.txt": 20,
		"list/sub/x":           1,
	} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		sums["/"+name] = WriteRandom(t, p, size)
	}
	return root, sums
}

// httpURL is the http:// URL of a path on d, percent-encoded.
func (d *Daemon) httpURL(path string) string {
	return "http://" + d.Addr + escapePath(path)
}

func escapePath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '/' || c == '-' || c == '.' || c == '_' || c == '~' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed (scripts/deps installs it as root)", name)
	}
}

// curl runs curl with args and returns its stdout; stderr and exit code
// are in the Result.
func curl(t *testing.T, args ...string) Result {
	t.Helper()
	return run(t, 60*time.Second, "curl", append([]string{"-sS", "--max-time", "50"}, args...)...)
}

func TestHTTPCurl(t *testing.T) {
	needTool(t, "curl")
	root, sums := httpTree(t)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	out := t.TempDir()

	t.Run("whole files byte-exact", func(t *testing.T) {
		for _, p := range []string{"/empty.bin", "/small.txt", "/mib-plus-one.bin", "/big.bin", "/with space é.bin"} {
			dst := filepath.Join(out, "f")
			if r := curl(t, "-f", "-o", dst, d.httpURL(p)); r.Code != 0 {
				t.Fatalf("curl %s: exit %d %s", p, r.Code, r.Stderr)
			}
			if got := FileSHA256(t, dst); got != sums[p] {
				t.Fatalf("%s: sha256 %s, want %s", p, got, sums[p])
			}
		}
	})

	t.Run("headers and HEAD", func(t *testing.T) {
		r := curl(t, "-I", d.httpURL("/small.txt"))
		if r.Code != 0 {
			t.Fatalf("curl -I: %d %s", r.Code, r.Stderr)
		}
		h := r.Stdout
		for _, want := range []string{
			"HTTP/1.1 200 OK\r\n", "Content-Length: 4096\r\n", "Content-Type: text/plain; charset=utf-8\r\n",
			"Accept-Ranges: bytes\r\n", "X-Content-Type-Options: nosniff\r\n", "Last-Modified: ", "ETag: \"", "Date: ",
		} {
			if !strings.Contains(h, want) {
				t.Errorf("HEAD response lacks %q:\n%s", want, h)
			}
		}
		if r := curl(t, "-I", d.httpURL("/big.bin")); !strings.Contains(r.Stdout, "Content-Type: application/octet-stream\r\n") {
			t.Errorf("unknown extension: %s", r.Stdout)
		}
	})

	t.Run("ranges", func(t *testing.T) {
		whole, _ := os.ReadFile(filepath.Join(root, "mib-plus-one.bin"))
		for _, tc := range []struct {
			rng  string
			want []byte
		}{
			{"100-199", whole[100:200]},
			{"-500", whole[len(whole)-500:]},
			{"1048570-", whole[1048570:]},
			{"0-0", whole[:1]},
		} {
			r := curl(t, "-f", "-r", tc.rng, "-D", filepath.Join(out, "h"), d.httpURL("/mib-plus-one.bin"))
			if r.Code != 0 || !bytes.Equal([]byte(r.Stdout), tc.want) {
				t.Fatalf("-r %s: exit %d, %d bytes, want %d: %s", tc.rng, r.Code, len(r.Stdout), len(tc.want), r.Stderr)
			}
			hdr, _ := os.ReadFile(filepath.Join(out, "h"))
			if !bytes.Contains(hdr, []byte("206 Partial Content")) || !bytes.Contains(hdr, []byte("Content-Range: bytes ")) {
				t.Fatalf("-r %s: headers:\n%s", tc.rng, hdr)
			}
		}
		r := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-r", "2000000-", d.httpURL("/mib-plus-one.bin"))
		if r.Stdout != "416" {
			t.Fatalf("range past the end: %q", r.Stdout)
		}
	})

	t.Run("resume with -C -", func(t *testing.T) {
		dst := filepath.Join(out, "resumed")
		whole, _ := os.ReadFile(filepath.Join(root, "big.bin"))
		os.WriteFile(dst, whole[:5<<20+3], 0o644)
		if r := curl(t, "-f", "-C", "-", "-o", dst, d.httpURL("/big.bin")); r.Code != 0 {
			t.Fatalf("curl -C -: %d %s", r.Code, r.Stderr)
		}
		if FileSHA256(t, dst) != sums["/big.bin"] {
			t.Fatal("resumed file differs")
		}
	})

	t.Run("HTTP/1.0 and conditional", func(t *testing.T) {
		dst := filepath.Join(out, "f10")
		if r := curl(t, "-f", "--http1.0", "-o", dst, d.httpURL("/small.txt")); r.Code != 0 || FileSHA256(t, dst) != sums["/small.txt"] {
			t.Fatalf("--http1.0: %d %s", r.Code, r.Stderr)
		}
		// -z FILE: If-Modified-Since the local file's mtime (newer than the
		// served one here): 304, nothing written.
		ref := filepath.Join(out, "ref")
		os.WriteFile(ref, nil, 0o644)
		future := time.Now().Add(time.Hour)
		os.Chtimes(ref, future, future)
		r := curl(t, "-z", ref, "-o", filepath.Join(out, "z"), "-w", "%{http_code}", d.httpURL("/small.txt"))
		if r.Code != 0 || r.Stdout != "304" {
			t.Fatalf("curl -z: %d %q %s", r.Code, r.Stdout, r.Stderr)
		}
	})

	t.Run("directories", func(t *testing.T) {
		r := curl(t, "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", d.httpURL("/list"))
		if r.Stdout != "301 "+d.httpURL("/list/") {
			t.Fatalf("/list: %q", r.Stdout)
		}
		dst := filepath.Join(out, "idx")
		if r := curl(t, "-f", "-L", "-o", dst, d.httpURL("/dir")); r.Code != 0 || FileSHA256(t, dst) != sums["/dir/index.html"] {
			t.Fatalf("/dir -> index.html: %d %s", r.Code, r.Stderr)
		}
		r = curl(t, "-f", d.httpURL("/list/")+"?format=json")
		for _, want := range []string{`"name":"a.txt"`, `"kind":"file"`, `"name":"sub"`, `"kind":"dir"`, `"size":10`} {
			if !strings.Contains(r.Stdout, want) {
				t.Errorf("JSON listing lacks %s: %s", want, r.Stdout)
			}
		}
		r = curl(t, "-f", "-H", "Accept: application/json", d.httpURL("/list/"))
		if !strings.HasPrefix(r.Stdout, "[") {
			t.Errorf("Accept: application/json got %q", r.Stdout)
		}
	})

	t.Run("zfetch on the same port", func(t *testing.T) {
		dst := filepath.Join(out, "z")
		if r := Zfetch(t, "-q", "-o", dst, d.URL("/big.bin")); r.Code != 0 || FileSHA256(t, dst) != sums["/big.bin"] {
			t.Fatalf("zfetch: %d %s", r.Code, r.Stderr)
		}
	})

	st := d.MustStatus()
	if st.Totals.HTTPRequests == 0 || st.Totals.NativeRequests == 0 {
		t.Errorf("per-protocol counters: %+v", st.Totals)
	}
}

func TestHTTPWgetAria2(t *testing.T) {
	root, sums := httpTree(t)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	out := t.TempDir()
	t.Run("wget -c", func(t *testing.T) {
		needTool(t, "wget")
		dst := filepath.Join(out, "big.bin")
		whole, _ := os.ReadFile(filepath.Join(root, "big.bin"))
		os.WriteFile(dst, whole[:3<<20], 0o644)
		r := run(t, 60*time.Second, "wget", "-q", "-c", "-O", dst, d.httpURL("/big.bin"))
		if r.Code != 0 || FileSHA256(t, dst) != sums["/big.bin"] {
			t.Fatalf("wget -c: %d %s", r.Code, r.Stderr)
		}
	})
	t.Run("aria2c -x4 -s4 with checksum", func(t *testing.T) {
		needTool(t, "aria2c")
		r := run(t, 60*time.Second, "aria2c", "-q", "-x4", "-s4", "-k1M", "--allow-overwrite=true", "--auto-file-renaming=false",
			"--checksum=sha-256="+sums["/big.bin"], "-d", out, "-o", "aria.bin", d.httpURL("/big.bin"))
		if r.Code != 0 || FileSHA256(t, filepath.Join(out, "aria.bin")) != sums["/big.bin"] {
			t.Fatalf("aria2c: %d %s %s", r.Code, r.Stdout, r.Stderr)
		}
	})
}

// TestHTTPPythonPipelined: Python's http.client, and raw pipelined
// requests answered in order on one connection.
func TestHTTPPythonPipelined(t *testing.T) {
	needTool(t, "python3")
	root, sums := httpTree(t)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1})
	script := `
import hashlib, http.client, socket, sys
host, port = sys.argv[1].rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port), timeout=20)
for p in ["/small.txt", "/mib-plus-one.bin", "/small.txt"]:
    c.request("GET", p)
    r = c.getresponse()
    print(p, r.status, hashlib.sha256(r.read()).hexdigest())
# three pipelined requests in one write; the last asks to close
s = socket.create_connection((host, int(port)), timeout=20)
s.sendall(b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\nHEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /empty.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
print("pipelined", data.count(b"HTTP/1.1 200 OK"), data.index(b"Content-Length: 4096") < data.index(b"Content-Length: 16777216") < data.rindex(b"Content-Length: 0"))
`
	r := run(t, 60*time.Second, "python3", "-c", script, d.Addr)
	if r.Code != 0 {
		t.Fatalf("python: %d %s", r.Code, r.Stderr)
	}
	want := fmt.Sprintf("/small.txt 200 %s\n/mib-plus-one.bin 200 %s\n/small.txt 200 %s\npipelined 3 True\n",
		sums["/small.txt"], sums["/mib-plus-one.bin"], sums["/small.txt"])
	if r.Stdout != want {
		t.Fatalf("python said:\n%s\nwant:\n%s", r.Stdout, want)
	}
}

// TestHTTPChromiumListing: a browser loads a directory listing; every
// hostile name is shown as text and links to itself.
func TestHTTPChromiumListing(t *testing.T) {
	bin := ""
	for _, b := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(b); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("chromium not installed (scripts/deps installs it as root)")
	}
	root, _ := httpTree(t)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1})
	r := run(t, 90*time.Second, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--dump-dom", d.httpURL("/list/"))
	if r.Code != 0 {
		t.Fatalf("chromium: %d %s", r.Code, tail(r.Stderr, 20))
	}
	dom := r.Stdout
	if strings.Contains(dom, "<b>&") {
		t.Fatalf("a file name reached the DOM as markup:\n%s", dom)
	}
	for _, want := range []string{"Index of /list/", "a.txt", "sub/", "&lt;b&gt;&amp;"} {
		if !strings.Contains(dom, want) {
			t.Errorf("DOM lacks %q:\n%s", want, dom)
		}
	}
	// Every link resolves to a name that exists: follow them with curl.
	hrefs := regexp.MustCompile(`href="([^"]+)"`).FindAllStringSubmatch(dom, -1)
	if len(hrefs) < 3 {
		t.Fatalf("links: %v", hrefs)
	}
	for _, h := range hrefs {
		link := strings.ReplaceAll(h[1], "&amp;", "&")
		if strings.HasPrefix(link, "..") {
			continue
		}
		u := "http://" + d.Addr + "/list/" + link
		if strings.HasPrefix(link, "/") {
			u = "http://" + d.Addr + link
		}
		r := curl(t, "-o", "/dev/null", "-w", "%{http_code}", u)
		if r.Stdout != "200" {
			t.Errorf("link %q: %s", link, r.Stdout)
		}
	}
}
