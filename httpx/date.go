package httpx

import "time"

// HTTP-date layouts (RFC 9110 section 5.6.7). Only IMF-fixdate is sent; all
// three are accepted. The obsolete ones name only GMT, like IMF-fixdate.
const (
	imfFixdate  = "Mon, 02 Jan 2006 15:04:05 GMT" // net/http.TimeFormat
	rfc850Date  = "Monday, 02-Jan-06 15:04:05 GMT"
	asctimeDate = "Mon Jan _2 15:04:05 2006"
)

// AppendHTTPDate appends t in IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT",
// in UTC. It does not allocate when b has room for 29 more bytes.
func AppendHTTPDate(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(b, imfFixdate) // not a date of a file anyone serves
	}
	const days = "SunMonTueWedThuFriSat"
	const months = "JanFebMarAprMayJunJulAugSepOctNovDec"
	hour, minute, sec := t.Clock()
	wd := int(t.Weekday()) * 3
	mo := (int(month) - 1) * 3
	return append(b,
		days[wd], days[wd+1], days[wd+2], ',', ' ',
		byte('0'+day/10), byte('0'+day%10), ' ',
		months[mo], months[mo+1], months[mo+2], ' ',
		byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), ' ',
		byte('0'+hour/10), byte('0'+hour%10), ':',
		byte('0'+minute/10), byte('0'+minute%10), ':',
		byte('0'+sec/10), byte('0'+sec%10), ' ', 'G', 'M', 'T')
}

// ParseHTTPDate parses an HTTP-date in any of its three formats:
// IMF-fixdate, the obsolete RFC 850 format and asctime's, as
// net/http.ParseTime does, but accepting no zone other than GMT in the RFC
// 850 format (net/http takes any abbreviation there and reads it in the
// local time zone), and reading its two-digit year as RFC 9110 section
// 5.6.7 says, relative to the current time (net/http takes Go's fixed
// cutoff: 69 to 99 in the 1900s, 00 to 68 in the 2000s). The result is in
// UTC.
func ParseHTTPDate(s string) (time.Time, bool) {
	return parseHTTPDate(s, time.Now)
}

// parseHTTPDate is ParseHTTPDate with the clock as an argument, called only
// for a date in the RFC 850 format.
func parseHTTPDate(s string, now func() time.Time) (time.Time, bool) {
	s = stripOWS(s)
	if s == "" {
		return time.Time{}, false
	}
	for _, layout := range [...]string{imfFixdate, rfc850Date, asctimeDate} {
		if t, err := time.Parse(layout, s); err == nil {
			if layout == rfc850Date {
				return rfc850Century(t.UTC(), now())
			}
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// rfc850Century gives t, parsed from an RFC 850 date (time.Parse puts its
// two-digit year between 1969 and 2068), the century RFC 9110 section 5.6.7
// asks for: a date that would be more than 50 years after now is in the
// most recent past year with the same last two digits. The year is thus the
// latest one with those digits that leaves t at most 50 years after now, so
// that a two-digit year names one of the 100 years around now. (The RFC
// says only which dates to move back; reading 10 as 2110 rather than 2010
// in 2095 is the same window.) It reports false for 29 February of a year
// that is then not a leap year, which only 00 can name (2000 is a leap
// year, 1900 and 2100 are not).
func rfc850Century(t, now time.Time) (time.Time, bool) {
	now = now.UTC()
	last := now.Year() + 50
	year := last - ((last-t.Year())%100+100)%100 // the latest year <= last with t's two digits
	month, day := t.Month(), t.Day()
	hour, minute, sec := t.Clock()
	moved := time.Date(year, month, day, hour, minute, sec, t.Nanosecond(), time.UTC)
	if moved.After(now.AddDate(50, 0, 0)) {
		moved = time.Date(year-100, month, day, hour, minute, sec, t.Nanosecond(), time.UTC)
	}
	if moved.Day() != day {
		return time.Time{}, false // 29 February normalized to 1 March
	}
	return moved, true
}
