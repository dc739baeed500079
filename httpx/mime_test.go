package httpx

import (
	"mime"
	"strings"
	"testing"
)

func TestContentType(t *testing.T) {
	tests := []struct{ name, want string }{
		{"index.html", "text/html; charset=utf-8"},
		{"/srv/www/a.b/INDEX.HTML", "text/html; charset=utf-8"},
		{"notes.txt", "text/plain; charset=utf-8"},
		{"data.json", "application/json"},
		{"movie.mp4", "video/mp4"},
		{"image.png", "image/png"},
		{"README", defaultType},
		{"a.b/README", defaultType},
		{"file.", defaultType},
		{"x.no-such-extension", defaultType},
		{"", defaultType},
		{"/", defaultType},
	}
	for _, tt := range tests {
		for range 2 { // uncached, then cached
			if got := ContentType(tt.name); got != tt.want {
				t.Errorf("ContentType(%q) = %q, want %q", tt.name, got, tt.want)
			}
		}
	}
	// Whatever package mime says, from the system's table.
	for _, ext := range []string{".css", ".js", ".svg", ".pdf", ".gz", ".wasm", ".webm", ".deb"} {
		want := mime.TypeByExtension(ext)
		if want == "" {
			want = defaultType
		}
		if got := ContentType("f" + ext); got != want {
			t.Errorf("ContentType(%q) = %q, want %q", "f"+ext, got, want)
		}
	}
}

func TestContentTypeCacheBound(t *testing.T) {
	for i := range 2 * maxTypeCache {
		ContentType("f.x" + strings.Repeat("y", i%100) + string(rune('a'+i%26)) + string(rune('a'+i/26%26)))
	}
	if n := typeCacheSize.Load(); n > maxTypeCache {
		t.Errorf("type cache holds %d extensions, limit %d", n, maxTypeCache)
	}
	if got := ContentType("late.html"); got != "text/html; charset=utf-8" {
		t.Errorf("ContentType past the cache's bound = %q", got)
	}
}
