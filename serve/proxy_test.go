package serve

import (
	"bytes"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/proxyproto"
	"github.com/zfs-serve/zfs-serve/wire"
)

// newProxyServer is a test server, HTTP and the access log on, whose
// connection (ts.connectWith) the caller makes.
func newProxyServer(t *testing.T, opts ...func(*Options)) *testServer {
	t.Helper()
	opts = append([]func(*Options){withHTTP, withAccessLog}, opts...)
	ts := newTestServer(t, config.ModeSendfile, opts...)
	ts.client.Close() // newTestServer's own connection
	ts.waitResult(t)
	return ts
}

var (
	spoofed = netip.MustParseAddrPort("203.0.113.7:40001")
	proxied = proxyproto.Header{Source: spoofed, Dest: netip.MustParseAddrPort("192.0.2.1:7071")}
)

func nativeGet(path string) []byte {
	var b bytes.Buffer
	wire.WriteRequest(&b, &wire.Request{Op: wire.OpGet, Path: path})
	return b.Bytes()
}

// longV2 is a v2 header for proxied of exactly size bytes (a custom TLV
// pads it), longer than the connection's 256-byte request buffer.
func longV2(size int) []byte {
	pad := size - len(proxyproto.AppendV2(nil, proxied)) - 3
	return proxyproto.AppendV2(nil, proxied, proxyproto.TLV{Type: 0xE0, Value: bytes.Repeat([]byte{'x'}, pad)})
}

// TestProxyHeaderServed: a valid header followed by a native or HTTP
// request, in one write or split over several, is served, and the
// header's source is the client (access log, transfers); a LOCAL header
// leaves the socket's peer as the client.
func TestProxyHeaderServed(t *testing.T) {
	v1 := proxyproto.AppendV1(nil, proxied)
	v2 := proxyproto.AppendV2(nil, proxied)
	v2six := proxyproto.AppendV2(nil, proxyproto.Header{Source: netip.MustParseAddrPort("[2001:db8::7]:5000"), Dest: netip.MustParseAddrPort("[2001:db8::1]:7071")})
	local := proxyproto.AppendV2(nil, proxyproto.Header{Local: true})
	httpGet := []byte("GET /f.txt HTTP/1.1\r\nHost: h\r\n\r\n")
	long := longV2(900)
	for _, tc := range []struct {
		name   string
		pieces [][]byte
		http   bool
		client string // "" : the socket's peer
	}{
		{"v1 native", [][]byte{append(v1, nativeGet("/f.txt")...)}, false, spoofed.String()},
		{"v1 http", [][]byte{append(v1, httpGet...)}, true, spoofed.String()},
		{"v2 native", [][]byte{append(v2, nativeGet("/f.txt")...)}, false, spoofed.String()},
		{"v2 http", [][]byte{append(v2, httpGet...)}, true, spoofed.String()},
		{"v2 tcp6", [][]byte{append(v2six, httpGet...)}, true, "[2001:db8::7]:5000"},
		{"v2 local", [][]byte{append(local, nativeGet("/f.txt")...)}, false, ""},
		{"v1 unknown", [][]byte{append([]byte("PROXY UNKNOWN\r\n"), httpGet...)}, true, ""},
		{"header alone, then request", [][]byte{v2, nativeGet("/f.txt")}, false, spoofed.String()},
		{"v1 split", [][]byte{v1[:3], v1[3:20], v1[20:], httpGet}, true, spoofed.String()},
		{"v2 split", [][]byte{v2[:5], v2[5:14], v2[14:20], append(v2[20:], nativeGet("/f.txt")...)}, false, spoofed.String()},
		{"v2 longer than the buffer", [][]byte{append(long, nativeGet("/f.txt")...)}, false, spoofed.String()},
		{"v2 longer than the buffer, split", [][]byte{long[:10], long[10:300], long[300:], httpGet}, true, spoofed.String()},
		{"v2 of MaxHeader bytes", [][]byte{append(longV2(proxyproto.MaxHeader), httpGet...)}, true, spoofed.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newProxyServer(t)
			ts.write(t, "f.txt", []byte("hello"))
			ts.connectWith(t, ConnInfo{Proxy: true})
			want := tc.client
			if want == "" {
				want = ts.client.LocalAddr().String()
			}
			ts.client.SetDeadline(time.Now().Add(10 * time.Second))
			for i, p := range tc.pieces {
				if i > 0 {
					time.Sleep(5 * time.Millisecond) // most likely a read of its own; passes either way
				}
				if _, err := ts.client.Write(p); err != nil {
					t.Fatal(err)
				}
			}
			if tc.http {
				resp, err := http.ReadResponse(ts.br, nil)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(body) != "hello" {
					t.Fatalf("%s %q", resp.Status, body)
				}
			} else {
				r, err := wire.ReadResponse(ts.br)
				if err != nil || r.Status != wire.StatusOK {
					t.Fatalf("%+v %v", r, err)
				}
				body := make([]byte, r.BodyLen)
				if _, err := io.ReadFull(ts.br, body); err != nil || string(body) != "hello" {
					t.Fatalf("body %q %v", body, err)
				}
			}
			ts.client.Close()
			ts.waitResult(t)
			if !strings.Contains(ts.logs.String(), "client="+want+" ") {
				t.Errorf("the access log does not name client %s:\n%s", want, ts.logs)
			}
		})
	}
}

// TestProxyHeaderRefused: a connection on a proxy listener without a
// valid header is closed without an answer and a log line says why.
func TestProxyHeaderRefused(t *testing.T) {
	v2 := proxyproto.AppendV2(nil, proxied)
	tooLong := append([]byte(nil), v2[:16]...)
	tooLong[14], tooLong[15] = 0x04, 0x00 // 1024 bytes after the fixed 16
	badFamily := append([]byte(nil), v2...)
	badFamily[13] = 0x51
	for _, tc := range []struct {
		name    string
		send    []byte
		close   bool // the client closes after sending
		outcome Outcome
		log     string
	}{
		{"missing (native)", nativeGet("/f.txt"), false, OutcomeBadProxy, "not a PROXY protocol header"},
		{"missing (http)", []byte("GET / HTTP/1.1\r\n\r\n"), false, OutcomeBadProxy, "not a PROXY protocol header"},
		{"v1 malformed", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\nGET / HTTP/1.1\r\n\r\n"), false, OutcomeBadProxy, "99999"},
		{"v1 without CRLF", append([]byte("PROXY TCP4 "), bytes.Repeat([]byte("1"), 120)...), false, OutcomeBadProxy, "v1"},
		{"v2 wrong signature", append([]byte("\r\n\r\n\x00\r\nQUIX\n"), v2[12:]...), false, OutcomeBadProxy, "not a PROXY protocol header"},
		{"v2 bad family", badFamily, false, OutcomeBadProxy, "family"},
		{"v2 too long", tooLong, false, OutcomeBadProxy, "longer than MaxHeader"},
		{"v2 truncated", v2[:20], true, OutcomeBadProxy, "closed inside the PROXY header"},
		{"v2 long, truncated", longV2(900)[:600], true, OutcomeBadProxy, "closed inside the PROXY header"},
		{"v1 truncated", []byte("PROXY TCP4 203.0"), true, OutcomeBadProxy, "closed inside the PROXY header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newProxyServer(t)
			ts.connectWith(t, ConnInfo{Proxy: true})
			ts.client.SetDeadline(time.Now().Add(10 * time.Second))
			ts.client.Write(tc.send)
			if tc.close {
				ts.client.(interface{ CloseWrite() error }).CloseWrite()
			}
			if n, err := ts.br.Read(make([]byte, 1)); err == nil {
				t.Fatalf("got an answer (%d bytes); want the connection closed", n)
			}
			if res := ts.waitResult(t); res.Outcome != tc.outcome || res.Requests != 0 {
				t.Errorf("outcome %q, %d requests; want %q, 0", res.Outcome, res.Requests, tc.outcome)
			}
			logs := ts.logs.String()
			if !strings.Contains(logs, "PROXY header refused") || !strings.Contains(logs, tc.log) {
				t.Errorf("log does not say the header was refused (%q):\n%s", tc.log, logs)
			}
		})
	}
}

// TestProxyHeaderTimeout: a header that does not arrive, or arrives too
// slowly, is cut at header_timeout; header_timeout also bounds the
// header and the first request together.
func TestProxyHeaderTimeout(t *testing.T) {
	v2 := proxyproto.AppendV2(nil, proxied)
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"nothing", nil},
		{"half a v1 header", []byte("PROXY TCP4 ")},
		{"half a v2 header", v2[:20]},
		{"half of a long v2 header", longV2(900)[:500]},
		{"a header and half a request", append(v2, nativeGet("/f.txt")[:5]...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newProxyServer(t, func(o *Options) { o.HeaderTimeout = 200 * time.Millisecond })
			ts.connectWith(t, ConnInfo{Proxy: true})
			start := time.Now()
			ts.client.Write(tc.send)
			res := ts.waitResult(t)
			t.Logf("closed after %v", time.Since(start).Round(time.Millisecond))
			if res.Outcome != OutcomeIdle && res.Outcome != OutcomeBadRequest {
				t.Errorf("outcome %q; want idle", res.Outcome)
			}
		})
	}
}

// TestProxyNotClosedEarly: a client that closes right after its header
// (HAProxy's plain TCP check) ends quietly.
func TestProxyHeaderThenClose(t *testing.T) {
	ts := newProxyServer(t)
	ts.connectWith(t, ConnInfo{Proxy: true})
	ts.client.Write(proxyproto.AppendV2(nil, proxyproto.Header{Local: true}))
	ts.client.Close()
	if res := ts.waitResult(t); res.Outcome != OutcomeClosed {
		t.Errorf("outcome %q; want closed", res.Outcome)
	}
	if strings.Contains(ts.logs.String(), "refused") {
		t.Errorf("logged a refusal:\n%s", ts.logs)
	}
}

// TestProxyAdmit: with ConnInfo.Admit, the admission hook is asked about
// the decoded client (never about a LOCAL header), and a refusal is
// answered busy in the client's protocol.
func TestProxyAdmit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header proxyproto.Header
		req    []byte
		asked  bool
	}{
		{"native refused", proxied, nativeGet("/f.txt"), true},
		{"http refused", proxied, []byte("GET /f.txt HTTP/1.1\r\nHost: h\r\n\r\n"), true},
		{"local not asked", proxyproto.Header{Local: true}, nativeGet("/f.txt"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newProxyServer(t)
			ts.write(t, "f.txt", []byte("hello"))
			var asked atomic.Value
			ts.srv.SetAdmit(func(id uint64, client string) string {
				asked.Store(client)
				if id != 42 {
					t.Errorf("admission asked with id %d", id)
				}
				return "busy: too many from you"
			})
			ts.connectWith(t, ConnInfo{Proxy: true, Admit: true, ID: 42})
			ts.client.SetDeadline(time.Now().Add(10 * time.Second))
			ts.client.Write(append(proxyproto.AppendV2(nil, tc.header), tc.req...))
			switch {
			case !tc.asked:
				if r, err := wire.ReadResponse(ts.br); err != nil || r.Status != wire.StatusOK {
					t.Fatalf("%+v %v", r, err)
				}
				if asked.Load() != nil {
					t.Errorf("asked about %v", asked.Load())
				}
				return
			case tc.req[0] == 'G':
				resp, err := http.ReadResponse(ts.br, nil)
				if err != nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
					t.Fatalf("%v %v; want 503 with Retry-After", resp, err)
				}
			default:
				r, err := wire.ReadResponse(ts.br)
				if err != nil || r.Status != wire.StatusBusy || r.Message != "busy: too many from you" {
					t.Fatalf("%+v %v; want busy", r, err)
				}
			}
			ts.client.Close() // the server lingers until the client closes
			if res := ts.waitResult(t); res.Outcome != OutcomeBusy {
				t.Errorf("outcome %q", res.Outcome)
			}
			if got := asked.Load(); got != spoofed.String() {
				t.Errorf("asked about %v, want %s", got, spoofed)
			}
		})
	}
}
