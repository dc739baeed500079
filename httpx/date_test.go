package httpx

import (
	"math/rand/v2"
	"net/http"
	"testing"
	"time"
)

func TestAppendHTTPDate(t *testing.T) {
	tests := []struct {
		t    time.Time
		want string
	}{
		{time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC), "Sun, 06 Nov 1994 08:49:37 GMT"},
		{time.Unix(0, 0), "Thu, 01 Jan 1970 00:00:00 GMT"},
		{time.Date(2025, 12, 6, 7, 31, 56, 999_999_999, time.FixedZone("CET", 3600)), "Sat, 06 Dec 2025 06:31:56 GMT"},
		{time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), "Fri, 31 Dec 9999 23:59:59 GMT"},
		{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), "Sat, 01 Jan 10000 00:00:00 GMT"},
	}
	for _, tt := range tests {
		if got := string(AppendHTTPDate([]byte("x"), tt.t)); got != "x"+tt.want {
			t.Errorf("AppendHTTPDate(%v) = %q, want %q", tt.t, got, "x"+tt.want)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		tm := time.Unix(r.Int64N(253402300800)-62135596800, r.Int64N(1e9)) // years 1 to 9999
		if got, want := string(AppendHTTPDate(nil, tm)), tm.UTC().Format(http.TimeFormat); got != want {
			t.Fatalf("AppendHTTPDate(%v) = %q, want %q", tm, got, want)
		}
	}
}

func TestParseHTTPDate(t *testing.T) {
	want := time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC)
	for _, s := range []string{
		"Sun, 06 Nov 1994 08:49:37 GMT",  // IMF-fixdate
		"Sunday, 06-Nov-94 08:49:37 GMT", // RFC 850
		"Sun Nov  6 08:49:37 1994",       // asctime
		" Sun, 06 Nov 1994 08:49:37 GMT\t",
	} {
		got, ok := ParseHTTPDate(s)
		if !ok || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("ParseHTTPDate(%q) = %v, %v; want %v", s, got, ok, want)
		}
	}
	for _, s := range []string{"", "Sun, 06 Nov 1994 08:49:37 UTC", "Sunday, 06-Nov-94 08:49:37 PST",
		"Sun, 06 Nov 1994 08:49:37", "Sun, 6 Nov 1994 08:49:37 GMT", "1994-11-06T08:49:37Z",
		"Sun, 06 Nov 1994 25:49:37 GMT", "Sun, 31 Nov 1994 08:49:37 GMT"} {
		if got, ok := ParseHTTPDate(s); ok {
			t.Errorf("ParseHTTPDate(%q) = %v, want none", s, got)
		}
	}
}

func FuzzParseHTTPDate(f *testing.F) {
	f.Add("Sun, 06 Nov 1994 08:49:37 GMT")
	f.Add("Sunday, 06-Nov-94 08:49:37 GMT")
	f.Add("Sun Nov  6 08:49:37 1994")
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := ParseHTTPDate(s)
		// net/http.ParseTime accepts the same, and more in RFC 850's format.
		want, err := http.ParseTime(stripOWS(s))
		if ok && (err != nil || !got.Equal(want)) {
			t.Fatalf("ParseHTTPDate(%q) = %v; net/http: %v, %v", s, got, want, err)
		}
		if ok && got.Year() >= 0 && got.Year() <= 9999 && got.Nanosecond() == 0 {
			back, ok := ParseHTTPDate(string(AppendHTTPDate(nil, got)))
			if !ok || !back.Equal(got) {
				t.Fatalf("ParseHTTPDate(AppendHTTPDate(%v)) = %v, %v", got, back, ok)
			}
		}
	})
}
