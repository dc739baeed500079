package proxyproto

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"
)

// The v2 fixed header: the 12-byte signature, version and command, family
// and protocol, and the big-endian length of what follows (section 2.2).
const v2Fixed = 16

// Commands (the low nibble of byte 13; the high nibble is the version, 2).
const (
	cmdLocal = 0x0
	cmdProxy = 0x1
)

// Address family (high nibble) and transport protocol (low nibble) bytes.
const (
	famUnspec     = 0x00
	famTCP4       = 0x11
	famUDP4       = 0x12
	famTCP6       = 0x21
	famUDP6       = 0x22
	famUnixStream = 0x31
	famUnixDgram  = 0x32
)

// typeCRC32C is PP2_TYPE_CRC32C: a CRC32c of the whole header, computed
// with the TLV's own value zeroed (section 2.2.3).
const typeCRC32C = 0x03

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// addrLen is the size of the address block of each family and protocol the
// specification defines; ok is false for the others.
func addrLen(fam byte) (n int, ok bool) {
	switch fam {
	case famUnspec:
		return 0, true
	case famTCP4, famUDP4:
		return 12, true
	case famTCP6, famUDP6:
		return 36, true
	case famUnixStream, famUnixDgram:
		return 216, true
	}
	return 0, false
}

// parseV2 decodes the binary header (section 2.2). b starts with the 12-byte
// signature. Everything that can be refused from the fixed 16 bytes is
// refused before waiting for the rest.
//
// The family and protocol byte must be one the specification defines, for
// either command. A LOCAL command's address block is skipped whatever it
// holds (the specification says to discard it). A PROXY command for TCP over IPv4 or
// IPv6 gives the addresses; for UNSPEC, UDP or UNIX the connection's own
// addresses apply, as the specification asks of a receiver that does not
// implement those (HAProxy sends only TCP, for mode tcp and http alike).
// After the address block of a PROXY command come TLVs: each must fit in
// the header, and a PP2_TYPE_CRC32C must hold the header's checksum; the
// others are skipped uninterpreted. Under UNSPEC the address block has no
// defined size, so the rest of the header is skipped.
func parseV2(b []byte) (Header, int, error) {
	if len(b) < v2Fixed {
		return Header{}, 0, ErrIncomplete
	}
	if v := b[12] >> 4; v != 2 {
		return Header{}, 0, errorf("v2: version %d in byte 13 (0x%02x), want 2", v, b[12])
	}
	cmd := b[12] & 0xf
	if cmd != cmdLocal && cmd != cmdProxy {
		return Header{}, 0, errorf("v2: command %d in byte 13 (0x%02x) is neither LOCAL (0) nor PROXY (1)", cmd, b[12])
	}
	fam := b[13]
	need, ok := addrLen(fam)
	if !ok {
		return Header{}, 0, errorf("v2: address family and protocol 0x%02x is not one the specification defines", fam)
	}
	l := int(binary.BigEndian.Uint16(b[14:v2Fixed]))
	n := v2Fixed + l
	if n > MaxHeader {
		return Header{}, 0, ErrTooLong
	}
	if cmd == cmdProxy && l < need {
		return Header{}, 0, errorf("v2: address block of %d bytes, family and protocol 0x%02x need %d", l, fam, need)
	}
	if len(b) < n {
		return Header{}, 0, ErrIncomplete
	}
	if cmd == cmdLocal || fam == famUnspec {
		return Header{Version: 2, Local: true}, n, nil
	}
	if err := checkTLVs(b[:n], v2Fixed+need); err != nil {
		return Header{}, 0, err
	}
	a := b[v2Fixed:]
	switch fam {
	case famTCP4:
		return Header{
			Version: 2,
			Source:  netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:])),
			Dest:    netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), binary.BigEndian.Uint16(a[10:])),
		}, n, nil
	case famTCP6:
		return Header{
			Version: 2,
			Source:  netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])), binary.BigEndian.Uint16(a[32:])),
			Dest:    netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[16:32])), binary.BigEndian.Uint16(a[34:])),
		}, n, nil
	}
	return Header{Version: 2, Local: true}, n, nil
}

// checkTLVs walks the TLVs of the header hdr from offset off to its end.
func checkTLVs(hdr []byte, off int) error {
	for off < len(hdr) {
		if len(hdr)-off < 3 {
			return errorf("v2: %d bytes at offset %d are too short for a TLV", len(hdr)-off, off)
		}
		typ, l := hdr[off], int(binary.BigEndian.Uint16(hdr[off+1:]))
		val := off + 3
		if l > len(hdr)-val {
			return errorf("v2: TLV type 0x%02x at offset %d has %d bytes, only %d left in the header", typ, off, l, len(hdr)-val)
		}
		if typ == typeCRC32C {
			if l != 4 {
				return errorf("v2: CRC32C TLV of %d bytes, want 4", l)
			}
			if want, got := binary.BigEndian.Uint32(hdr[val:]), crc32c(hdr, val); got != want {
				return errorf("v2: CRC32C 0x%08x in the header, 0x%08x computed", want, got)
			}
		}
		off = val + l
	}
	return nil
}

// zero4 stands for the checksum field while it is computed (a package
// variable: a local array would escape into crc32.Update and allocate).
var zero4 [4]byte

// crc32c is the checksum of hdr with the 4 bytes at off taken as zero.
func crc32c(hdr []byte, off int) uint32 {
	c := crc32.Update(0, castagnoli, hdr[:off])
	c = crc32.Update(c, castagnoli, zero4[:])
	return crc32.Update(c, castagnoli, hdr[off+4:])
}

// TLV is a type-length-value vector of a v2 header (section 2.2).
type TLV struct {
	Type  byte
	Value []byte
}

// AppendV2 appends h and then tlvs as a v2 header to b, the way HAProxy's
// send-proxy-v2 writes it: a LOCAL command with family UNSPEC when h.Local
// is set or an address is missing, TCP over IPv4 when both addresses are
// IPv4, else TCP over IPv6 with any IPv4 address IPv4-mapped. A CRC32C TLV
// (type 0x03) with a 4-byte value gets the header's checksum, as HAProxy
// computes it. It panics if the header would exceed the 65535 bytes its
// length field can count.
func AppendV2(b []byte, h Header, tlvs ...TLV) []byte {
	start := len(b)
	b = append(b, sigV2...)
	fam, l := byte(famUnspec), 0
	if h.Local || !h.Source.Addr().IsValid() || !h.Dest.Addr().IsValid() {
		b = append(b, 0x20|cmdLocal)
	} else if h.Source.Addr().Is4() && h.Dest.Addr().Is4() {
		b = append(b, 0x20|cmdProxy)
		fam, l = famTCP4, 12
	} else {
		b = append(b, 0x20|cmdProxy)
		fam, l = famTCP6, 36
	}
	for _, t := range tlvs {
		l += 3 + len(t.Value)
	}
	if l > 0xffff {
		panic("proxyproto: AppendV2: header longer than 16+65535 bytes")
	}
	b = append(b, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(l))
	switch fam {
	case famTCP4:
		s, d := h.Source.Addr().As4(), h.Dest.Addr().As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	case famTCP6:
		s, d := h.Source.Addr().As16(), h.Dest.Addr().As16()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	}
	if fam != famUnspec {
		b = binary.BigEndian.AppendUint16(b, h.Source.Port())
		b = binary.BigEndian.AppendUint16(b, h.Dest.Port())
	}
	crc := -1
	for _, t := range tlvs {
		b = append(b, t.Type)
		b = binary.BigEndian.AppendUint16(b, uint16(len(t.Value)))
		if t.Type == typeCRC32C && len(t.Value) == 4 && crc < 0 {
			crc = len(b) - start
		}
		b = append(b, t.Value...)
	}
	if crc >= 0 {
		binary.BigEndian.PutUint32(b[start+crc:], crc32c(b[start:], crc))
	}
	return b
}
