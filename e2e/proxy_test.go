package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/proxyproto"
	"github.com/zfs-serve/zfs-serve/wire"
)

// proxyHeader is what HAProxy's send-proxy (v1) or send-proxy-v2 (v2)
// writes for a client at src that reached dst.
func proxyHeader(v int, src, dst string) []byte {
	h := proxyproto.Header{Source: netip.MustParseAddrPort(src), Dest: netip.MustParseAddrPort(dst)}
	if v == 1 {
		return proxyproto.AppendV1(nil, h)
	}
	return proxyproto.AppendV2(nil, h)
}

// stalledProxied starts a download of path through a PROXY header, native
// or HTTP, reads its first bytes and then holds still, so that the
// transfer stays in flight until the test ends.
func stalledProxied(t *testing.T, addr string, header []byte, path string, http bool) {
	t.Helper()
	c := dial(t, addr)
	t.Cleanup(func() { c.Close() })
	if err := c.(*net.TCPConn).SetReadBuffer(128 << 10); err != nil {
		t.Fatal(err)
	}
	req := wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: path})
	if http {
		req = []byte("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(append(header, req...)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 64<<10)); err != nil {
		t.Fatalf("%s through a PROXY header: %v", path, err)
	}
}

// closedWithoutAnswer checks that the daemon closes c without a byte.
func closedWithoutAnswer(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if len(b) != 0 || (err != nil && !isReset(err)) {
		t.Errorf("%s: got %d bytes (%q...), %v; want the connection closed without an answer", what, len(b), b[:min(len(b), 40)], err)
	}
}

// TestProxyListener: on a proxy: listener a connection without a PROXY
// header is closed; v1 and v2 headers sent by hand, with spoofed client
// addresses, are served, and those addresses are the clients in zctl
// status and the access log; malformed headers (truncated, wrong
// signature, too long, bad family) are refused, each with a log line,
// without disturbing the transfers in flight. A plain listener beside it
// is unaffected.
func TestProxyListener(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	plain := freeAddr(t)
	d := StartDaemon(t, DaemonOpts{Root: root, Listen: "proxy:127.0.0.1:0", Workers: 2,
		Config: fmt.Sprintf("access_log = true\nheader_timeout = \"2s\"\nlisten = [\"proxy:127.0.0.1:0\", %q]\n", plain)})
	st := d.MustStatus()
	if len(st.Listeners) != 2 || !st.Listeners[0].Proxy || st.Listeners[1].Proxy {
		t.Fatalf("listeners %+v; want the first proxy, the second not", st.Listeners)
	}
	if out := d.Zctl("status").Stdout; !strings.Contains(out, "zfs proxy:"+d.Addr) || !strings.Contains(out, "zfs "+plain) {
		t.Errorf("zctl status does not show the proxy listener as proxy:%s:\n%s", d.Addr, out)
	}

	// No header: closed, whether native or HTTP.
	c := dial(t, d.Addr)
	sendReq(t, c, &wire.Request{Op: wire.OpStat, Path: "/big.bin"})
	closedWithoutAnswer(t, c, "native request without a header")
	c = dial(t, d.Addr)
	io.WriteString(c, "GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
	closedWithoutAnswer(t, c, "HTTP request without a header")
	if r := Zfetch(t, "-q", "--retries", "0", "-o", "-", d.URL("/big.bin")); r.Code == 0 {
		t.Errorf("zfetch straight to a proxy listener succeeded")
	}

	// Spoofed clients, v1 native and v2 HTTP, in flight.
	stalledProxied(t, d.Addr, proxyHeader(1, "203.0.113.7:40001", "192.0.2.1:7071"), "/big.bin", false)
	stalledProxied(t, d.Addr, proxyHeader(2, "198.51.100.9:5555", "192.0.2.1:7071"), "/big.bin", true)
	stalledProxied(t, d.Addr, proxyHeader(2, "[2001:db8::7]:6000", "[2001:db8::1]:7071"), "/big.bin", false)
	want := []string{"203.0.113.7:40001", "198.51.100.9:5555", "[2001:db8::7]:6000"}
	st = d.WaitStatus(10*time.Second, "three transfers", func(st *ctlStatus) bool { return len(st.Transfers) == 3 })
	var got []string
	for _, tr := range st.Transfers {
		got = append(got, tr.Client)
	}
	for _, w := range want {
		if !strings.Contains(strings.Join(got, " "), w) {
			t.Errorf("zctl status --json transfers name clients %v; want %s among them", got, w)
		}
	}
	out := d.Zctl("status").Stdout
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("zctl status does not show client %s:\n%s", w, out)
		}
	}

	// Malformed headers: each closed with a log line, the rest unharmed.
	v2 := proxyHeader(2, "203.0.113.8:1", "192.0.2.1:7071")
	tooLong := append([]byte(nil), v2[:16]...)
	tooLong[14], tooLong[15] = 0xff, 0xff
	badFamily := append([]byte(nil), v2...)
	badFamily[13] = 0x61
	wrongSig := append([]byte("\r\n\r\n\x00\r\nQUIZ\n"), v2[12:]...)
	get := wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/big.bin"})
	for _, tc := range []struct {
		name  string
		send  []byte
		close bool // half-close after sending
	}{
		{"truncated v2", v2[:20], true},
		{"truncated v1", []byte("PROXY TCP4 203.0.113.8 192.0"), true},
		{"wrong signature", append(wrongSig, get...), false},
		{"too long", tooLong, false},
		{"bad family", append(badFamily, get...), false},
		{"v1 bad port", append([]byte("PROXY TCP4 203.0.113.8 192.0.2.1 1 70000\r\n"), get...), false},
	} {
		c := dial(t, d.Addr)
		c.Write(tc.send)
		if tc.close {
			c.(*net.TCPConn).CloseWrite()
		}
		closedWithoutAnswer(t, c, tc.name)
		c.Close()
	}
	if !waitFor(10*time.Second, func() bool { return strings.Contains(d.Log(), "PROXY header refused") }) {
		t.Errorf("no log line for refused headers:\n%s", tail(d.Log(), 30))
	}
	if st := d.MustStatus(); len(st.Transfers) != 3 {
		t.Errorf("%d transfers in flight after the malformed headers, want 3", len(st.Transfers))
	}

	// A whole download through a header, and one on the plain listener.
	c = dial(t, d.Addr)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write(append(proxyHeader(2, "203.0.113.9:7", "192.0.2.1:7071"), "GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"...))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || FileSHA256Bytes(body) != sum {
		t.Errorf("HTTP through a v2 header: %s, %d bytes, %v", resp.Status, len(body), err)
	}
	if r := Zfetch(t, "-q", "-o", "-", "zfs://"+plain+"/big.bin"); r.Code != 0 || sha(r.Stdout) != sum {
		t.Errorf("zfetch on the plain listener: %d %s", r.Code, r.Stderr)
	}
	if !waitFor(10*time.Second, func() bool { return strings.Contains(d.Log(), "client=203.0.113.9:7 ") }) {
		t.Errorf("the access log does not name the header's client 203.0.113.9:7:\n%s", tail(d.Log(), 20))
	}
}

// TestProxyTrusted: with proxy_trusted, a proxy listener closes
// connections from other addresses at once (the supervisor, before any
// worker), logging it; a trusted source is served, and so is the machine
// itself (source = the listener's address: a new instance's takeover
// probe). A reload changes the list, and "proxy:" on a kept address,
// without a new socket.
func TestProxyTrusted(t *testing.T) {
	t.Parallel() // waits more than it works: runs beside the others (scripts/test: -parallel 4)
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "f.bin"), 1<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Listen: "proxy:127.0.0.1:0",
		Config: "proxy_trusted = [\"127.0.0.2\", \"10.0.0.0/8\"]\n"})
	header := proxyHeader(2, "203.0.113.7:1", "192.0.2.1:7071")
	fetch := func(src string) ([]byte, error) {
		c := dialFrom(t, src, d.Addr)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(append(header, "GET /f.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"...))
		b, err := io.ReadAll(c)
		if isReset(err) {
			err = nil
		}
		return b, err
	}
	if b, err := fetch("127.0.0.4"); len(b) != 0 || err != nil {
		t.Errorf("from 127.0.0.4 (untrusted): got %d bytes, %v; want a close", len(b), err)
	}
	// The close and the log line race: wait for the line.
	if !waitFor(10*time.Second, func() bool { return strings.Contains(d.Log(), "outside proxy_trusted") }) {
		t.Errorf("no log line for the untrusted source:\n%s", tail(d.Log(), 20))
	}
	b, err := fetch("127.0.0.2")
	if err != nil || !strings.Contains(string(b), "200 OK") || len(b) < 1<<20 {
		t.Fatalf("from 127.0.0.2 (trusted): %d bytes, %v", len(b), err)
	}
	if st := d.MustStatus(); st.Totals.Connections != 1 {
		t.Errorf("workers saw %d connections, want 1: the untrusted one never reaches them", st.Totals.Connections)
	}
	if b, err := fetch("127.0.0.1"); err != nil || len(b) < 1<<20 {
		t.Errorf("from 127.0.0.1, the listener's own address: %d bytes, %v", len(b), err)
	}

	// Reload: every source trusted, and the listener no longer a proxy
	// one (same port).
	cfg := strings.Replace(readFile(d.Config), "proxy_trusted = [\"127.0.0.2\", \"10.0.0.0/8\"]", "proxy_trusted = []", 1)
	writeConfig(t, d.Config, cfg)
	if r := d.Zctl("reload", "--wait"); r.Code != 0 {
		t.Fatalf("reload: %s %s", r.Stdout, r.Stderr)
	}
	if b, err := fetch("127.0.0.4"); err != nil || len(b) < 1<<20 {
		t.Errorf("from 127.0.0.4 after proxy_trusted = []: %d bytes, %v", len(b), err)
	}
	writeConfig(t, d.Config, strings.Replace(cfg, "proxy:127.0.0.1:0", "127.0.0.1:0", 1))
	if r := d.Zctl("reload", "--wait"); r.Code != 0 {
		t.Fatalf("reload: %s %s", r.Stdout, r.Stderr)
	}
	st := d.MustStatus()
	if len(st.Listeners) != 1 || st.Listeners[0].Proxy || st.Listeners[0].Addr != d.Addr {
		t.Fatalf("listeners after the reload %+v; want %s, not proxy", st.Listeners, d.Addr)
	}
	if r := Zfetch(t, "-q", "-o", "-", d.URL("/f.bin")); r.Code != 0 || sha(r.Stdout) != sum {
		t.Errorf("zfetch once the listener is plain: %d %s", r.Code, r.Stderr)
	}
}

// TestProxyPerClientLimit: on a proxy listener max_connections_per_client
// counts the clients the headers name, not the balancer's address: one
// spoofed client is refused past the limit (native busy, HTTP 503), while
// another one, from the same socket address, is served; a LOCAL header
// (a health check) is never refused.
func TestProxyPerClientLimit(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "f.bin"), 256<<10)
	d := StartDaemon(t, DaemonOpts{Root: root, Listen: "proxy:127.0.0.1:0",
		Config: "max_connections_per_client = 2\nheader_timeout = \"60s\"\n"})
	hog := proxyHeader(2, "203.0.113.7:1000", "192.0.2.1:7071")
	half := wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/f.bin"})[:6]
	for range 2 {
		c := dial(t, d.Addr)
		t.Cleanup(func() { c.Close() })
		c.Write(append(hog, half...))
	}
	d.WaitStatus(10*time.Second, "two connections held", func(st *ctlStatus) bool { return st.Totals.Active == 2 })
	// Past the limit: busy in the client's protocol.
	c := dial(t, d.Addr)
	defer c.Close()
	c.Write(append(proxyHeader(1, "203.0.113.7:1001", "192.0.2.1:7071"), wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/f.bin"})...))
	wantBusy(t, c, "busy: too many connections from your address, retry shortly")
	h := dial(t, d.Addr)
	defer h.Close()
	h.SetDeadline(time.Now().Add(10 * time.Second))
	h.Write(append(proxyHeader(2, "203.0.113.7:1002", "192.0.2.1:7071"), "GET /f.bin HTTP/1.1\r\nHost: x\r\n\r\n"...))
	resp, err := http.ReadResponse(bufio.NewReader(h), nil)
	if err != nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("HTTP past the limit: %+v %v; want 503 with Retry-After", resp, err)
	}
	// Another client, and a health check, through the same kind of socket.
	for _, header := range [][]byte{proxyHeader(2, "198.51.100.1:1", "192.0.2.1:7071"), proxyproto.AppendV2(nil, proxyproto.Header{Local: true})} {
		c := dial(t, d.Addr)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(append(header, wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/f.bin"})...))
		br := bufio.NewReader(c)
		r, err := wire.ReadResponse(br)
		if err != nil || r.Status != wire.StatusOK {
			t.Fatalf("another client: %+v %v", r, err)
		}
		body := make([]byte, r.BodyLen)
		if _, err := io.ReadFull(br, body); err != nil || FileSHA256Bytes(body) != sum {
			t.Fatalf("another client's body: %v", err)
		}
		c.Close()
	}
}

// TestProxyDrainAnswers: a draining daemon answers a proxied connection
// "draining" in its protocol (the supervisor skips the header), and a
// new instance with the same proxy: address takes the port over (its
// probe speaks through a LOCAL header).
func TestProxyDrainAnswers(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	addr := freeAddr(t)
	d1 := StartDaemon(t, DaemonOpts{Root: root, Listen: "proxy:" + addr})
	stalledProxied(t, addr, proxyHeader(2, "203.0.113.7:1", "192.0.2.1:7071"), "/big.bin", false)
	d1.WaitStatus(10*time.Second, "a transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	if r := d1.Zctl("drain"); r.Code != 0 {
		t.Fatalf("drain: %s", r.Stderr)
	}
	d1.WaitState("draining", 10*time.Second)
	c := dial(t, addr)
	c.Write(append(proxyHeader(1, "203.0.113.7:2", "192.0.2.1:7071"), wire.AppendRequest(nil, &wire.Request{Op: wire.OpStat, Path: "/"})...))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if r, err := wire.ReadResponse(c); err != nil || r.Status != wire.StatusDraining {
		t.Errorf("native through a header while draining: %+v %v; want draining", r, err)
	}
	c.Close()
	c = dial(t, addr)
	c.Write(proxyHeader(2, "203.0.113.7:3", "192.0.2.1:7071")) // the header first, the request later, as through HAProxy
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	time.Sleep(50 * time.Millisecond) // most likely the supervisor peeks before the request: passes either way
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 503 {
		t.Errorf("HTTP through a header while draining: %v %v; want 503", resp, err)
	}
	c.Close()
	d2 := StartDaemon(t, DaemonOpts{Root: root, Listen: "proxy:" + addr})
	if !d2.LogHas(5*time.Second, "taking the port over") {
		t.Errorf("the new instance does not say it took the port over:\n%s", tail(d2.Log(), 20))
	}
	c = dial(t, addr)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write(append(proxyHeader(2, "203.0.113.7:4", "192.0.2.1:7071"), wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/big.bin"})...))
	br := bufio.NewReader(c)
	r, err := wire.ReadResponse(br)
	if err != nil || r.Status != wire.StatusOK {
		t.Fatalf("through the new instance: %+v %v", r, err)
	}
	body := make([]byte, r.BodyLen)
	if _, err := io.ReadFull(br, body); err != nil || FileSHA256Bytes(body) != sum {
		t.Fatalf("body through the new instance: %v", err)
	}
}

func writeConfig(t *testing.T, path, cfg string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}
