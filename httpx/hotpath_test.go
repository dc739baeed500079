package httpx

import (
	"strconv"
	"testing"
	"time"
)

// The functions of every request must stay cheap: these fail when they
// start allocating more.

func BenchmarkParseRange(b *testing.B) {
	for _, s := range []string{"bytes=0-499", "bytes=0-0,-1", "bytes=0-99,200-299,400-499,600-699,800-899"} {
		b.Run(strconv.Quote(s), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ParseRange(s, 10000, 16)
			}
		})
	}
}

func TestAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	ContentType("warm.html")
	mod := time.Unix(1e9, 0)
	var buf [64]byte
	for _, tt := range []struct {
		name string
		max  float64
		f    func()
	}{
		{"ParseRange one range", 1, func() { ParseRange("bytes=0-499", 10000, 0) }},
		{"ParseRange none", 0, func() { ParseRange("bytes=20000-", 10000, 0) }},
		{"ContentRange", 1, func() { ContentRange(Range{0, 500}, 10000) }},
		{"ETag", 1, func() { ETag(1<<40, 1<<62, 1<<40) }},
		{"AppendHTTPDate", 0, func() { AppendHTTPDate(buf[:0], mod) }},
		{"ContentType", 1, func() { ContentType("/a/b/index.html") }},
		{"Preconditions", 0, func() { Preconditions(`"x", "y"`, "", `W/"a", "b"`, "", `"b"`, mod) }},
		{"RangeApplies", 0, func() { RangeApplies(`"b"`, `"b"`, mod) }},
	} {
		if n := testing.AllocsPerRun(100, tt.f); n > tt.max {
			t.Errorf("%s: %v allocations, want <= %v", tt.name, n, tt.max)
		}
	}
}

func BenchmarkETag(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		ETag(123456789, 1765002716123456789, 1<<30)
	}
}

func BenchmarkAppendHTTPDate(b *testing.B) {
	b.ReportAllocs()
	t := time.Unix(1765002716, 123456789)
	buf := make([]byte, 0, 64)
	for b.Loop() {
		buf = AppendHTTPDate(buf[:0], t)
	}
}

func BenchmarkContentType(b *testing.B) {
	b.ReportAllocs()
	names := []string{"/srv/a/index.html", "video.mp4", "archive.tar.gz", "README", "x.unknownext"}
	for b.Loop() {
		for _, n := range names {
			ContentType(n)
		}
	}
}

func BenchmarkPreconditions(b *testing.B) {
	etag := ETag(123456789, 1765002716123456789, 1<<30)
	mod := time.Unix(1765002716, 123456789)
	inm := `W/"x", ` + etag
	b.Run("If-None-Match", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Preconditions("", "", inm, "Sat, 06 Dec 2025 06:31:56 GMT", etag, mod)
		}
	})
	b.Run("If-Modified-Since", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Preconditions("", "", "", "Sat, 06 Dec 2025 06:31:56 GMT", etag, mod)
		}
	})
	b.Run("none", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Preconditions("", "", "", "", etag, mod)
		}
	})
}
