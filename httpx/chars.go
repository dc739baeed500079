package httpx

// Character classes of RFC 9110 and RFC 3986, one bit each in class.
const (
	tchar      = 1 << iota // token: "!#$%&'*+-.^_`|~", DIGIT, ALPHA
	fieldChar              // field-value: VCHAR, obs-text (0x80-0xff), SP, HTAB
	targetChar             // request-target as sent: VCHAR but '#'
	hostChar               // reg-name without pct-encoded: unreserved, sub-delims
)

var class = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if alnum || c < 0x80 && contains("!#$%&'*+-.^_`|~", byte(c)) {
			t[c] |= tchar
		}
		if 0x21 <= c && c <= 0x7e || c >= 0x80 || c == ' ' || c == '\t' {
			t[c] |= fieldChar
		}
		if 0x21 <= c && c <= 0x7e && c != '#' {
			t[c] |= targetChar
		}
		if alnum || c < 0x80 && contains("-._~!$&'()*+,;=", byte(c)) {
			t[c] |= hostChar
		}
	}
	return t
}()

func contains(s string, c byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return true
		}
	}
	return false
}

// firstNot returns the index of the first byte of s not in the class bit,
// or -1.
func firstNot[S ~string | ~[]byte](s S, bit uint8) int {
	for i := 0; i < len(s); i++ {
		if class[s[i]]&bit == 0 {
			return i
		}
	}
	return -1
}

// equalLower reports whether b equals lower, which is lower case ASCII,
// ignoring ASCII case in b.
func equalLower[S ~string | ~[]byte](b S, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// trimOWS removes optional whitespace (SP, HTAB) from both ends of b.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
