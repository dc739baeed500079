package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestHTTPFolderIndexFormatJSON: /dir/?format=json against a folder with
// an index file, in the forms a query can take (escaped, repeated, empty
// names, ";" and "+"), with HEAD, conditionals and ranges, through the
// cache in both orders (each request twice: a miss, then a hit; the
// index file served before and after), at the root, through a symlink,
// without the slash, beside index names that are a folder or a FIFO, and
// where the folder may not be listed (a symlink out, a folder the worker
// may search but not read: 403, though its index file is served at
// /dir/). Listings are JSON arrays of the folder; index files are the
// file's bytes with its ETag.
func TestHTTPFolderIndexFormatJSON(t *testing.T) {
	root := shortTempDir(t)
	os.Chmod(root, 0o755)
	write := func(name, s string) { writeUnder(t, root, name, []byte(s), 0o644) }
	const hi = "<p>hi</p>"
	write("index.html", "root index")
	write("d/index.html", hi)
	write("d/e/x.txt", "x")
	write("file", "file")
	write("priv/index.html", "priv index")
	os.MkdirAll(filepath.Join(root, "g/index.html"), 0o755)
	os.MkdirAll(filepath.Join(root, "fifo"), 0o755)
	if err := syscall.Mkfifo(filepath.Join(root, "fifo/index.html"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Symlink("d", filepath.Join(root, "dlink"))
	os.Symlink("/etc", filepath.Join(root, "outlink"))
	user := ""
	if os.Geteuid() == 0 {
		// The workers run as nobody, who may search priv but not read it.
		os.Chmod(filepath.Join(root, "priv"), 0o711)
		os.Chmod(binDir, 0o755)
		user = "user = \"nobody\"\ngroup = \"nogroup\"\n"
	}
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: user + "open_file_cache = \"1h\"\n"})
	k := dialHTTP(t, d)
	file, _ := k.do(t, "GET", "/d/index.html")
	etag := file.Header.Get("ETag")

	// names lists a JSON listing's names, or says why it is not one.
	names := func(body []byte) string {
		var es []struct{ Name string }
		if err := json.Unmarshal(body, &es); err != nil {
			return "not a JSON listing: " + err.Error()
		}
		var ns []string
		for _, e := range es {
			ns = append(ns, e.Name)
		}
		return strings.Join(ns, ",")
	}
	const dList = "e,index.html"
	const htmlListing = "\x00an HTML listing"
	for _, tc := range []struct {
		method, path string
		header       string // a request header line, if set
		status       int
		list         string // the names of a JSON listing, if set
		body         string // else the body, if set
	}{
		{"GET", "/d/?format=json", "", 200, dList, ""},
		{"GET", "/d/?%66ormat=json", "", 200, dList, ""},
		{"GET", "/d/?format=%6Ason", "", 200, dList, ""},
		{"GET", "/d/?format=%4A%53ON", "", 200, dList, ""},
		{"GET", "/d/?&&=json&format=json&", "", 200, dList, ""},
		{"GET", "/d/?format=%zz&format=json", "", 200, dList, ""},
		{"GET", "/d/?format=json&format=html", "", 200, dList, ""},
		{"GET", "/d/?format=json", "Accept: text/html", 200, dList, ""},
		{"GET", "/d/./?format=json", "", 200, dList, ""},
		{"GET", "/d//?format=json", "", 200, dList, ""},
		{"GET", "/dlink/?format=json", "", 200, dList, ""},
		{"GET", "http://h/d/?format=json", "", 200, dList, ""},
		{"GET", "/?format=json", "", 200, "d,dlink,fifo,file,g,index.html,outlink,priv", ""},
		{"GET", "/g/?format=json", "", 200, "index.html", ""},
		{"GET", "/fifo/?format=json", "", 200, "index.html", ""},
		// A listing has no validators and ignores Range: the index
		// file's ETag does not make it 304, nor is a part of it sent.
		{"GET", "/d/?format=json", "If-None-Match: " + etag, 200, dList, ""},
		{"GET", "/d/?format=json", "Range: bytes=1-3", 200, dList, ""},
		{"HEAD", "/d/?format=json", "", 200, "", ""},
		// Not format=json: the index file.
		{"GET", "/d/?format=html&format=json", "", 200, "", hi},
		{"GET", "/d/?format=json;", "", 200, "", hi},
		{"GET", "/d/?format=json+", "", 200, "", hi},
		{"GET", "/d/?format", "", 200, "", hi},
		{"GET", "/d/?FORMAT=json", "", 200, "", hi},
		{"GET", "/d/?format=j%C5%BFon", "", 200, "", hi}, // U+017F: ASCII case only
		{"GET", "/d/", "Accept: application/j\u017fon", 200, "", hi},
		{"GET", "/d/e/", "Accept: application/j\u017fon", 200, "", htmlListing},
		{"GET", "/d/?format%3Djson", "", 200, "", hi},
		{"GET", "/d/?x=%26format=json", "", 200, "", hi},
		{"GET", "/d/?x=1;format=json", "", 200, "", hi},
		{"GET", "/d/", "Accept: application/json", 200, "", hi},
		{"GET", "/d/", "If-None-Match: " + etag, 304, "", ""},
		{"GET", "/d/index.html?format=json", "", 200, "", hi},
		{"GET", "/", "", 200, "", "root index"},
		// Nothing else changes.
		{"GET", "/d?format=json", "", 301, "", ""},
		{"GET", "/d/.?format=json", "", 301, "", ""},
		{"GET", "/outlink/?format=json", "", 403, "", ""},
		{"GET", "/outlink?format=json", "", 403, "", ""},
		{"GET", "/d/../?format=json", "", 403, "", ""},
		{"GET", "/file/?format=json", "", 404, "", ""},
		{"GET", "/missing/?format=json", "", 404, "", ""},
		{"GET", "/d/index.html/?format=json", "", 404, "", ""},
		{"GET", "/d/?format=json#frag", "", 400, "", ""},
	} {
		for round := range 2 {
			k := dialHTTP(t, d) // a 400 closes its connection
			var hs []string
			if tc.header != "" {
				hs = append(hs, tc.header)
			}
			resp, body := k.do(t, tc.method, tc.path, hs...)
			what := tc.method + " " + tc.path + " " + tc.header
			if resp.StatusCode != tc.status {
				t.Errorf("%s (%d): %s, want %d: %q", what, round, resp.Status, tc.status, body)
				continue
			}
			if tc.method == "HEAD" {
				get, gbody := k.do(t, "GET", tc.path)
				if resp.Header.Get("Content-Type") != "application/json" || resp.ContentLength != int64(len(gbody)) || get.Header.Get("Content-Type") != "application/json" {
					t.Errorf("%s (%d): %q, length %d; GET: %q, %d bytes", what, round, resp.Header.Get("Content-Type"), resp.ContentLength, get.Header.Get("Content-Type"), len(gbody))
				}
			}
			switch {
			case tc.list != "":
				if got := names(body); got != tc.list || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("ETag") != "" {
					t.Errorf("%s (%d): %q, ETag %q, names %q, want the listing %q", what, round, resp.Header.Get("Content-Type"), resp.Header.Get("ETag"), got, tc.list)
				}
			case tc.body == htmlListing:
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || resp.Header.Get("Vary") != "Accept" {
					t.Errorf("%s (%d): %q, Vary %q, want an HTML listing", what, round, ct, resp.Header.Get("Vary"))
				}
			case tc.body != "":
				if string(body) != tc.body {
					t.Errorf("%s (%d): %q, want %q", what, round, body, tc.body)
				}
			}
		}
	}
	// The redirect keeps the query.
	if resp, _ := k.do(t, "GET", "/dlink?format=json"); resp.Header.Get("Location") != "/dlink/?format=json" {
		t.Errorf("GET /dlink?format=json: Location %q", resp.Header.Get("Location"))
	}
	if user != "" {
		// A folder the worker may search but not read: its index file
		// at /dir/, a 403 for its listing.
		if resp, body := k.do(t, "GET", "/priv/"); resp.StatusCode != 200 || string(body) != "priv index" {
			t.Errorf("GET /priv/: %s %q, want its index file", resp.Status, body)
		}
		if resp, body := k.do(t, "GET", "/priv/?format=json"); resp.StatusCode != 403 {
			t.Errorf("GET /priv/?format=json: %s %q, want 403 (the listing may not be read)", resp.Status, body)
		}
	}
}
