package httpx

import (
	"encoding/json"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// hostileNames are names a directory may hold that must neither inject
// markup nor break links.
var hostileNames = []string{
	"<script>alert(1)</script>", `a"b`, "it's", "a&b", "a&amp;b", "100%", "50%25", "#top", "what?x=1",
	"with space", "  lead", "tab\there", "new\nline", "nul\x00", "del\x7f", "c1\u0085", "ünïcødé ☃ 日本",
	"bad\xffutf8", "\xc3", "javascript:alert(1)", "x:y", "a/b", `back\slash`, "semi;colon", "plus+",
	"=", "~tilde", "...", "-", "\u2028\u2029", "\ufeffbom", "\ufdd0\uffff", "\u202eevil", "--><!--",
	"]]>", "<", ">", "&", "&#60;", "'", "é", "e\u0301",
}

func hostileEntries() []Entry {
	mod := time.Date(2026, 12, 6, 6, 31, 56, 123456789, time.UTC)
	var es []Entry
	for i, n := range hostileNames {
		kind := [...]string{"file", "dir", "symlink", "other"}[i%4]
		es = append(es, Entry{Name: n, Kind: kind, Size: int64(i) * 1000, ModTime: mod})
	}
	return es
}

var hrefRE = regexp.MustCompile(`<a href="([^"]*)">`)

func TestListingHTMLHostile(t *testing.T) {
	es := hostileEntries()
	orig := slices.Clone(es)
	page := string(AppendListingHTML(nil, "/d<i>r/x&y/", es, 0))
	if !slices.Equal(es, orig) {
		t.Error("AppendListingHTML changed its entries")
	}
	if !utf8.ValidString(page) {
		t.Error("page is not valid UTF-8")
	}
	for _, c := range page {
		if c < 0x20 && c != '\n' || 0x7f <= c && c < 0xa0 {
			t.Errorf("page holds control character %U", c)
		}
	}
	// Every tag in the page is one the page itself writes.
	allowed := regexp.MustCompile(`^<(!DOCTYPE html|/?(html|head|title|style|body|h1|table|thead|tbody|tr|th|td)|html lang="en"|meta [^<>]*|td class="[st]"( title="[0-9]+ bytes")?|a href="[^"<>]*"|/a)>$`)
	for _, tag := range regexp.MustCompile(`<[^>]*>?`).FindAllString(page, -1) {
		if !allowed.MatchString(tag) {
			t.Errorf("unexpected markup %q", tag)
		}
	}
	if strings.Contains(page, "<d<i>") || !strings.Contains(page, "<h1>Index of /d&lt;i&gt;r/x&amp;y/</h1>") {
		t.Error("path not escaped in heading")
	}
	// Every link decodes to a name (plus "/" for a directory), in order.
	var hrefs []string
	for _, m := range hrefRE.FindAllStringSubmatch(page, -1) {
		hrefs = append(hrefs, m[1])
	}
	if len(hrefs) == 0 || hrefs[0] != "../" {
		t.Fatalf("first link %q, want ../", hrefs)
	}
	var want []string
	dirs := func(e Entry) bool { return e.Kind == "dir" }
	for _, pass := range []bool{true, false} {
		var names []string
		for _, e := range es {
			if dirs(e) == pass {
				names = append(names, e.Name+map[bool]string{true: "/"}[pass])
			}
		}
		slices.Sort(names)
		want = append(want, names...)
	}
	got := hrefs[1:]
	if len(got) != len(want) {
		t.Fatalf("%d links, want %d", len(got), len(want))
	}
	for i, h := range got {
		dec, err := url.PathUnescape(h)
		if err != nil || dec != want[i] {
			t.Errorf("link %q decodes to %q, %v; want %q", h, dec, err, want[i])
		}
		if strings.ContainsAny(h, ":&<>\"' ") {
			t.Errorf("link %q holds a character that is not percent-encoded", h)
		}
		if u, err := url.Parse(h); err != nil || u.Scheme != "" || u.Host != "" || u.RawQuery != "" || u.Fragment != "" {
			t.Errorf("link %q parses as %#v, %v", h, u, err)
		}
	}
}

func TestListingHTML(t *testing.T) {
	mod := time.Date(2026, 12, 6, 6, 31, 56, 0, time.FixedZone("X", -3600))
	es := []Entry{
		{Name: "b.txt", Kind: "file", Size: 1536, ModTime: mod},
		{Name: "a", Kind: "dir", ModTime: mod},
		{Name: "Z", Kind: "dir", ModTime: mod},
		{Name: "a.txt", Kind: "file", Size: 12, ModTime: mod},
		{Name: "link", Kind: "symlink", ModTime: mod},
		{Name: "..", Kind: "dir", ModTime: mod},
	}
	page := string(AppendListingHTML(nil, "/", es, 0))
	for _, s := range []string{
		"<!DOCTYPE html>", "<title>Index of /</title>", "<h1>Index of /</h1>",
		`<tr><td><a href="Z/">Z/</a></td><td class="s">-</td><td class="t">2026-12-06 07:31</td></tr>` + "\n" +
			`<tr><td><a href="a/">a/</a></td><td class="s">-</td><td class="t">2026-12-06 07:31</td></tr>` + "\n" +
			`<tr><td><a href="a.txt">a.txt</a></td><td class="s" title="12 bytes">12 B</td><td class="t">2026-12-06 07:31</td></tr>` + "\n" +
			`<tr><td><a href="b.txt">b.txt</a></td><td class="s" title="1536 bytes">1.50 KiB</td>`,
		`<a href="link">link</a></td><td class="s">-</td>`,
		"</html>\n",
	} {
		if !strings.Contains(page, s) {
			t.Errorf("page lacks %q:\n%s", s, page)
		}
	}
	for _, s := range []string{`href="../"`, `href="../../"`, "<script"} {
		if strings.Contains(page, s) {
			t.Errorf("page at / holds %q", s)
		}
	}
	if page := string(AppendListingHTML(nil, "/sub/", nil, 0)); !strings.Contains(page, `<a href="../">../</a>`) {
		t.Errorf("page at /sub/ lacks a parent link:\n%s", page)
	}
}

// TestListingHTMLOmitted: the line that says how many names a listing
// left out, and its absence when none were.
func TestListingHTMLOmitted(t *testing.T) {
	for _, tt := range []struct {
		omitted int
		want    string
	}{
		{0, ""},
		{1, "<p>1 name not shown: it is not valid UTF-8, which no request can name.</p>\n</body>"},
		{3, "<p>3 names not shown: they are not valid UTF-8, which no request can name.</p>\n</body>"},
	} {
		page := string(AppendListingHTML(nil, "/", nil, tt.omitted))
		if tt.want == "" && strings.Contains(page, "<p>") || !strings.Contains(page, tt.want) {
			t.Errorf("omitted %d: page\n%s\nwant it to hold %q", tt.omitted, page, tt.want)
		}
	}
}

func TestListingJSON(t *testing.T) {
	es := hostileEntries()
	orig := slices.Clone(es)
	out := AppendListingJSON([]byte("prefix"), es)
	if !slices.Equal(es, orig) {
		t.Error("AppendListingJSON changed its entries")
	}
	out = out[len("prefix"):]
	var got []struct {
		Name  string
		Kind  string
		Size  *int64
		MTime time.Time
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, out)
	}
	slices.SortFunc(es, func(x, y Entry) int { return strings.Compare(x.Name, y.Name) })
	if len(got) != len(es) {
		t.Fatalf("%d entries, want %d", len(got), len(es))
	}
	for i, e := range es {
		g := got[i]
		var want string
		b, _ := json.Marshal(e.Name)
		json.Unmarshal(b, &want)
		if g.Name != want {
			t.Errorf("entry %d: name %q, want %q", i, g.Name, want)
		}
		if g.Kind != e.Kind || !g.MTime.Equal(e.ModTime) {
			t.Errorf("entry %d: %+v, want %+v", i, g, e)
		}
		if (g.Size != nil) != (e.Kind == "file") || g.Size != nil && *g.Size != e.Size {
			t.Errorf("entry %d (%s): size %v, want %d", i, e.Kind, g.Size, e.Size)
		}
	}
	// encoding/json escapes strings the same way.
	for _, n := range hostileNames {
		want, _ := json.Marshal(n)
		if got := string(appendJSONString(nil, n)); got != string(want) {
			t.Errorf("appendJSONString(%q) = %s, encoding/json %s", n, got, want)
		}
	}
	one := AppendListingJSON(nil, []Entry{{Name: "a b", Kind: "file", Size: 12, ModTime: time.Date(2026, 12, 6, 6, 31, 56, 123456789, time.UTC)}, {Name: "d", Kind: "dir", ModTime: time.Unix(0, 0)}})
	if want := `[{"name":"a b","kind":"file","size":12,"mtime":"2026-12-06T06:31:56.123456789Z"},{"name":"d","kind":"dir","mtime":"1970-01-01T00:00:00.000000000Z"}]`; string(one) != want {
		t.Errorf("AppendListingJSON = %s\nwant %s", one, want)
	}
	if empty := AppendListingJSON(nil, nil); string(empty) != "[]" {
		t.Errorf("AppendListingJSON(nil) = %s", empty)
	}
}

func FuzzListing(f *testing.F) {
	for _, n := range hostileNames {
		f.Add(n, "/"+n+"/")
	}
	f.Fuzz(func(t *testing.T, name, dir string) {
		es := []Entry{{Name: name, Kind: "file"}, {Name: name + "x", Kind: "dir"}}
		out := AppendListingJSON(nil, es)
		if !json.Valid(out) {
			t.Fatalf("invalid JSON for %q: %s", name, out)
		}
		// The lengths the server allocates must be the pages' own.
		if n := ListingJSONLen(es); n != len(out) {
			t.Fatalf("ListingJSONLen %d, the page is %d bytes, for %q", n, len(out), name)
		}
		page := string(AppendListingHTML(nil, dir, es, 3))
		if n := ListingHTMLLen(dir, es, 3); n != len(page) {
			t.Fatalf("ListingHTMLLen %d, the page is %d bytes, for %q in %q", n, len(page), name, dir)
		}
		if !utf8.ValidString(page) {
			t.Fatalf("invalid UTF-8 for %q", name)
		}
		ref := []Entry{{Name: "f", Kind: "file"}, {Name: "fx", Kind: "dir"}}
		if name == "" || name == "." || name == ".." {
			ref = ref[1:]
		}
		if strings.Count(page, "<") != strings.Count(string(AppendListingHTML(nil, dir, ref, 3)), "<") {
			t.Fatalf("markup from %q or %q", name, dir)
		}
		if name != "" && name != "." && name != ".." {
			m := hrefRE.FindAllStringSubmatch(page, -1)
			if dec, err := url.PathUnescape(m[len(m)-1][1]); err != nil || dec != name {
				t.Fatalf("link %q for %q decodes to %q, %v", m[len(m)-1][1], name, dec, err)
			}
		}
	})
}

// TestListingLen: ListingHTMLLen and ListingJSONLen are the exact lengths
// of the pages, whatever the names need (escaping, percent-encoding,
// U+FFFD for what is not text), the sizes and the dates: the server makes
// a page in one allocation of that length (serve/httpdir.go), and one too
// short would be grown by append, leaving the page's size as garbage again.
func TestListingLen(t *testing.T) {
	es := hostileEntries()
	mod := time.Date(2026, 12, 6, 6, 31, 56, 123456789, time.UTC)
	for i, n := range []string{"", ".", "..", "file-with-a-reasonably-long-name-00001.txt", "Ça été créé à", "日本語のファイル名です",
		strings.Repeat("&", 300), "\x01\x1f", "\xed\xa0\x80surrogate", "\xf4\x90\x80\x80big", "\U0010fffe", "\U0001fffe"} {
		for j, kind := range []string{"file", "dir", "symlink", "other"} {
			es = append(es, Entry{Name: n, Kind: kind, Size: [...]int64{0, 1023, 1 << 40, -5, 1<<63 - 1, -1 << 63}[(i+j)%6], ModTime: mod})
		}
	}
	for _, y := range []int{0, 1, 999, 9999, 10000, 123456, -1, -2000} {
		es = append(es, Entry{Name: "y", Kind: "file", Size: 12345678901, ModTime: time.Date(y, 1, 2, 3, 4, 5, 6, time.UTC)})
	}
	es = append(es, Entry{Name: "local", Kind: "file", ModTime: time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("x", -5*3600))})
	for _, p := range []string{"/", "/d<i>r/x&y/", "/日本/\x00/"} {
		for _, omitted := range []int{0, 1, 12} {
			for k := range len(es) + 1 {
				if got, want := ListingHTMLLen(p, es[:k], omitted), len(AppendListingHTML(nil, p, es[:k], omitted)); got != want {
					t.Fatalf("ListingHTMLLen(%q, %d entries, %d) = %d, the page is %d bytes", p, k, omitted, got, want)
				}
			}
		}
	}
	for k := range len(es) + 1 {
		if got, want := ListingJSONLen(es[:k]), len(AppendListingJSON(nil, es[:k])); got != want {
			t.Fatalf("ListingJSONLen(%d entries) = %d, the JSON is %d bytes (last %+v)", k, got, want, es[max(k-1, 0)])
		}
	}
}
