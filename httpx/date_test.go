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
	// The clock is fuzzed as seconds since 0001-01-01 UTC (years 1 to 9999).
	const epoch = 62135596800          // 0001-01-01 to 1970-01-01, in seconds
	const dec2026 = epoch + 1796673600 // 2026-12-07 20:00:00 UTC
	const jan2070 = epoch + 3155760000 // 2070-01-01 00:00:00 UTC: "00" is 2100, not a leap year
	f.Add("Sun, 06 Nov 1994 08:49:37 GMT", int64(dec2026))
	f.Add("Sunday, 06-Nov-94 08:49:37 GMT", int64(dec2026))
	f.Add("Thursday, 01-Jan-70 00:00:00 GMT", int64(dec2026))
	f.Add("Monday, 07-Dec-76 20:00:00 GMT", int64(dec2026)) // exactly 50 years ahead: 2076
	f.Add("Monday, 07-Dec-76 20:00:01 GMT", int64(dec2026)) // more: 1976
	f.Add("Tuesday, 29-Feb-00 00:00:00 GMT", int64(jan2070))
	f.Add("Tuesday, 29-Feb-00 00:00:00 GMT", int64(dec2026)) // 2000
	f.Add("Sunday, 06-Nov-94 08:49:37 PST", int64(dec2026))
	f.Add("Sun Nov  6 08:49:37 1994", int64(dec2026))
	f.Fuzz(func(t *testing.T, s string, nowSec int64) {
		now := time.Unix(int64(uint64(nowSec)%253402300800)-epoch, 0).UTC()
		got, ok := parseHTTPDate(s, func() time.Time { return now })
		// net/http.ParseTime accepts the same, and more in RFC 850's format,
		// whose two-digit year it reads with a fixed cutoff instead: there
		// the two may differ by whole centuries.
		want, err := http.ParseTime(stripOWS(s))
		if !ok && err == nil {
			// What net/http takes and parseHTTPDate does not: an RFC 850
			// date in another zone than GMT, or 29 February of "00" when
			// that is a century that is not a leap year.
			_, err850 := time.Parse(rfc850Date, stripOWS(s))
			_, errAnyZone := time.Parse(time.RFC850, stripOWS(s))
			otherZone := err850 != nil && errAnyZone == nil
			century := (now.Year() + 50) / 100 * 100 // the year "00" names, or 100 years before
			h, m, sec := want.Clock()
			if time.Date(century, time.February, 29, h, m, sec, 0, time.UTC).After(now.AddDate(50, 0, 0)) {
				century -= 100
			}
			feb29 := err850 == nil && want.Month() == time.February && want.Day() == 29 && want.Year()%100 == 0 &&
				century%400 != 0
			if !otherZone && !feb29 {
				t.Fatalf("parseHTTPDate(%q) at %v: no date; net/http: %v", s, now, want)
			}
		}
		if ok && err != nil {
			t.Fatalf("parseHTTPDate(%q) at %v = %v; net/http: %v", s, now, got, err)
		}
		if _, err := time.Parse(rfc850Date, stripOWS(s)); ok && err == nil {
			if (got.Year()-want.Year())%100 != 0 || !got.AddDate(want.Year()-got.Year(), 0, 0).Equal(want) {
				t.Fatalf("parseHTTPDate(%q) at %v = %v; net/http: %v", s, now, got, want)
			}
			if !got.After(now.AddDate(-50, 0, 0)) || got.After(now.AddDate(50, 0, 0)) {
				t.Fatalf("parseHTTPDate(%q) at %v = %v, not within 50 years", s, now, got)
			}
		} else if ok && !got.Equal(want) {
			t.Fatalf("parseHTTPDate(%q) at %v = %v; net/http: %v", s, now, got, want)
		}
		if ok && got.Year() >= 0 && got.Year() <= 9999 && got.Nanosecond() == 0 {
			back, ok := ParseHTTPDate(string(AppendHTTPDate(nil, got)))
			if !ok || !back.Equal(got) {
				t.Fatalf("ParseHTTPDate(AppendHTTPDate(%v)) = %v, %v", got, back, ok)
			}
		}
	})
}

// TestParseHTTPDateRFC850Year checks the two-digit years of the RFC 850
// format against RFC 9110 section 5.6.7: a year that would put the date
// more than 50 years after now is the most recent past year with the same
// last two digits. Go's time.Parse instead puts 69-99 in the 1900s and
// 00-68 in the 2000s, whatever the date.
func TestParseHTTPDateRFC850Year(t *testing.T) {
	at := func(year int, month time.Month, day, hour int) time.Time {
		return time.Date(year, month, day, hour, 0, 0, 0, time.UTC)
	}
	tests := []struct {
		s    string
		now  time.Time
		want time.Time // zero: not a date
	}{
		{"Sunday, 06-Nov-94 08:00:00 GMT", at(2026, 12, 7, 20), at(1994, 11, 6, 8)},
		{"Thursday, 01-Jan-70 00:00:00 GMT", at(2026, 12, 7, 20), at(2070, 1, 1, 0)},
		{"Monday, 07-Dec-76 19:00:00 GMT", at(2026, 12, 7, 20), at(2076, 12, 7, 19)}, // 50 years less an hour ahead
		{"Monday, 07-Dec-76 20:00:00 GMT", at(2026, 12, 7, 20), at(2076, 12, 7, 20)}, // exactly 50 years is not more
		{"Monday, 07-Dec-76 21:00:00 GMT", at(2026, 12, 7, 20), at(1976, 12, 7, 21)}, // more than 50 years ahead
		{"Friday, 01-Jan-77 00:00:00 GMT", at(2026, 12, 7, 20), at(1977, 1, 1, 0)},
		{"Saturday, 01-Jan-00 00:00:00 GMT", at(2026, 12, 7, 20), at(2000, 1, 1, 0)},
		{"Wednesday, 01-Jan-68 00:00:00 GMT", at(2026, 12, 7, 20), at(2068, 1, 1, 0)},
		// The window moves with now, also across a century.
		{"Sunday, 06-Nov-94 08:00:00 GMT", at(2060, 1, 1, 0), at(2094, 11, 6, 8)},
		{"Sunday, 06-Nov-94 08:00:00 GMT", at(1990, 1, 1, 0), at(1994, 11, 6, 8)},
		{"Friday, 01-Jan-10 00:00:00 GMT", at(2095, 6, 1, 0), at(2110, 1, 1, 0)},
		{"Friday, 01-Jan-50 00:00:00 GMT", at(2095, 6, 1, 0), at(2050, 1, 1, 0)},
		{"Friday, 01-Jan-50 00:00:00 GMT", at(1960, 1, 1, 0), at(1950, 1, 1, 0)},
		// 29 February of a year that, in the window, is not a leap year.
		{"Tuesday, 29-Feb-00 00:00:00 GMT", at(2026, 12, 7, 20), at(2000, 2, 29, 0)},
		{"Tuesday, 29-Feb-00 00:00:00 GMT", at(2070, 1, 1, 0), time.Time{}}, // 2100
		{"Tuesday, 29-Feb-00 00:00:00 GMT", at(1900, 1, 1, 0), time.Time{}}, // 1900
		// The other formats carry four digits and are left alone.
		{"Sun, 06 Nov 2094 08:00:00 GMT", at(2026, 12, 7, 20), at(2094, 11, 6, 8)},
		{"Sun Nov  6 08:00:00 2094", at(2026, 12, 7, 20), at(2094, 11, 6, 8)},
	}
	for _, tt := range tests {
		got, ok := parseHTTPDate(tt.s, func() time.Time { return tt.now })
		if ok != !tt.want.IsZero() || !got.Equal(tt.want) || ok && got.Location() != time.UTC {
			t.Errorf("parseHTTPDate(%q) at %v = %v, %v; want %v", tt.s, tt.now, got, ok, tt.want)
		}
	}
}
