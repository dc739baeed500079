package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// slowGet is a download whose reader holds still until its gate opens, so
// the transfer stays in flight for as long as a test needs.
type slowGet struct {
	c    net.Conn
	done chan error
	sum  string
	n    int64
}

func startSlowGet(t *testing.T, addr, path string, gate <-chan struct{}) *slowGet {
	t.Helper()
	c := dial(t, addr)
	t.Cleanup(func() { c.Close() })
	// A pinned receive buffer (no autotuning) keeps a stalled transfer in
	// flight: otherwise a file of tens of MiB could all fit in the kernel's
	// buffers and the transfer end before the test looks at it.
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.SetReadBuffer(128 << 10); err != nil {
			t.Fatal(err)
		}
	}
	sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: path})
	br := bufio.NewReaderSize(c, 64<<10)
	r, err := wire.ReadResponse(br)
	if err != nil || r.Status != wire.StatusOK {
		t.Fatalf("GET %s: %+v %v", path, r, err)
	}
	g := &slowGet{c: c, done: make(chan error, 1)}
	h := sha256.New()
	// Take the first MiB now, so the transfer is surely under way.
	if _, err := io.CopyN(h, br, 1<<20); err != nil {
		t.Fatal(err)
	}
	go func() {
		<-gate
		// Exactly the body: the connection stays open (keep-alive) after it.
		n, err := io.CopyN(h, br, r.BodyLen-1<<20)
		g.n = 1<<20 + n
		g.sum = hex.EncodeToString(h.Sum(nil))
		if err != nil {
			err = fmt.Errorf("got %d of %d bytes: %w", g.n, r.BodyLen, err)
		}
		g.done <- err
	}()
	return g
}

func (g *slowGet) wait(t *testing.T, want string) {
	t.Helper()
	select {
	case err := <-g.done:
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		if g.sum != want {
			t.Fatalf("download sha256 %s, want %s", g.sum, want)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("download did not finish")
	}
}

// stalledTransfer starts a daemon with o serving a 32 MiB file and one
// download of it whose client stops reading after the first MiB; it
// returns once status shows that transfer.
func stalledTransfer(t *testing.T, o DaemonOpts) (*Daemon, *ctlStatus) {
	t.Helper()
	if o.Root == "" {
		o.Root = shortTempDir(t)
	}
	WriteRandom(t, filepath.Join(o.Root, "big.bin"), 32<<20)
	d := StartDaemon(t, o)
	never := make(chan struct{})
	t.Cleanup(func() { close(never) })
	startSlowGet(t, d.Addr, "/big.bin", never)
	st := d.WaitStatus(5*time.Second, "the transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	return d, st
}
