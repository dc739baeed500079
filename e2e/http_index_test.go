package e2e

import (
	"bufio"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// keptHTTP is one kept-alive HTTP connection to a daemon.
type keptHTTP struct {
	c  net.Conn
	br *bufio.Reader
}

func dialHTTP(t *testing.T, d *Daemon) *keptHTTP {
	t.Helper()
	c := dial(t, d.Addr)
	t.Cleanup(func() { c.Close() })
	return &keptHTTP{c: c, br: bufio.NewReader(c)}
}

// do sends method path with the extra header lines and returns the
// response and its body.
func (k *keptHTTP) do(t *testing.T, method, path string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	k.c.SetDeadline(time.Now().Add(20 * time.Second))
	req := method + " " + path + " HTTP/1.1\r\nHost: h\r\n"
	for _, h := range headers {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(k.c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(k.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp, body
}

// writeUnder writes b to root/name, making its folders, with mode (set
// past the umask).
func writeUnder(t *testing.T, root, name string, b []byte, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
}

// TestHTTPFolderIndex: what a folder's path (ending in "/") answers,
// through the real binary, now that its index file is looked up first
// through the open-file cache: the index file when it is a regular file
// (its own validators, ranges and conditionals; a body too large to keep
// in memory, sent whole; on a file system mounted below the root), else
// the listing (an index name that is a folder, a FIFO, a symlink leading
// out, a file the worker may not read), else 403 with listings off; a
// file with a slash, a missing folder and a name under a file stay 404,
// a symlink out 403, a folder without its slash 301 with the query kept.
// Each request twice: a cache miss, then a hit. The native protocol
// still refuses a directory and a FIFO by their kind.
func TestHTTPFolderIndex(t *testing.T) {
	root := shortTempDir(t)
	os.Chmod(root, 0o755)
	write := func(name string, b []byte, mode os.FileMode) { writeUnder(t, root, name, b, mode) }
	hi := []byte("<p>hi</p>")
	write("d/index.html", hi, 0o644)
	write("d/e/x.txt", []byte("x"), 0o644)
	write("file", []byte("file"), 0o644)
	write("multi/a.html", []byte("a"), 0o644)
	write("multi/b.html", []byte("b"), 0o644)
	write("onlyb/b.html", []byte("b"), 0o644)
	write("noperm/index.html", []byte("secret"), 0)
	big := make([]byte, 3<<20+7) // more than the worker keeps in memory
	rand.Read(big)
	write("big/index.html", big, 0o644)
	for _, dir := range []string{"g/index.html", "fifo", "sym"} {
		os.MkdirAll(filepath.Join(root, dir), 0o755)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "fifo", "index.html"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Symlink("/etc/passwd", filepath.Join(root, "sym", "index.html"))
	os.Symlink("d", filepath.Join(root, "dlink"))
	os.Symlink("/etc", filepath.Join(root, "outlink"))
	// A file system mounted below the root (RESOLVE_NO_XDEV stops the
	// raw walk there; the ordinary one serves it).
	mounted := false
	if os.Geteuid() == 0 {
		mnt := filepath.Join(root, "mnt")
		os.Mkdir(mnt, 0o755)
		if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m,mode=0755"); err == nil {
			mounted = true
			t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
			write("mnt/index.html", []byte("mnt"), 0o644)
		}
	}
	// As root, the workers run as nobody, who may not read noperm/index.html.
	user := ""
	if os.Geteuid() == 0 {
		os.Chmod(binDir, 0o755)
		user = "user = \"nobody\"\ngroup = \"nogroup\"\n"
	}

	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: user + "open_file_cache = \"1h\"\n"})
	k := dialHTTP(t, d)
	listing := "listing"
	for _, tc := range []struct {
		path   string
		status int
		body   string // listing: a listing (Vary: Accept); "": not checked
		header string // "Name: value" the response must carry, if set
	}{
		{"/d/", 200, string(hi), "Content-Type: text/html; charset=utf-8"},
		{"/d/./", 200, string(hi), ""},
		{"/d//", 200, string(hi), ""},
		{"/dlink/", 200, string(hi), ""},
		{"/d/?x=1", 200, string(hi), ""},
		{"/d", 301, "", "Location: /d/"},
		{"/d?x=1&y", 301, "", "Location: /d/?x=1&y"},
		{"/d/.", 301, "", "Location: /d/"},
		{"/", 200, listing, ""},
		{"/d/e/", 200, listing, ""},
		{"/g/", 200, listing, ""},
		{"/fifo/", 200, listing, ""},
		{"/sym/", 200, listing, ""},
		{"/multi/", 200, listing, ""},
		{"/big/", 200, string(big), "Content-Type: text/html; charset=utf-8"},
		{"/file/", 404, "", ""},
		{"/file/.", 404, "", ""},
		{"/missing/", 404, "", ""},
		{"/d/index.html/", 404, "", ""},
		{"/outlink/", 403, "", ""},
		{"/outlink", 403, "", ""},
		{"/d/../", 403, "", ""},
		{"/fifo/index.html", 403, "", ""},
		{"/g/index.html/", 200, listing, ""},
		// ?format=json asks for the folder's JSON listing by name:
		// the index file does not stand in for it (zfetch -r).
		{"/d/?format=json", 200, listing, "Content-Type: application/json"},
		{"/d/?x=1&format=JSON", 200, listing, "Content-Type: application/json"},
		{"/d/?format=html", 200, string(hi), ""},
		{"/d?format=json", 301, "", "Location: /d/?format=json"},
	} {
		for round := range 2 {
			resp, body := k.do(t, "GET", tc.path)
			if resp.StatusCode != tc.status {
				t.Errorf("GET %s (%d): %s, want %d: %q", tc.path, round, resp.Status, tc.status, body)
				continue
			}
			switch tc.body {
			case "":
			case listing:
				if resp.Header.Get("Vary") != "Accept" {
					t.Errorf("GET %s (%d): not a listing: %v", tc.path, round, resp.Header)
				}
			default:
				if string(body) != tc.body {
					t.Errorf("GET %s (%d): %d bytes, sha256 %s, want %d bytes, sha256 %s",
						tc.path, round, len(body), FileSHA256Bytes(body), len(tc.body), FileSHA256Bytes([]byte(tc.body)))
				}
			}
			if name, value, ok := strings.Cut(tc.header, ": "); ok && resp.Header.Get(name) != value {
				t.Errorf("GET %s (%d): %s: %q, want %q", tc.path, round, name, resp.Header.Get(name), value)
			}
		}
	}
	if user != "" {
		if resp, _ := k.do(t, "GET", "/noperm/"); resp.StatusCode != 200 || resp.Header.Get("Vary") != "Accept" {
			t.Errorf("GET /noperm/ (index not readable by the worker): %s, want its listing", resp.Status)
		}
	}
	if mounted {
		if resp, body := k.do(t, "GET", "/mnt/"); resp.StatusCode != 200 || string(body) != "mnt" {
			t.Errorf("GET /mnt/ (a mount below the root): %s %q", resp.Status, body)
		}
		if resp, _ := k.do(t, "GET", "/mnt"); resp.StatusCode != 301 || resp.Header.Get("Location") != "/mnt/" {
			t.Errorf("GET /mnt: %s, Location %q", resp.Status, resp.Header.Get("Location"))
		}
	}

	// An Accept field that prefers JSON does not: the URL names the index
	// file's folder, and caches may keep its answer (no Vary).
	if resp, body := k.do(t, "GET", "/d/", "Accept: application/json"); resp.StatusCode != 200 || string(body) != string(hi) {
		t.Errorf("GET /d/ Accept: application/json: %s %q, want the index file", resp.Status, body)
	}

	// The folder's answer is its index file's: the same validators, and
	// conditionals and ranges apply to it.
	file, _ := k.do(t, "GET", "/d/index.html")
	folder, _ := k.do(t, "HEAD", "/d/")
	etag, mod := file.Header.Get("ETag"), file.Header.Get("Last-Modified")
	if etag == "" || folder.Header.Get("ETag") != etag || folder.Header.Get("Last-Modified") != mod || folder.ContentLength != int64(len(hi)) {
		t.Errorf("HEAD /d/: ETag %q Last-Modified %q length %d; /d/index.html: %q %q %d",
			folder.Header.Get("ETag"), folder.Header.Get("Last-Modified"), folder.ContentLength, etag, mod, len(hi))
	}
	if resp, body := k.do(t, "GET", "/d/", "If-None-Match: "+etag); resp.StatusCode != 304 || len(body) != 0 {
		t.Errorf("GET /d/ If-None-Match: %s, %d bytes", resp.Status, len(body))
	}
	if resp, body := k.do(t, "GET", "/d/", "If-Modified-Since: "+mod); resp.StatusCode != 304 || len(body) != 0 {
		t.Errorf("GET /d/ If-Modified-Since: %s, %d bytes", resp.Status, len(body))
	}
	if resp, body := k.do(t, "GET", "/d/", "Range: bytes=1-3"); resp.StatusCode != 206 || string(body) != string(hi[1:4]) {
		t.Errorf("GET /d/ Range: %s %q", resp.Status, body)
	}
	if resp, body := k.do(t, "GET", "/big/", "Range: bytes=3145728-"); resp.StatusCode != 206 || string(body) != string(big[3<<20:]) {
		t.Errorf("GET /big/ Range: %s, %d bytes", resp.Status, len(body))
	}

	// The native protocol refuses what is not a regular file by its kind.
	c := dial(t, d.Addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for _, tc := range []struct {
		path string
		kind wire.Kind
		msg  string
	}{
		{"/d", wire.KindDir, "not a regular file: /d is a directory"},
		{"/d/", wire.KindDir, "not a regular file: /d/ is a directory"},
		{"/fifo/index.html", wire.KindOther, "not a regular file: /fifo/index.html is a FIFO, device or socket"},
	} {
		for round := range 2 {
			sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: tc.path})
			if r := readResp(t, c); r.Status != wire.StatusNotRegular || r.Kind != tc.kind || r.Message != tc.msg {
				t.Errorf("native GET %s (%d): %v %v %q, want %v %v %q", tc.path, round, r.Status, r.Kind, r.Message, wire.StatusNotRegular, tc.kind, tc.msg)
			}
		}
	}

	// Index files in their order; none of them: 403 with listings off.
	d2 := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: user + "index = [\"a.html\", \"b.html\"]\nlisting = false\n"})
	k2 := dialHTTP(t, d2)
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/multi/", 200, "a"},
		{"/onlyb/", 200, "b"},
		{"/d/", 403, ""},
		{"/multi/?format=json", 200, "a"}, // no listing to give: the index file
		{"/d", 301, ""},
		{"/missing/", 404, ""},
	} {
		for round := range 2 {
			resp, body := k2.do(t, "GET", tc.path)
			if resp.StatusCode != tc.status || (tc.body != "" && string(body) != tc.body) {
				t.Errorf("index a.html, b.html, no listing: GET %s (%d): %s %q, want %d %q", tc.path, round, resp.Status, body, tc.status, tc.body)
			}
		}
	}
	// No index files: the listing.
	d3 := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: user + "index = []\n"})
	k3 := dialHTTP(t, d3)
	if resp, _ := k3.do(t, "GET", "/d/"); resp.StatusCode != 200 || resp.Header.Get("Vary") != "Accept" {
		t.Errorf("index = []: GET /d/: %s, want its listing", resp.Status)
	}
}
