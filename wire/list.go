package wire

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
)

// Entry is one directory entry in a LIST body.
type Entry struct {
	Kind  Kind
	Name  string
	Size  int64
	MTime int64 // Unix nanoseconds
}

// AppendEntry appends the encoding of e to b.
func AppendEntry(b []byte, e *Entry) []byte {
	b = append(b, byte(e.Kind))
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.Name)))
	b = binary.BigEndian.AppendUint64(b, uint64(e.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(e.MTime))
	return append(b, e.Name...)
}

// ValidName reports whether name may appear in a LIST body: one path
// component, so a client can join it to a local directory safely.
func ValidName(name string) bool {
	return name != "" && name != "." && name != ".." && len(name) <= MaxName &&
		strings.IndexByte(name, '/') < 0 && strings.IndexByte(name, 0) < 0
}

// ReadList reads a LIST body of exactly n bytes. It reads the body whole
// (n is at most MaxListBody), checks every entry, then decodes them into
// one slice of exactly the right length whose names share one string: the
// decoded form of a body of the shortest entries takes about four times
// the body (the body, the names' string, 40-byte entries), never more.
func ReadList(r io.Reader, n int64) ([]Entry, error) {
	if n < 0 || n > MaxListBody {
		return nil, errorf(StatusBadRequest, "list body is %d bytes, the limit is %d", n, MaxListBody)
	}
	body := make([]byte, n)
	if err := readFull(r, body, "list body"); err != nil {
		if err == io.EOF {
			err = fmt.Errorf("list body: %w", ErrTruncated)
		}
		return nil, err
	}
	count, err := checkList(body)
	if err != nil {
		return nil, err
	}
	all := string(body)
	out := make([]Entry, 0, count)
	for p := 0; p < len(all); {
		l := int(binary.BigEndian.Uint16(body[p+1:]))
		out = append(out, Entry{
			Kind:  Kind(body[p]),
			Size:  int64(binary.BigEndian.Uint64(body[p+3:])),
			MTime: int64(binary.BigEndian.Uint64(body[p+11:])),
			Name:  all[p+EntryHeaderLen : p+EntryHeaderLen+l],
		})
		p += EntryHeaderLen + l
	}
	return out, nil
}

// checkList validates a LIST body and counts its entries.
func checkList(b []byte) (int, error) {
	count := 0
	for len(b) > 0 {
		if len(b) < EntryHeaderLen {
			return 0, errorf(StatusBadRequest, "list body ends inside an entry header")
		}
		kind := Kind(b[0])
		l := int(binary.BigEndian.Uint16(b[1:]))
		size := binary.BigEndian.Uint64(b[3:])
		b = b[EntryHeaderLen:]
		if l == 0 || l > MaxName || l > len(b) {
			return 0, errorf(StatusBadRequest, "list entry name length %d is invalid", l)
		}
		if size > math.MaxInt64 {
			return 0, errorf(StatusBadRequest, "list entry size out of range")
		}
		name := b[:l]
		b = b[l:]
		if !ValidName(string(name)) {
			return 0, errorf(StatusBadRequest, "list entry name %q is not a single path component", name)
		}
		if kind < KindFile || kind > KindOther {
			return 0, errorf(StatusBadRequest, "list entry %q has unknown kind %d", name, uint8(kind))
		}
		count++
	}
	return count, nil
}
