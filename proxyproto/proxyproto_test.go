package proxyproto

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"net/netip"
	"strings"
	"testing"
)

// after is what a client sends after the header; Parse must leave it alone.
const after = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"

// v2 builds a v2 header from its 13th and 14th bytes and the bytes after the
// fixed header, with the length field counting them.
func v2(verCmd, fam byte, body ...string) string {
	return v2len(verCmd, fam, len(strings.Join(body, "")), body...)
}

// v2len is v2 with a length field that need not match the body.
func v2len(verCmd, fam byte, l int, body ...string) string {
	b := []byte(sigV2)
	b = append(b, verCmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(l))
	return string(b) + strings.Join(body, "")
}

// tlv encodes one TLV.
func tlv(typ byte, val string) string {
	return string(binary.BigEndian.AppendUint16([]byte{typ}, uint16(len(val)))) + val
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// Address blocks.
var (
	addr4     = "\xc0\x00\x02\x01" + "\xc6\x33\x64\x07" + "\xdc\x04" + "\x01\xbb" // 192.0.2.1:56324 198.51.100.7:443
	addr6     = "\x20\x01\x0d\xb8" + strings.Repeat("\x00", 11) + "\x01" + "\x20\x01\x0d\xb8" + strings.Repeat("\x00", 11) + "\x07" + "\xdc\x04" + "\x01\xbb"
	hdr4      = Header{Version: 2, Source: ap("192.0.2.1:56324"), Dest: ap("198.51.100.7:443")}
	hdr6      = Header{Version: 2, Source: ap("[2001:db8::1]:56324"), Dest: ap("[2001:db8::7]:443")}
	localV1   = Header{Version: 1, Local: true}
	localV2   = Header{Version: 2, Local: true}
	unixAddrs = strings.Repeat("s", 108) + strings.Repeat("d", 108)
)

// withCRC returns the v2 header h (whose TLVs end with a CRC32C TLV) with
// the checksum filled in.
func withCRC(h string) string {
	b := []byte(h)
	binary.BigEndian.PutUint32(b[len(b)-4:], crc32c(b, len(b)-4))
	return string(b)
}

// The header HAProxy 2.x sent in front of an HTTP request, as captured with
// netcat (github.com/seriousben/experiment-proxy-protocol, README.md):
// send-proxy-v2 from 172.19.0.1:42578 to 172.19.0.3:80.
var haproxyV2, _ = hex.DecodeString("0d0a0d0a000d0a515549540a2111000cac130001ac130003a6520050")

type parseCase struct {
	name string
	in   string
	want Header
	// err is "" for success, else ErrIncomplete, ErrNotProxy or ErrTooLong
	// by name, or a part of the *Error's message.
	err string
}

func valid() []parseCase {
	ffff := strings.TrimSuffix(strings.Repeat("ffff:", 8), ":")
	return []parseCase{
		{name: "v1 TCP4", in: "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
			want: Header{Version: 1, Source: ap("192.168.0.1:56324"), Dest: ap("192.168.0.11:443")}},
		{name: "v1 TCP4 longest", in: "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
			want: Header{Version: 1, Source: ap("255.255.255.255:65535"), Dest: ap("255.255.255.255:65535")}},
		{name: "v1 TCP4 zeros", in: "PROXY TCP4 0.0.0.0 10.0.0.100 0 0\r\n",
			want: Header{Version: 1, Source: ap("0.0.0.0:0"), Dest: ap("10.0.0.100:0")}},
		{name: "v1 TCP6", in: "PROXY TCP6 2001:db8::1 2001:db8::7 56324 443\r\n",
			want: Header{Version: 1, Source: ap("[2001:db8::1]:56324"), Dest: ap("[2001:db8::7]:443")}},
		{name: "v1 TCP6 longest, upper case", in: "PROXY TCP6 " + strings.ToUpper(ffff) + " " + ffff + " 65535 65535\r\n",
			want: Header{Version: 1, Source: ap("[" + ffff + "]:65535"), Dest: ap("[" + ffff + "]:65535")}},
		{name: "v1 TCP6 four-digit groups", in: "PROXY TCP6 2001:0db8:0000:0000:0000:0000:0000:0001 1:2:3:4:5:6:7:8 1 2\r\n",
			want: Header{Version: 1, Source: ap("[2001:db8::1]:1"), Dest: ap("[1:2:3:4:5:6:7:8]:2")}},
		{name: "v1 TCP6 unspecified and loopback", in: "PROXY TCP6 :: ::1 1 2\r\n",
			want: Header{Version: 1, Source: ap("[::]:1"), Dest: ap("[::1]:2")}},
		{name: "v1 TCP6 trailing ellipsis", in: "PROXY TCP6 1:: 1:2:3:4:5:6:7:: 1 2\r\n",
			want: Header{Version: 1, Source: ap("[1::]:1"), Dest: ap("[1:2:3:4:5:6:7:0]:2")}},
		{name: "v1 TCP6 IPv4-mapped (HAProxy, mixed families)", in: "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::7 56324 443\r\n",
			want: Header{Version: 1, Source: ap("[::ffff:192.0.2.1]:56324"), Dest: ap("[2001:db8::7]:443")}},
		{name: "v1 TCP6 embedded IPv4", in: "PROXY TCP6 1:2:3:4:5:6:7.8.9.10 64:ff9b::192.0.2.33 1 2\r\n",
			want: Header{Version: 1, Source: ap("[1:2:3:4:5:6:708:90a]:1"), Dest: ap("[64:ff9b::c000:221]:2")}},
		{name: "v1 UNKNOWN", in: "PROXY UNKNOWN\r\n", want: localV1},
		{name: "v1 UNKNOWN longest", in: "PROXY UNKNOWN " + ffff + " " + ffff + " 65535 65535\r\n", want: localV1},
		{name: "v1 UNKNOWN rest ignored", in: "PROXY UNKNOWN  anything\x00\xff at all \r\n", want: localV1},

		{name: "v2 HAProxy capture", in: string(haproxyV2),
			want: Header{Version: 2, Source: ap("172.19.0.1:42578"), Dest: ap("172.19.0.3:80")}},
		{name: "v2 PROXY TCP4", in: v2(0x21, 0x11, addr4), want: hdr4},
		{name: "v2 PROXY TCP6", in: v2(0x21, 0x21, addr6), want: hdr6},
		{name: "v2 PROXY TCP6 IPv4-mapped", in: v2(0x21, 0x21, strings.Repeat("\x00", 10)+"\xff\xff\xc0\x00\x02\x01"+addr6[16:]),
			want: Header{Version: 2, Source: ap("[::ffff:192.0.2.1]:56324"), Dest: ap("[2001:db8::7]:443")}},
		{name: "v2 LOCAL (HAProxy health check)", in: v2(0x20, 0x00), want: localV2},
		{name: "v2 LOCAL with addresses", in: v2(0x20, 0x11, addr4), want: localV2},
		{name: "v2 LOCAL TCP4 without addresses", in: v2(0x20, 0x11), want: localV2},
		{name: "v2 LOCAL block not interpreted", in: v2(0x20, 0x21, "\x03\xff\xffjunk", tlv(typeCRC32C, "bad!")), want: localV2},
		{name: "v2 PROXY UNSPEC", in: v2(0x21, 0x00), want: localV2},
		{name: "v2 PROXY UNSPEC block skipped", in: v2(0x21, 0x00, "\x01\x02\x03\x04\x05"), want: localV2},
		{name: "v2 PROXY UDP4 as UNSPEC", in: v2(0x21, 0x12, addr4), want: localV2},
		{name: "v2 PROXY UDP6 as UNSPEC", in: v2(0x21, 0x22, addr6, tlv(0x04, "")), want: localV2},
		{name: "v2 PROXY UNIX stream as UNSPEC", in: v2(0x21, 0x31, unixAddrs), want: localV2},
		{name: "v2 PROXY UNIX datagram as UNSPEC", in: v2(0x21, 0x32, unixAddrs), want: localV2},
		{name: "v2 TCP4 with TLVs", in: v2(0x21, 0x11, addr4,
			tlv(0x01, "h2"), tlv(0x02, "example.com"), tlv(0x04, ""), tlv(0x05, "id-1"),
			tlv(0x20, "\x01\x00\x00\x00\x00"+tlv(0x21, "TLSv1.3")+tlv(0x23, "TLS_AES_128_GCM_SHA256")),
			tlv(0xe0, "custom"), tlv(0xff, "")), want: hdr4},
		{name: "v2 TCP6 with CRC32C", in: withCRC(v2(0x21, 0x21, addr6, tlv(0x02, "example.com"), tlv(typeCRC32C, "\x00\x00\x00\x00"))), want: hdr6},
		{name: "v2 at MaxHeader", in: v2(0x21, 0x21, addr6, tlv(0x04, strings.Repeat("\x00", MaxHeader-16-36-3))), want: hdr6},
	}
}

func malformed() []parseCase {
	return []parseCase{
		{name: "empty", in: "", err: "ErrIncomplete"},
		{name: "HTTP", in: "GET / HTTP/1.1\r\n", err: "ErrNotProxy"},
		{name: "HTTP first byte", in: "G", err: "ErrNotProxy"},
		{name: "TLS", in: "\x16\x03\x01\x02\x00", err: "ErrNotProxy"},
		{name: "HTTP/2 preface", in: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", err: "ErrNotProxy"},
		{name: "lower case", in: "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", err: "ErrNotProxy"},
		{name: "PROXY without space", in: "PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", err: "ErrNotProxy"},
		{name: "PROXY CRLF", in: "PROXY\r\n", err: "ErrNotProxy"},
		{name: "v2 signature wrong", in: "\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + addr4, err: "ErrNotProxy"},
		{name: "CRLF", in: "\r\n\r\n", err: "ErrIncomplete"},
		{name: "CRLF then text", in: "\r\nGET", err: "ErrNotProxy"},

		{name: "v1 prefix", in: "PROXY TCP4 192.168.0.1 192.168", err: "ErrIncomplete"},
		{name: "v1 CR at end", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", err: "ErrIncomplete"},
		{name: "v1 LF only", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", err: "LF without CR"},
		{name: "v1 CR only", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rGET", err: "CR without LF"},
		{name: "v1 LF inside UNKNOWN", in: "PROXY UNKNOWN a\nb\r\n", err: "LF without CR"},
		{name: "v1 CR inside UNKNOWN", in: "PROXY UNKNOWN a\rb\r\n", err: "CR without LF"},
		{name: "v1 no CRLF in 107 bytes", in: "PROXY UNKNOWN " + strings.Repeat("x", 92), err: "no CRLF within 107"},
		{name: "v1 CRLF at 108", in: "PROXY UNKNOWN " + strings.Repeat("x", 92) + "\r\n", err: "no CRLF within 107"},
		{name: "v1 one byte short of too long", in: "PROXY UNKNOWN " + strings.Repeat("x", 91), err: "ErrIncomplete"},
		{name: "v1 two spaces after PROXY", in: "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", err: `protocol ""`},
		{name: "v1 unknown protocol", in: "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", err: `protocol "TCP5"`},
		{name: "v1 lower-case protocol", in: "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", err: `protocol "tcp4"`},
		{name: "v1 UNKNOWN suffix", in: "PROXY UNKNOWNX\r\n", err: `protocol "UNKNOWNX"`},
		{name: "v1 empty", in: "PROXY \r\n", err: `protocol ""`},
		{name: "v1 TCP4 alone", in: "PROXY TCP4\r\n", err: "has 0 fields"},
		{name: "v1 three fields", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", err: "has 3 fields"},
		{name: "v1 five fields", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", err: "after the destination port"},
		{name: "v1 trailing space", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", err: "after the destination port"},
		{name: "v1 two spaces", in: "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", err: "empty field 2"},
		{name: "v1 tab", in: "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", err: "has 3 fields"},
		{name: "v1 IPv4 leading zero", in: "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", err: "source address"},
		{name: "v1 IPv4 octet 256", in: "PROXY TCP4 1.2.3.4 5.6.7.256 1 2\r\n", err: "destination address"},
		{name: "v1 IPv4 three octets", in: "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", err: "source address"},
		{name: "v1 IPv4 five octets", in: "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", err: "source address"},
		{name: "v1 IPv4 empty octet", in: "PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n", err: "source address"},
		{name: "v1 IPv4 trailing dot", in: "PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n", err: "source address"},
		{name: "v1 IPv4 four digits", in: "PROXY TCP4 1.2.3.0255 5.6.7.8 1 2\r\n", err: "source address"},
		{name: "v1 IPv4 sign", in: "PROXY TCP4 +1.2.3.4 5.6.7.8 1 2\r\n", err: "source address"},
		{name: "v1 TCP4 with IPv6", in: "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", err: "source address"},
		{name: "v1 TCP4 with IPv4-mapped", in: "PROXY TCP4 1.2.3.4 ::ffff:5.6.7.8 1 2\r\n", err: "destination address"},
		{name: "v1 TCP6 with IPv4", in: "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 zone", in: "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 two ellipses", in: "PROXY TCP6 1::2::3 ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 seven groups", in: "PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 nine groups", in: "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 ellipsis for nothing", in: "PROXY TCP6 1:2:3:4:5:6:7::8 ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 five digits", in: "PROXY TCP6 00001:: ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 trailing colon", in: "PROXY TCP6 1:2:3:4:5:6:7:8: ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 leading colon", in: "PROXY TCP6 :1:2:3:4:5:6:7 ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 triple colon", in: "PROXY TCP6 1:::2 ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 not hex", in: "PROXY TCP6 ::g ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 brackets", in: "PROXY TCP6 [::1] ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 IPv4 not last", in: "PROXY TCP6 ::1.2.3.4:1 ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 IPv4 too early", in: "PROXY TCP6 1:2:3:4:5:1.2.3.4 ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 IPv4 leading zero", in: "PROXY TCP6 ::ffff:1.2.3.04 ::1 1 2\r\n", err: "source address"},
		{name: "v1 TCP6 IPv4 fills nothing", in: "PROXY TCP6 1:2:3:4:5:6::1.2.3.4 ::1 1 2\r\n", err: "source address"},
		{name: "v1 port too big", in: "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", err: "source port"},
		{name: "v1 port leading zero", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n", err: "destination port"},
		{name: "v1 port double zero", in: "PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", err: "source port"},
		{name: "v1 port sign", in: "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", err: "source port"},
		{name: "v1 port negative", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", err: "destination port"},
		{name: "v1 port hex", in: "PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n", err: "source port"},
		{name: "v1 port six digits", in: "PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", err: "source port"},

		{name: "v2 signature only", in: sigV2, err: "ErrIncomplete"},
		{name: "v2 fixed header short", in: v2(0x21, 0x11, addr4)[:15], err: "ErrIncomplete"},
		{name: "v2 addresses short", in: v2(0x21, 0x11, addr4)[:27], err: "ErrIncomplete"},
		{name: "v2 TLV short", in: v2(0x21, 0x11, addr4, tlv(0x02, "example.com"))[:35], err: "ErrIncomplete"},
		{name: "v2 version 1", in: v2(0x11, 0x11, addr4), err: "version 1"},
		{name: "v2 version 0", in: v2(0x01, 0x11, addr4), err: "version 0"},
		{name: "v2 version 3", in: v2(0x31, 0x11, addr4), err: "version 3"},
		{name: "v2 command 2", in: v2(0x22, 0x11, addr4), err: "command 2"},
		{name: "v2 command 15", in: v2(0x2f, 0x11, addr4), err: "command 15"},
		{name: "v2 family 4", in: v2(0x21, 0x41, addr4), err: "0x41 is not"},
		{name: "v2 protocol 3", in: v2(0x21, 0x13, addr4), err: "0x13 is not"},
		{name: "v2 INET UNSPEC", in: v2(0x21, 0x10, addr4), err: "0x10 is not"},
		{name: "v2 UNSPEC STREAM", in: v2(0x21, 0x01), err: "0x01 is not"},
		{name: "v2 LOCAL bad family", in: v2(0x20, 0xff), err: "0xff is not"},
		{name: "v2 TCP4 block short", in: v2(0x21, 0x11, addr4[:11]), err: "11 bytes, family and protocol 0x11 need 12"},
		{name: "v2 TCP4 block short, early", in: v2(0x21, 0x11, addr4[:11])[:16], err: "need 12"},
		{name: "v2 TCP6 with TCP4 block", in: v2(0x21, 0x21, addr4), err: "need 36"},
		{name: "v2 UDP6 block short", in: v2(0x21, 0x22, addr4), err: "need 36"},
		{name: "v2 UNIX block short", in: v2(0x21, 0x31, addr6), err: "need 216"},
		{name: "v2 TLV header cut", in: v2(0x21, 0x11, addr4, "\x01\x00"), err: "too short for a TLV"},
		{name: "v2 TLV value past end", in: v2(0x21, 0x11, addr4, "\x02\x00\x05abcd"), err: "has 5 bytes, only 4 left"},
		{name: "v2 TLV past end after a good one", in: v2(0x21, 0x21, addr6, tlv(0x01, "h2"), "\x02\xff\xffx"), err: "has 65535 bytes"},
		{name: "v2 UDP TLVs checked", in: v2(0x21, 0x12, addr4, "\x01"), err: "too short for a TLV"},
		{name: "v2 CRC32C wrong", in: v2(0x21, 0x11, addr4, tlv(typeCRC32C, "\x01\x02\x03\x04")), err: "CRC32C 0x01020304"},
		{name: "v2 CRC32C short", in: v2(0x21, 0x11, addr4, tlv(typeCRC32C, "\x01\x02\x03")), err: "CRC32C TLV of 3 bytes"},
		{name: "v2 CRC32C over other bytes", in: func() string {
			h := []byte(withCRC(v2(0x21, 0x11, addr4, tlv(typeCRC32C, "\x00\x00\x00\x00"))))
			h[17] ^= 1 // the source address
			return string(h)
		}(), err: "computed"},
		{name: "v2 longest length", in: v2len(0x21, 0x21, 0xffff), err: "ErrTooLong"},
		{name: "v2 one byte too long", in: v2(0x21, 0x21, addr6, tlv(0x04, strings.Repeat("\x00", MaxHeader-16-36-3+1))), err: "ErrTooLong"},
		{name: "v2 LOCAL too long", in: v2len(0x20, 0x00, MaxHeader-16+1), err: "ErrTooLong"},
	}
}

// check compares Parse's result with c.
func check(t *testing.T, c parseCase, in []byte, h Header, n int, err error) {
	t.Helper()
	switch c.err {
	case "":
		if err != nil || h != c.want || n != len(c.in) {
			t.Fatalf("Parse(%q) = %+v, %d, %v; want %+v, %d, nil", in, h, n, err, c.want, len(c.in))
		}
		return
	case "ErrIncomplete", "ErrNotProxy", "ErrTooLong":
		want := map[string]error{"ErrIncomplete": ErrIncomplete, "ErrNotProxy": ErrNotProxy, "ErrTooLong": ErrTooLong}[c.err]
		if err != want {
			t.Fatalf("Parse(%q) = %+v, %d, %v; want %v", in, h, n, err, want)
		}
	default:
		var pe *Error
		if !errors.As(err, &pe) || !strings.Contains(pe.Msg, c.err) {
			t.Fatalf("Parse(%q) = %+v, %d, %v; want an *Error saying %q", in, h, n, err, c.err)
		}
	}
	if h != (Header{}) || n != 0 {
		t.Fatalf("Parse(%q) failed with %v but returned %+v, %d", in, err, h, n)
	}
}

func TestParse(t *testing.T) {
	for _, c := range append(valid(), malformed()...) {
		t.Run(c.name, func(t *testing.T) {
			in := []byte(c.in)
			h, n, err := Parse(in)
			check(t, c, in, h, n, err)
			if string(in) != c.in {
				t.Fatalf("Parse modified its input")
			}
		})
	}
}

// TestParseSplit feeds each valid header, followed by a request, cut at
// every byte: every proper prefix of the header is ErrIncomplete (never a
// premature success), and from its last byte on Parse returns the header,
// with n exact and the request untouched.
func TestParseSplit(t *testing.T) {
	for _, c := range valid() {
		t.Run(c.name, func(t *testing.T) {
			full := []byte(c.in + after)
			for k := range len(full) + 1 {
				h, n, err := Parse(full[:k])
				if k < len(c.in) {
					if err != ErrIncomplete {
						t.Fatalf("Parse of the first %d of %d bytes: %+v, %d, %v; want ErrIncomplete", k, len(c.in), h, n, err)
					}
					continue
				}
				check(t, c, full[:k], h, n, err)
			}
			if string(full) != c.in+after {
				t.Fatalf("Parse modified its input")
			}
		})
	}
}

// TestParseMonotonic feeds each malformed input cut at every byte: a prefix
// is either ErrIncomplete or already the final verdict, and bytes after the
// input do not change the verdict.
func TestParseMonotonic(t *testing.T) {
	for _, c := range malformed() {
		t.Run(c.name, func(t *testing.T) {
			_, _, final := Parse([]byte(c.in))
			full := []byte(c.in + after)
			for k := range len(full) + 1 {
				_, _, err := Parse(full[:k])
				if k >= len(c.in) && c.err == "ErrIncomplete" {
					continue // the request bytes complete or spoil it
				}
				if err != ErrIncomplete && err.Error() != final.Error() {
					t.Fatalf("Parse of the first %d bytes: %v; of all %d: %v", k, err, len(c.in), final)
				}
				if k >= len(c.in) && err.Error() != final.Error() {
					t.Fatalf("Parse with %d bytes after the input: %v; want %v", k-len(c.in), err, final)
				}
			}
		})
	}
}

func TestParseAllocs(t *testing.T) {
	for _, c := range valid() {
		in := []byte(c.in + after)
		if a := testing.AllocsPerRun(100, func() { Parse(in) }); a != 0 {
			t.Errorf("%s: %v allocations per Parse, want 0", c.name, a)
		}
	}
}

func TestAppendV1(t *testing.T) {
	for _, c := range []struct {
		h    Header
		want string
	}{
		{Header{Source: ap("192.168.0.1:56324"), Dest: ap("192.168.0.11:443")}, "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"},
		{Header{Source: ap("[2001:db8::1]:1"), Dest: ap("[2001:db8::7]:65535")}, "PROXY TCP6 2001:db8::1 2001:db8::7 1 65535\r\n"},
		// Mixed families: TCP6 with the IPv4 end mapped, as HAProxy does.
		{Header{Source: ap("192.0.2.1:1"), Dest: ap("[2001:db8::7]:2")}, "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::7 1 2\r\n"},
		{Header{Source: ap("[::ffff:192.0.2.1]:1"), Dest: ap("[::ffff:192.0.2.2]:2")}, "PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 1 2\r\n"},
		{Header{Source: ap("[fe80::1%eth0]:1"), Dest: ap("[fe80::2]:2")}, "PROXY TCP6 fe80::1 fe80::2 1 2\r\n"},
		{Header{Local: true, Source: ap("1.2.3.4:1"), Dest: ap("1.2.3.4:2")}, "PROXY UNKNOWN\r\n"},
		{Header{Source: ap("1.2.3.4:1")}, "PROXY UNKNOWN\r\n"},
		{Header{}, "PROXY UNKNOWN\r\n"},
	} {
		if got := string(AppendV1([]byte("x"), c.h)); got != "x"+c.want {
			t.Errorf("AppendV1(%+v) = %q, want %q", c.h, got, c.want)
		}
	}
}

func TestAppendV2(t *testing.T) {
	for _, c := range []struct {
		h    Header
		tlvs []TLV
		want string
	}{
		{Header{Source: ap("172.19.0.1:42578"), Dest: ap("172.19.0.3:80")}, nil, string(haproxyV2)},
		{hdr4, nil, v2(0x21, 0x11, addr4)},
		{hdr6, nil, v2(0x21, 0x21, addr6)},
		{Header{Source: ap("192.0.2.1:56324"), Dest: ap("[2001:db8::7]:443")}, nil,
			v2(0x21, 0x21, strings.Repeat("\x00", 10)+"\xff\xff\xc0\x00\x02\x01"+addr6[16:])},
		{localV2, nil, v2(0x20, 0x00)},
		{Header{Source: ap("1.2.3.4:1")}, nil, v2(0x20, 0x00)},
		{localV2, []TLV{{0x01, []byte("h2")}}, v2(0x20, 0x00, tlv(0x01, "h2"))},
		{hdr4, []TLV{{0x02, []byte("example.com")}, {0x04, nil}}, v2(0x21, 0x11, addr4, tlv(0x02, "example.com"), tlv(0x04, ""))},
		{hdr6, []TLV{{0x02, []byte("example.com")}, {typeCRC32C, make([]byte, 4)}},
			withCRC(v2(0x21, 0x21, addr6, tlv(0x02, "example.com"), tlv(typeCRC32C, "\x00\x00\x00\x00")))},
	} {
		if got := string(AppendV2([]byte("x"), c.h, c.tlvs...)); got != "x"+c.want {
			t.Errorf("AppendV2(%+v, %v) =\n%x, want\n%x", c.h, c.tlvs, got, "x"+c.want)
		}
	}
}

// TestCRC32C checks the checksum against RFC 3720's check value, and that a
// header AppendV2 checksummed parses and is refused when any byte after the
// fixed header changes.
func TestCRC32C(t *testing.T) {
	// RFC 3720 section B.4: the CRC32c of "123456789" is 0xe3069283.
	if got := crc32.Checksum([]byte("123456789"), castagnoli); got != 0xe3069283 {
		t.Fatalf("CRC32c of 123456789 = 0x%08x, want 0xe3069283", got)
	}
	if got, want := crc32c([]byte("12345xxxx9"), 5), crc32.Checksum([]byte("12345\x00\x00\x00\x009"), castagnoli); got != want {
		t.Fatalf("crc32c with the field taken as zero = 0x%08x, want 0x%08x", got, want)
	}
	b := AppendV2(nil, hdr6, TLV{0x05, []byte("unique")}, TLV{typeCRC32C, make([]byte, 4)})
	if h, n, err := Parse(b); err != nil || h != hdr6 || n != len(b) {
		t.Fatalf("Parse = %+v, %d, %v", h, n, err)
	}
	for i := 16; i < len(b); i++ {
		if i == len(b)-7 {
			continue // the CRC32C TLV's type: without it nothing is checked
		}
		bad := bytes.Clone(b)
		bad[i] ^= 0x40
		if _, _, err := Parse(bad); err == nil {
			t.Errorf("byte %d changed, header still accepted", i)
		}
	}
}

// TestAppendV2Panics checks that a header too long for the length field is
// refused rather than written with a wrapped length.
func TestAppendV2Panics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatalf("AppendV2 of a 65536-byte TLV did not panic")
		}
	}()
	AppendV2(nil, hdr4, TLV{0xe0, make([]byte, 0x10000)})
}

func TestParseIPv6MatchesNetip(t *testing.T) {
	for _, s := range []string{
		"::", "::1", "1::", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8",
		"::ffff:1.2.3.4", "1:2:3:4:5:6:1.2.3.4", "::1.2.3.4", "1::1.2.3.4", "FFFF::fFfF",
		"1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "1::2::3", ":::", "1:::2", "::1:", ":1::", "1.2.3.4",
		"::1.2.3", "::1.2.3.4.5", "::01.2.3.4", "::256.1.1.1", "12345::", "::fe80::1", "fe80::1%1",
		"1:2:3:4:5:6:7::8", "::1.2.3.4:1", "", ":", "0000:0000:0000:0000:0000:0000:0000:0000",
	} {
		got, ok := parseIPv6([]byte(s))
		want, err := netip.ParseAddr(s)
		wantOK := err == nil && want.Is6() && want.Zone() == ""
		if ok != wantOK || (ok && got != want) {
			t.Errorf("parseIPv6(%q) = %v, %v; netip.ParseAddr: %v, %v", s, got, ok, want, err)
		}
	}
}

func TestErrorMessage(t *testing.T) {
	_, _, err := Parse([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n"))
	want := `proxyproto: v1: source port "99999" is not a decimal 0-65535 without leading zeros`
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want %s", err, want)
	}
}
