package e2e

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// --- raw protocol helpers ---

func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sendReq(t testing.TB, c net.Conn, q *wire.Request) {
	t.Helper()
	if _, err := c.Write(wire.AppendRequest(nil, q)); err != nil {
		t.Fatal(err)
	}
}

// readResp reads a response header byte by byte-exact from c (no buffering,
// so the body stays in the socket for the caller).
func readResp(t testing.TB, c net.Conn) wire.Response {
	t.Helper()
	r, err := wire.ReadResponse(c)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return r
}

func readFull(t testing.TB, c net.Conn) (wire.Response, []byte) {
	t.Helper()
	r := readResp(t, c)
	body := make([]byte, r.BodyLen)
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("read body: %v", err)
	}
	return r, body
}

func rawHeader(pathLen int, off, length uint64) []byte {
	b := []byte{'Z', 'Q', wire.Version, byte(wire.OpGet)}
	b = binary.BigEndian.AppendUint16(b, uint16(pathLen))
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint64(b, length)
}
