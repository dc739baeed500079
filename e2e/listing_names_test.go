package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestListingNotUTF8: a name that is not valid UTF-8 cannot be asked for
// (HTTP refuses such a path with 400, the native protocol as a bad
// request), so listings leave it out, and say how many they left out,
// rather than offer a link that fails. Every link an HTML listing offers
// and every name a JSON listing gives is fetched, bytes checked.
func TestListingNotUTF8(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "d")
	sums := map[string]string{}
	for _, name := range []string{"bad\xff.bin", "good.bin", "\xc3"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		sums[name] = WriteRandom(t, filepath.Join(dir, name), 1000)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub\xfe"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := StartDaemon(t, DaemonOpts{Root: root})
	get := func(path string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+d.Addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := plainHTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}

	// The file itself is refused over HTTP, as docs/HTTP.md says.
	if resp, _ := get("/d/bad%FF.bin"); resp.StatusCode != 400 {
		t.Errorf("GET /d/bad%%FF.bin: %s, want 400", resp.Status)
	}

	resp, page := get("/d/")
	if resp.StatusCode != 200 {
		t.Fatalf("GET /d/: %s", resp.Status)
	}
	if got := resp.Header.Get("X-Listing-Omitted"); got != "3" {
		t.Errorf("HTML listing: X-Listing-Omitted %q, want 3", got)
	}
	if !strings.Contains(string(page), "3 names not shown") {
		t.Errorf("HTML listing does not say it left names out:\n%s", page)
	}
	links := regexp.MustCompile(`<a href="([^"]*)">`).FindAllStringSubmatch(string(page), -1)
	var files int
	for _, m := range links {
		if m[1] == "../" {
			continue
		}
		name, err := url.PathUnescape(m[1])
		if err != nil {
			t.Fatalf("link %q: %v", m[1], err)
		}
		resp, body := get("/d/" + m[1])
		if resp.StatusCode != 200 {
			t.Errorf("link %q offered by the listing: %s", m[1], resp.Status)
			continue
		}
		if FileSHA256Bytes(body) != sums[name] {
			t.Errorf("link %q: wrong bytes", m[1])
		}
		files++
	}
	if files != 1 {
		t.Errorf("%d links to files, want 1 (good.bin)", files)
	}

	resp, js := get("/d/?format=json")
	if got := resp.Header.Get("X-Listing-Omitted"); got != "3" {
		t.Errorf("JSON listing: X-Listing-Omitted %q, want 3", got)
	}
	var entries []struct{ Name, Kind string }
	if err := json.Unmarshal(js, &entries); err != nil {
		t.Fatalf("JSON listing: %v\n%s", err, js)
	}
	if len(entries) != 1 || entries[0].Name != "good.bin" {
		t.Errorf("JSON listing %s, want only good.bin", js)
	}
	for _, e := range entries {
		if resp, body := get("/d/" + url.PathEscape(e.Name)); resp.StatusCode != 200 || FileSHA256Bytes(body) != sums[e.Name] {
			t.Errorf("name %q given by the JSON listing: %s", e.Name, resp.Status)
		}
	}

	// A listing with nothing left out says nothing of it.
	if resp, page := get("/"); resp.Header.Get("X-Listing-Omitted") != "" || strings.Contains(string(page), "not shown") {
		t.Errorf("listing of /: X-Listing-Omitted %q", resp.Header.Get("X-Listing-Omitted"))
	}

	// zfetch -r, over both protocols, fetches what it is offered and
	// succeeds.
	for _, u := range []string{d.URL("/d"), "http://" + d.Addr + "/d"} {
		out := t.TempDir()
		if r := Zfetch(t, "-q", "-r", "-O", out, u); r.Code != 0 {
			t.Errorf("zfetch -r %s: %d %s", u, r.Code, r.Stderr)
			continue
		}
		if got := FileSHA256(t, filepath.Join(out, "d", "good.bin")); got != sums["good.bin"] {
			t.Errorf("zfetch -r %s: good.bin has the wrong bytes", u)
		}
	}
	// Over HTTP zfetch says what the listing left out (X-Listing-Omitted);
	// the native LIST has no way to tell it.
	u := "http://" + d.Addr + "/d"
	r := Zfetch(t, "-r", "-O", t.TempDir(), u)
	if r.Code != 0 || !strings.Contains(r.Stderr, "skipping "+u+"/: the server left 3 name(s) out of this directory's listing") {
		t.Errorf("zfetch -r %s: exit %d, no note of the names left out:\n%s", u, r.Code, r.Stderr)
	}
}
