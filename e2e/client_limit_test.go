package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
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
