package e2e

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// TestRefusedInPieces: through the real supervisor (max_connections
// reached), a HEAD whose request line arrives in pieces gets a 503 head
// and no body, a GET whose first byte comes alone its body at once, and
// a native client sending a byte at a time the native refusal; each ends
// with the server's FIN and no reset.
func TestRefusedInPieces(t *testing.T) {
	d := daemonAtLimit(t)
	native := string(wire.AppendRequest(nil, &wire.Request{Op: wire.OpStat, Path: "/small.txt"}))
	for _, tc := range []struct {
		name   string
		pieces []string
		check  func(got string) bool
	}{
		{"HEAD in pieces", []string{"\r\nHE", "AD /small.txt HTTP/1.1\r\nHost: x\r\n\r\n"}, func(got string) bool {
			return strings.HasPrefix(got, "HTTP/1.1 503 ") && strings.HasSuffix(got, "\r\n\r\n") && !strings.Contains(got, "max_connections")
		}},
		{"GET in pieces", []string{"G", "ET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n"}, func(got string) bool {
			return strings.HasPrefix(got, "HTTP/1.1 503 ") && strings.Contains(got, "\r\n\r\nbusy: ")
		}},
		{"native in pieces", []string{native[:1], native[1:2], native[2:]}, func(got string) bool {
			r, err := wire.ReadResponse(strings.NewReader(got))
			return err == nil && r.Status == wire.StatusBusy
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", d.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for i, p := range tc.pieces {
				if i > 0 {
					time.Sleep(100 * time.Millisecond)
				}
				io.WriteString(c, p) // may fail once answered: the check tells
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil || !tc.check(string(got)) {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
}
