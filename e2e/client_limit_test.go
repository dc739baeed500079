package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// dialFrom connects to addr from the loopback address src (any 127/8
// address is a different client to the server).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	dl := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := dl.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// halfSent opens a connection from src and sends the first bytes of a
// request, which a worker then waits for until header_timeout.
func halfSent(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	c := dialFrom(t, src, addr)
	if _, err := c.Write(wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/f.bin"})[:6]); err != nil {
		t.Fatal(err)
	}
	return c
}

// wantBusy reads a native busy answer with msg from c.
func wantBusy(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r, err := wire.ReadResponse(c)
	if err != nil || r.Status != wire.StatusBusy || r.Message != msg {
		t.Fatalf("got %+v %v, want busy %q", r, err, msg)
	}
}

// TestMaxConnectionsPerClient: a client holding half-sent requests up to
// max_connections_per_client gets "too many connections from your
// address" past it (HTTP: 503), while another address still downloads;
// max_connections is refused with its own message; the count ends with
// the connections.
func TestMaxConnectionsPerClient(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "f.bin"), 256<<10)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2,
		Config: "max_connections = 6\nmax_connections_per_client = 4\nheader_timeout = \"60s\"\n"})
	active := func(n int) {
		t.Helper()
		d.WaitStatus(10*time.Second, "connections held", func(st *ctlStatus) bool { return st.Totals.Active == n })
	}
	var hog []net.Conn
	for range 4 {
		hog = append(hog, halfSent(t, "127.0.0.1", d.Addr))
	}
	active(4)
	for range 2 {
		wantBusy(t, halfSent(t, "127.0.0.1", d.Addr), "busy: too many connections from your address, retry shortly")
	}
	h := dialFrom(t, "127.0.0.1", d.Addr)
	h.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := h.Write([]byte("GET /f.bin HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(h), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !resp.Close {
		t.Fatalf("HTTP past the limit: %+v %v; want 503 with Retry-After, closing", resp, err)
	}
	if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), "too many connections from your address") {
		t.Errorf("503 body %q", b)
	}

	// Another address is served meanwhile. It keeps its connection open,
	// so that what follows does not depend on when its end is counted.
	start := time.Now()
	c := dialFrom(t, "127.0.0.2", d.Addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/f.bin"})
	br := bufio.NewReader(c)
	r, err := wire.ReadResponse(br)
	if err != nil || r.Status != wire.StatusOK {
		t.Fatalf("the other client: %+v %v", r, err)
	}
	body := make([]byte, r.BodyLen)
	if _, err := io.ReadFull(br, body); err != nil || FileSHA256Bytes(body) != sum {
		t.Fatalf("the other client's body: %v", err)
	}
	t.Logf("the other client downloaded in %v", time.Since(start).Round(time.Millisecond))

	// max_connections (6) is its own refusal.
	active(5)
	halfSent(t, "127.0.0.3", d.Addr)
	active(6)
	wantBusy(t, halfSent(t, "127.0.0.4", d.Addr), "busy: max_connections reached, retry shortly")
	c.Close()

	// The count ends with the connections (zfetch would retry a busy
	// answer, but the count has ended before it comes).
	for _, c := range hog {
		c.Close()
	}
	active(1)
	if r := Zfetch(t, "-q", "-o", "-", d.URL("/f.bin")); r.Code != 0 || sha(r.Stdout) != sum {
		t.Fatalf("the first client once its connections closed: %d %s", r.Code, r.Stderr)
	}
}

// TestPerClientCountAfterCrashAndReload: a client's count of connections
// ends with them however they end: cut by a worker's crash, drained with
// an old generation after a reload, killed with one, or closed. After
// each, the client may again hold max_connections_per_client.
func TestPerClientCountAfterCrashAndReload(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Workers: 2, Config: "max_connections_per_client = 2\nheader_timeout = \"60s\"\n"})
	// hold opens two half-sent connections from one address, each again
	// while the supervisor answers busy (it has not yet seen earlier ones
	// end), and fails if that does not stop.
	hold := func() []net.Conn {
		t.Helper()
		var cs []net.Conn
		if !waitFor(10*time.Second, func() bool {
			c := halfSent(t, "127.0.0.5", d.Addr)
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			var ne net.Error
			if _, err := c.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
				// busy (refused, so not counted), or cut by a worker
				// that died as it was handed over
				c.Close()
				return false
			}
			cs = append(cs, c)
			return len(cs) == 2
		}) {
			st, _ := d.Status()
			b, _ := json.Marshal(st.Workers)
			t.Fatalf("the client's count of connections never came back to 0: %d of 2 held; workers %s", len(cs), b)
		}
		return cs
	}
	ends := []struct {
		name string
		end  func(held []net.Conn)
	}{
		{"crash", func([]net.Conn) {
			for _, pid := range WorkerPIDs(d.MustStatus()) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}},
		{"reload, then closed", func(held []net.Conn) {
			if r := d.Zctl("reload"); r.Code != 0 {
				t.Fatalf("reload: %s", r.Stderr)
			}
			for _, c := range held {
				c.Close()
			}
		}},
		{"reload, old generation killed", func([]net.Conn) {
			if r := d.Zctl("reload"); r.Code != 0 {
				t.Fatalf("reload: %s", r.Stderr)
			}
			st := d.MustStatus()
			for _, w := range st.Workers {
				if w.Generation < st.Generation {
					syscall.Kill(w.PID, syscall.SIGKILL)
				}
			}
		}},
		{"closed", func(held []net.Conn) {
			for _, c := range held {
				c.Close()
			}
		}},
	}
	for _, e := range ends {
		held := hold()
		wantBusy(t, halfSent(t, "127.0.0.5", d.Addr), "busy: too many connections from your address, retry shortly")
		e.end(held)
		t.Logf("ended by %s", e.name)
	}
	hold()
}
