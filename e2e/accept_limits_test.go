package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// listenQueue is the number of connections queued on the listening
// socket at addr (127.0.0.1:port) and not accepted yet: the rx_queue of
// its LISTEN line in /proc/net/tcp.
func listenQueue(t *testing.T, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	local := fmt.Sprintf("0100007F:%04X", p)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || f[1] != local || f[3] != "0A" {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, err := strconv.ParseUint(rx, 16, 32)
		if err != nil {
			t.Fatal(err)
		}
		return int(n)
	}
	t.Fatalf("no listening socket %s in /proc/net/tcp", local)
	return 0
}

// queuedGet sends a GET on a new connection and reads the response in the
// background: its sha256, or the error, on done.
func queuedGet(t *testing.T, addr, path string) <-chan string {
	t.Helper()
	c := dial(t, addr)
	t.Cleanup(func() { c.Close() })
	sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: path})
	done := make(chan string, 1)
	go func() {
		br := bufio.NewReader(c)
		r, err := wire.ReadResponse(br)
		if err != nil || r.Status != wire.StatusOK {
			done <- fmt.Sprintf("error: %+v %v", r, err)
			return
		}
		h := sha256.New()
		if _, err := io.CopyN(h, br, r.BodyLen); err != nil {
			done <- "error: " + err.Error()
			return
		}
		done <- hex.EncodeToString(h.Sum(nil))
	}()
	return done
}

// TestAcceptModeReloadMaxConnections: max_connections holds for the
// server across a reload's overlap in the accept mode, as in the handoff
// mode. With max_connections = 2 and the old generation draining two
// transfers, the new generation accepts nothing: new connections wait in
// the listen backlog, and each is accepted as an old transfer ends. (Each
// generation used to admit up to the limit: 4 at once.)
func TestAcceptModeReloadMaxConnections(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	small := WriteRandom(t, filepath.Join(root, "small.bin"), 100<<10)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1,
		Config: acceptConf + "max_connections = 2\ndrain_timeout = \"60s\"\n"})
	gate := make(chan struct{}) // never opened: the old transfers are ended by closing them
	olds := []*slowGet{startSlowGet(t, d.Addr, "/big.bin", gate), startSlowGet(t, d.Addr, "/big.bin", gate)}
	d.WaitStatus(5*time.Second, "2 transfers", func(st *ctlStatus) bool { return len(st.Transfers) == 2 })
	if r := d.Zctl("reload"); r.Code != 0 || !strings.Contains(r.Stdout, "generation 2 serving") {
		t.Fatalf("reload: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if !waitFor(10*time.Second, func() bool { return stoppedAccepting(d) == 1 }) {
		t.Fatalf("the old generation did not stop accepting:\n%s", tail(d.Log(), 20))
	}
	news := []<-chan string{queuedGet(t, d.Addr, "/small.bin"), queuedGet(t, d.Addr, "/small.bin")}
	if !waitFor(10*time.Second, func() bool { return listenQueue(t, d.Addr) == 2 }) {
		st := d.MustStatus()
		t.Fatalf("the new connections were not left in the backlog (queue %d, %d active at max_connections 2)",
			listenQueue(t, d.Addr), st.Totals.Active)
	}
	// got returns the next response of either new connection; the one
	// that answered is then waited for no more (a nil channel).
	got := func() string {
		t.Helper()
		select {
		case s := <-news[0]:
			news[0] = nil
			return s
		case s := <-news[1]:
			news[1] = nil
			return s
		case <-time.After(20 * time.Second):
			t.Fatalf("no new connection served (queue %d)", listenQueue(t, d.Addr))
			return ""
		}
	}
	for i, old := range olds {
		old.c.Close()
		if s := got(); s != small {
			t.Fatalf("new connection %d: %s", i, s)
		}
		if i == 0 {
			if !waitFor(10*time.Second, func() bool { return listenQueue(t, d.Addr) == 1 }) {
				t.Fatalf("queue %d after one old transfer ended, want 1", listenQueue(t, d.Addr))
			}
			// One old transfer and one new connection (kept alive): the
			// other new one waits.
			if st := d.MustStatus(); st.Totals.Active > 2 {
				t.Fatalf("%d active at max_connections 2", st.Totals.Active)
			}
			select {
			case s := <-news[0]:
				t.Fatalf("the second new connection was served (%s) while the old transfer held its place", s)
			case s := <-news[1]:
				t.Fatalf("the second new connection was served (%s) while the old transfer held its place", s)
			default:
			}
		}
	}
}
