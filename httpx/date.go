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
// local time zone). The result is in UTC.
func ParseHTTPDate(s string) (time.Time, bool) {
	s = stripOWS(s)
	if s == "" {
		return time.Time{}, false
	}
	for _, layout := range [...]string{imfFixdate, rfc850Date, asctimeDate} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}
