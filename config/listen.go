package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// ProxyPrefix marks a listen address whose connections start with a
// PROXY protocol header (docs/PROXY.md): "proxy:127.0.0.1:7071".
const ProxyPrefix = "proxy:"

// SplitListen splits a listen entry into its address and whether it is a
// PROXY protocol listener.
func SplitListen(a string) (addr string, proxy bool) {
	addr, proxy = strings.CutPrefix(a, ProxyPrefix)
	return addr, proxy
}

// CheckListen validates a listen entry: an address, optionally written
// proxy:ADDR.
func CheckListen(a string) error {
	addr, _ := SplitListen(a)
	return CheckAddr(addr)
}

// ParseTrusted parses proxy_trusted: CIDR prefixes ("10.0.0.0/8") or
// single addresses ("192.0.2.7", the same as "192.0.2.7/32"). IPv4
// prefixes also match IPv4-mapped IPv6 addresses, and an entry written
// IPv4-mapped ("::ffff:192.0.2.7", "::ffff:192.0.2.0/120") is its IPv4
// form: peers are matched unmapped.
func ParseTrusted(nets []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, n := range nets {
		if strings.Contains(n, "/") {
			p, err := netip.ParsePrefix(n)
			if err != nil {
				return nil, fmt.Errorf("%q is not a network like \"10.0.0.0/8\" or an address", n)
			}
			if p != p.Masked() {
				return nil, fmt.Errorf("%q has bits set past its prefix length: write %s", n, p.Masked())
			}
			out = append(out, unmapPrefix(p))
			continue
		}
		a, err := netip.ParseAddr(n)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is not a network like \"10.0.0.0/8\" or an address", n)
		}
		out = append(out, unmapPrefix(netip.PrefixFrom(a, a.BitLen())))
	}
	return out, nil
}

// unmapPrefix turns an IPv4-mapped prefix (::ffff:a.b.c.d/96 or longer)
// into its IPv4 form; other prefixes are returned as they are.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

// CheckAddr validates a listen address ("host:port", "[::1]:port", ":port").
func CheckAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("bad address %q: %v", a, err)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("bad address %q: host must be an IP address", a)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("bad address %q: bad port", a)
	}
	return nil
}
