package proxyproto

import (
	"bytes"
	"net/netip"
	"strconv"
)

// parseV1 decodes the text header (doc/proxy-protocol.txt section 2.1):
//
//	PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n
//	PROXY TCP6 2001:db8::1 2001:db8::7 56324 443\r\n
//	PROXY UNKNOWN[ anything]\r\n
//
// b starts with "PROXY ". Nothing is decoded before the CRLF has arrived,
// as the specification asks; a lone CR or LF ends the header in error.
func parseV1(b []byte) (Header, int, error) {
	// The CR is at most at index maxV1-2 so that the LF is within maxV1.
	scan := b[len(sigV1):min(len(b), maxV1-1)]
	end := bytes.IndexByte(scan, '\r')
	lf := scan
	if end >= 0 {
		lf = scan[:end]
	}
	if i := bytes.IndexByte(lf, '\n'); i >= 0 {
		return Header{}, 0, errorf("v1: LF without CR at byte %d", len(sigV1)+i)
	}
	if end < 0 {
		if len(b) >= maxV1-1 {
			return Header{}, 0, errorf("v1: no CRLF within %d bytes", maxV1)
		}
		return Header{}, 0, ErrIncomplete
	}
	end += len(sigV1)
	if end+1 == len(b) {
		return Header{}, 0, ErrIncomplete
	}
	if b[end+1] != '\n' {
		return Header{}, 0, errorf("v1: CR without LF at byte %d", end)
	}
	n := end + 2
	line := b[len(sigV1):end]

	proto, rest := cut(line)
	switch string(proto) {
	case "UNKNOWN":
		// The sender may omit the rest of the line; the receiver must
		// ignore it (section 2.1).
		return Header{Version: 1, Local: true}, n, nil
	case "TCP4", "TCP6":
	default:
		return Header{}, 0, errorf("v1: protocol %q is not TCP4, TCP6 or UNKNOWN", proto)
	}
	var f [4][]byte // source, destination, source port, destination port
	for i := range f {
		if len(rest) == 0 || rest[0] != ' ' {
			return Header{}, 0, errorf("v1: %s line has %d fields after the protocol, want 4", proto, i)
		}
		f[i], rest = cut(rest[1:])
		if len(f[i]) == 0 {
			return Header{}, 0, errorf("v1: empty field %d (only single spaces may separate fields)", i+1)
		}
	}
	if len(rest) > 0 {
		return Header{}, 0, errorf("v1: %q after the destination port", rest)
	}

	parse := parseIPv4
	if proto[3] == '6' {
		parse = parseIPv6
	}
	src, ok := parse(f[0])
	if !ok {
		return Header{}, 0, errorf("v1: source address %q is not %s", f[0], family(proto))
	}
	dst, ok := parse(f[1])
	if !ok {
		return Header{}, 0, errorf("v1: destination address %q is not %s", f[1], family(proto))
	}
	sport, ok := parsePort(f[2])
	if !ok {
		return Header{}, 0, errorf("v1: source port %q is not a decimal 0-65535 without leading zeros", f[2])
	}
	dport, ok := parsePort(f[3])
	if !ok {
		return Header{}, 0, errorf("v1: destination port %q is not a decimal 0-65535 without leading zeros", f[3])
	}
	return Header{
		Version: 1,
		Source:  netip.AddrPortFrom(src, sport),
		Dest:    netip.AddrPortFrom(dst, dport),
	}, n, nil
}

// cut splits s at its first space, which stays at the start of rest (rest
// is empty if s has no space).
func cut(s []byte) (field, rest []byte) {
	for i, c := range s {
		if c == ' ' {
			return s[:i], s[i:]
		}
	}
	return s, nil
}

func family(proto []byte) string {
	if proto[3] == '6' {
		return "an IPv6 address"
	}
	return "a dotted-quad IPv4 address without leading zeros"
}

// parsePort parses a decimal port: 1 to 5 digits, no leading zero, at most
// 65535.
func parsePort(s []byte) (uint16, bool) {
	if len(s) == 0 || len(s) > 5 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	v := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	if v > 65535 {
		return 0, false
	}
	return uint16(v), true
}

// parseIPv4 parses exactly four decimal numbers 0-255 without leading
// zeros, separated by single dots (section 2.1).
func parseIPv4(s []byte) (netip.Addr, bool) {
	var a [4]byte
	i := 0
	for k := range a {
		if k > 0 {
			if i == len(s) || s[i] != '.' {
				return netip.Addr{}, false
			}
			i++
		}
		start, v := i, 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' && i-start < 3 {
			v = v*10 + int(s[i]-'0')
			i++
		}
		if i == start || v > 255 || (s[start] == '0' && i-start > 1) {
			return netip.Addr{}, false
		}
		a[k] = byte(v)
	}
	if i != len(s) {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4(a), true
}

// parseIPv6 parses an IPv6 address in the text forms of RFC 4291 section
// 2.2: eight groups of one to four hex digits (either case), one "::"
// standing for one or more groups of zeros, and optionally a dotted IPv4
// address as the last 32 bits (inet_ntop writes ::ffff:192.0.2.1, which
// HAProxy sends when the two ends' families differ). Zones are refused.
func parseIPv6(s []byte) (netip.Addr, bool) {
	var ip [16]byte
	ellipsis := -1 // where "::" is, in bytes of ip
	i := 0
	if len(s) >= 2 && s[0] == ':' && s[1] == ':' {
		ellipsis = 0
		s = s[2:]
		if len(s) == 0 {
			return netip.IPv6Unspecified(), true
		}
	}
	for i < 16 {
		off, acc := 0, 0
		for off < len(s) && off < 5 {
			d := unhex(s[off])
			if d < 0 {
				break
			}
			acc = acc<<4 | d
			off++
		}
		if off == 0 || off > 4 {
			return netip.Addr{}, false
		}
		if off < len(s) && s[off] == '.' {
			// The dotted IPv4 part ends the address (if it ends it
			// early without a "::", the check after the loop refuses it).
			if i+4 > 16 {
				return netip.Addr{}, false
			}
			v4, ok := parseIPv4(s)
			if !ok {
				return netip.Addr{}, false
			}
			a4 := v4.As4()
			copy(ip[i:], a4[:])
			i += 4
			s = nil
			break
		}
		ip[i], ip[i+1] = byte(acc>>8), byte(acc)
		i += 2
		s = s[off:]
		if len(s) == 0 {
			break
		}
		if s[0] != ':' || len(s) == 1 {
			return netip.Addr{}, false
		}
		s = s[1:]
		if s[0] == ':' {
			if ellipsis >= 0 {
				return netip.Addr{}, false
			}
			ellipsis = i
			s = s[1:]
			if len(s) == 0 {
				break
			}
		}
	}
	if len(s) != 0 {
		return netip.Addr{}, false
	}
	if i < 16 {
		if ellipsis < 0 {
			return netip.Addr{}, false
		}
		n := 16 - i
		copy(ip[ellipsis+n:], ip[ellipsis:i])
		clear(ip[ellipsis : ellipsis+n])
	} else if ellipsis >= 0 {
		return netip.Addr{}, false // "::" must stand for at least one group
	}
	return netip.AddrFrom16(ip), true
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// AppendV1 appends h as a v1 header to b, the way HAProxy's send-proxy
// writes it: "PROXY UNKNOWN\r\n" when h.Local is set or an address is
// missing, TCP4 when both addresses are IPv4, else TCP6 with any IPv4
// address written IPv4-mapped. Zones are dropped.
func AppendV1(b []byte, h Header) []byte {
	if h.Local || !h.Source.Addr().IsValid() || !h.Dest.Addr().IsValid() {
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	src, dst := h.Source.Addr().WithZone(""), h.Dest.Addr().WithZone("")
	if src.Is4() && dst.Is4() {
		b = append(b, "PROXY TCP4 "...)
	} else {
		b = append(b, "PROXY TCP6 "...)
		src, dst = netip.AddrFrom16(src.As16()), netip.AddrFrom16(dst.As16())
	}
	b = src.AppendTo(b)
	b = append(b, ' ')
	b = dst.AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(h.Source.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(h.Dest.Port()), 10)
	return append(b, "\r\n"...)
}
