package proxyproto

import (
	"net/netip"
	"testing"
)

func benchmarkParse(b *testing.B, hdr []byte) {
	in := append(hdr, after...)
	b.SetBytes(int64(len(hdr)))
	b.ReportAllocs()
	for b.Loop() {
		if _, n, err := Parse(in); err != nil || n != len(hdr) {
			b.Fatalf("Parse: %d, %v", n, err)
		}
	}
}

var (
	benchV4 = Header{Source: netip.MustParseAddrPort("203.0.113.195:56324"), Dest: netip.MustParseAddrPort("198.51.100.7:443")}
	benchV6 = Header{Source: netip.MustParseAddrPort("[2001:db8:85a3:8d3:1319:8a2e:370:7348]:56324"), Dest: netip.MustParseAddrPort("[2001:db8::7]:443")}
)

func BenchmarkParseV1TCP4(b *testing.B) { benchmarkParse(b, AppendV1(nil, benchV4)) }
func BenchmarkParseV1TCP6(b *testing.B) { benchmarkParse(b, AppendV1(nil, benchV6)) }
func BenchmarkParseV2TCP4(b *testing.B) { benchmarkParse(b, AppendV2(nil, benchV4)) }
func BenchmarkParseV2TCP6(b *testing.B) { benchmarkParse(b, AppendV2(nil, benchV6)) }

// BenchmarkParseV2TLVs is a header as HAProxy sends it with
// "proxy-v2-options ssl,authority,unique-id,crc32c".
func BenchmarkParseV2TLVs(b *testing.B) {
	ssl := []byte{0x01, 0, 0, 0, 0} // client: SSL; verify: 0
	ssl = append(ssl, 0x21, 0, 7)
	ssl = append(ssl, "TLSv1.3"...)
	ssl = append(ssl, 0x23, 0, 22)
	ssl = append(ssl, "TLS_AES_128_GCM_SHA256"...)
	benchmarkParse(b, AppendV2(nil, benchV6,
		TLV{typeCRC32C, make([]byte, 4)},
		TLV{0x01, []byte("h2")},
		TLV{0x02, []byte("files.example.com")},
		TLV{0x05, []byte("C0A80001:D5A4_0A0A0A0A:01BB_65B2E5F1_0001:0029")},
		TLV{0x20, ssl}))
}
