package proxyproto

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	pires "github.com/pires/go-proxyproto"
)

func addSeeds(f *testing.F) {
	for _, c := range append(valid(), malformed()...) {
		f.Add([]byte(c.in + after))
	}
}

// FuzzParse checks that Parse never panics or changes its input, that its
// verdicts are final (more bytes never change one, and a success is never
// premature), that n is exact and bounded, that it never waits for more
// than MaxHeader bytes, and that the encoders round-trip what it decodes.
func FuzzParse(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		h, n, err := Parse(b)
		if !bytes.Equal(b, orig) {
			t.Fatalf("Parse modified its input")
		}
		if err != nil {
			var pe *Error
			switch {
			case h != (Header{}) || n != 0:
				t.Fatalf("error %v with %+v, %d", err, h, n)
			case errors.As(err, &pe) && pe.Msg == "":
				t.Fatalf("*Error without a message")
			case err != ErrIncomplete && err != ErrNotProxy && err != ErrTooLong && pe == nil:
				t.Fatalf("error of type %T: %v", err, err)
			case err == ErrIncomplete && len(b) >= MaxHeader:
				t.Fatalf("ErrIncomplete after %d bytes", len(b))
			}
			for k := range min(len(b), MaxHeader) {
				_, _, e := Parse(b[:k])
				if (err == ErrIncomplete && e != ErrIncomplete) || (e != ErrIncomplete && e.Error() != err.Error()) {
					t.Fatalf("Parse of the first %d bytes: %v; of all %d: %v", k, e, len(b), err)
				}
			}
			return
		}
		if n <= 0 || n > len(b) || n > MaxHeader || (h.Version == 1 && n > maxV1) || (h.Version != 1 && h.Version != 2) {
			t.Fatalf("Parse = %+v, %d of %d bytes", h, n, len(b))
		}
		if h.Local == (h.Source.IsValid() || h.Dest.IsValid()) || (!h.Local && !(h.Source.IsValid() && h.Dest.IsValid())) {
			t.Fatalf("Local %v with addresses %v, %v", h.Local, h.Source, h.Dest)
		}
		for k := range n {
			if hk, nk, e := Parse(b[:k]); e != ErrIncomplete {
				t.Fatalf("Parse of the first %d of %d bytes: %+v, %d, %v", k, n, hk, nk, e)
			}
		}
		if h2, n2, e := Parse(b[:n]); h2 != h || n2 != n || e != nil {
			t.Fatalf("Parse of the header alone: %+v, %d, %v; with the rest: %+v, %d", h2, n2, e, h, n)
		}

		var enc []byte
		if h.Version == 1 {
			enc = AppendV1(nil, h)
		} else {
			enc = AppendV2(nil, h)
		}
		h2, n2, e := Parse(enc)
		if h2 != h || n2 != len(enc) || e != nil {
			t.Fatalf("re-encoded %+v as %q: %+v, %d, %v", h, enc, h2, n2, e)
		}
		// Where the wire form is unique, the encoding is the same bytes.
		canonical := false
		switch {
		case h.Version == 1 && h.Local:
			canonical = n == len("PROXY UNKNOWN\r\n")
		case h.Version == 1:
			canonical = h.Source.Addr().Is4()
		case h.Local:
			canonical = b[12] == 0x20 && b[13] == famUnspec && n == v2Fixed
		default:
			l, _ := addrLen(b[13])
			canonical = n == v2Fixed+l
		}
		if canonical && !bytes.Equal(enc, b[:n]) {
			t.Fatalf("%+v decoded from %q encodes as %q", h, b[:n], enc)
		}
	})
}

// FuzzParseReference compares Parse with github.com/pires/go-proxyproto, an
// independent implementation, on the same bytes. Where the two are meant to
// differ (see the comments), the difference is checked to be that one.
func FuzzParseReference(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4096 {
			return // the reference must get all of b in one bufio read
		}
		h, n, err := Parse(b)
		br := bufio.NewReader(bytes.NewReader(b))
		ph, perr := pires.Read(br)
		pn := len(b) - br.Buffered()

		switch {
		case err == nil && perr == nil:
			if n != pn || h.Version != int(ph.Version) {
				t.Fatalf("Parse: %+v, %d bytes; reference: %+v, %d bytes", h, n, ph, pn)
			}
			src, dst, ok := ph.TCPAddrs()
			if local := ph.Command.IsLocal() || !ok; h.Local != local {
				t.Fatalf("Parse: %+v; reference: %+v (local %v)", h, ph, local)
			}
			if !h.Local && (unmap(h.Source) != addrPort(src) || unmap(h.Dest) != addrPort(dst)) {
				t.Fatalf("Parse: %v -> %v; reference: %v -> %v", h.Source, h.Dest, src, dst)
			}
		case err == nil:
			// The reference refuses a PROXY command with family UNSPEC; Parse
			// uses the connection's addresses, as the specification allows.
			if h.Version != 2 || b[12] != 0x21 || b[13] != famUnspec {
				t.Fatalf("Parse: %+v, %d; reference: %v", h, n, perr)
			}
		case perr == nil:
			if !refusedByParseOnly(b, err) {
				t.Fatalf("Parse: %v; reference: %+v, %d bytes", err, ph, pn)
			}
		}
	})
}

// refusedByParseOnly reports whether err is one of the refusals Parse makes
// and the reference does not: it checks TLVs and CRC32C (the reference keeps
// TLVs as raw bytes), bounds v2 at MaxHeader (the reference at 16+4096), and
// refuses a CR without LF anywhere in a v1 line, that of "UNKNOWN" included
// (the reference looks only at the end).
func refusedByParseOnly(b []byte, err error) bool {
	var pe *Error
	switch {
	case err == ErrTooLong:
		return true
	case !errors.As(err, &pe):
		return false
	case strings.HasPrefix(pe.Msg, "v2: TLV"), strings.HasPrefix(pe.Msg, "v2: CRC32C"),
		strings.HasPrefix(pe.Msg, "v2: ") && strings.Contains(pe.Msg, "too short for a TLV"):
		return true
	case strings.HasPrefix(pe.Msg, "v1: CR without LF"):
		return bytes.HasPrefix(b, []byte("PROXY UNKNOWN"))
	}
	return false
}

// unmap and addrPort make the two sides' addresses comparable: the
// reference keeps an IPv4 address in 4 or 16 bytes as it pleases.
func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func addrPort(a *net.TCPAddr) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port))
}

// FuzzParseIPv6 compares the v1 IPv6 address parser with net/netip's.
func FuzzParseIPv6(f *testing.F) {
	for _, s := range []string{"::", "::1", "2001:db8::1", "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8", "1::2::3", "fe80::1%1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseIPv6([]byte(s))
		want, err := netip.ParseAddr(s)
		wantOK := err == nil && want.Is6() && want.Zone() == ""
		if ok != wantOK || (ok && got != want) {
			t.Fatalf("parseIPv6(%q) = %v, %v; netip.ParseAddr: %v, %v", s, got, ok, want, err)
		}
	})
}
