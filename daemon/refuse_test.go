package daemon

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/proxyproto"
	"github.com/zfs-serve/zfs-serve/wire"
)

// acceptedPair returns a client conn and the server side's raw fd, as
// the accept loop has it (non-blocking).
func acceptedPair(t *testing.T) (net.Conn, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.(*net.TCPConn).File() // a dup, blocking: make it like accept4's
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(fd, true)
	return c, fd
}

func TestRefuseSpeaksTheClientsProtocol(t *testing.T) {
	native := string(wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/a"}))
	v2 := string(proxyproto.AppendV2(nil, proxyproto.Header{Source: netip.MustParseAddrPort("203.0.113.7:1"), Dest: netip.MustParseAddrPort("192.0.2.1:2")}))
	long := string(proxyproto.AppendV2(nil, proxyproto.Header{Local: true}, proxyproto.TLV{Type: 0xE0, Value: make([]byte, 900)}))
	tests := []struct {
		name  string
		first string // sent before the refusal
		send  string
		delay time.Duration // before sending
		http  bool
		proxy bool
		want  string // "http", "http head", "native", "closed" or "hang up" (closed after the client shuts its side)
	}{
		{"http", "", "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", 0, true, false, "http"},
		{"native", "", native, 0, true, false, "native"},
		{"http sent late", "", "GET / HTTP/1.0\r\n\r\n", 200 * time.Millisecond, true, false, "http"},
		{"HEAD", "", "HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n", 0, true, false, "http head"},
		{"HEAD sent late", "", "HEAD / HTTP/1.0\r\n\r\n", 200 * time.Millisecond, true, false, "http head"},
		// A request line that arrives in pieces: the supervisor cannot tell
		// a HEAD, which must not get a body, before it has "HEAD ".
		{"HEAD split after HE", "HE", "AD /a HTTP/1.1\r\nHost: x\r\n\r\n", 200 * time.Millisecond, true, false, "http head"},
		{"HEAD split after H", "H", "EAD / HTTP/1.0\r\n\r\n", 200 * time.Millisecond, true, false, "http head"},
		{"HEAD split before the space", "HEAD", " / HTTP/1.0\r\n\r\n", 200 * time.Millisecond, true, false, "http head"},
		{"HEAD after empty lines", "", "\r\n\r\nHEAD / HTTP/1.0\r\n\r\n", 0, true, false, "http head"}, // RFC 9112 section 2.2, as httpx.Parse
		{"HEAD after an empty line, split", "\r\nHE", "AD / HTTP/1.0\r\n\r\n", 200 * time.Millisecond, true, false, "http head"},
		{"HEAD after three empty lines", "", "\r\n\r\n\r\nHEAD / HTTP/1.0\r\n\r\n", 0, true, false, "http"}, // not a request httpx.Parse takes: 400 with a body
		{"proxy HEAD split", "PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\nHE", "AD / HTTP/1.1\r\n\r\n", 200 * time.Millisecond, true, true, "http head"},
		{"HEA then silence", "HEA", "", 0, true, false, "closed"}, // after refuseWait: not known to want a body
		{"HEA then hang up", "HEA", "", 0, true, false, "hang up"},
		{"H then GET", "H", "TTP / HTTP/1.1\r\n\r\n", 200 * time.Millisecond, true, false, "http"}, // not a method, but not HEAD either
		{"native sent late", "", string(wire.AppendRequest(nil, &wire.Request{Op: wire.OpStat, Path: "/"})), 200 * time.Millisecond, true, false, "native"},
		{"http off", "", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, false, false, "closed"},
		{"nothing sent", "", "", 0, true, false, "closed"},
		{"proxy v1 http", "", "PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\nGET / HTTP/1.1\r\n\r\n", 0, true, true, "http"},
		{"proxy v1 HEAD", "", "PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\nHEAD / HTTP/1.1\r\n\r\n", 0, true, true, "http head"},
		{"proxy v2 native", "", v2 + native, 0, true, true, "native"},
		{"proxy v2 long native", "", long + native, 0, true, true, "native"},
		{"proxy header first, native late", v2, native, 200 * time.Millisecond, true, true, "native"},
		{"proxy half a header first, http late", v2[:10], v2[10:] + "GET / HTTP/1.1\r\n\r\n", 200 * time.Millisecond, true, true, "http"},
		{"proxy header only", v2, "", 0, true, true, "closed"},
		{"proxy header missing", "", native, 0, true, true, "closed"},
		{"proxy header malformed", "", "PROXY TCP4 1.2.3.4\r\n" + native, 0, true, true, "closed"},
		{"not proxy, a header", "", v2 + native, 0, true, false, "http"}, // not ZQ: the same answer a worker would give
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, fd := acceptedPair(t)
			if tt.first != "" {
				io.WriteString(c, tt.first)
			}
			if tt.delay == 0 && tt.send != "" {
				io.WriteString(c, tt.send)
			}
			if tt.first != "" || (tt.delay == 0 && tt.send != "") {
				waitReadable(t, fd)
			}
			refuse(fd, wire.StatusBusy, "busy: test", tt.http, tt.proxy)
			if tt.delay > 0 {
				time.Sleep(tt.delay) // the client is slow on purpose
				io.WriteString(c, tt.send)
			}
			if tt.want == "hang up" {
				c.(*net.TCPConn).CloseWrite()
				tt.want = "closed"
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read: %v (got %q)", err, got)
			}
			switch tt.want {
			case "closed":
				if len(got) != 0 {
					t.Fatalf("got %q, want a close", got)
				}
			case "http":
				resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(got))), nil)
				if err != nil {
					t.Fatalf("not HTTP: %q: %v", got, err)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !resp.Close || string(body) != "busy: test\n" {
					t.Fatalf("got %d %v %q", resp.StatusCode, resp.Header, body)
				}
			case "http head":
				// A response to HEAD has no body (RFC 9110 section 9.3.2).
				head, rest, _ := strings.Cut(string(got), "\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(head+"\r\n\r\n")), &http.Request{Method: "HEAD"})
				if err != nil || resp.StatusCode != 503 || !resp.Close || rest != "" {
					t.Fatalf("got %q (%v), want a 503 head and no body", got, err)
				}
			case "native":
				r, err := wire.ReadResponse(strings.NewReader(string(got)))
				if err != nil || r.Status != wire.StatusBusy || r.Message != "busy: test" {
					t.Fatalf("got %+v, %v from %q", r, err, got)
				}
			}
		})
	}
}

func TestIsHead(t *testing.T) {
	tests := []struct {
		b           string
		head, known bool
	}{
		{"HEAD / HTTP/1.1\r\n", true, true},
		{"HEAD ", true, true},
		{"\r\nHEAD ", true, true},
		{"\r\n\r\nHEAD ", true, true},
		{"GET / HTTP/1.1\r\n", false, true},
		{"HEADX / HTTP/1.1", false, true},
		{"head / HTTP/1.1", false, true},   // methods are case-sensitive
		{"\r\n\r\n\r\nHEAD ", false, true}, // three empty lines: httpx.Parse refuses it (400)
		{"\r\nGET / ", false, true},
		{"\n", false, true},
		// Beginnings of a HEAD: may go on either way.
		{"H", false, false},
		{"HE", false, false},
		{"HEAD", false, false},
		{"\r", false, false},
		{"\r\n", false, false},
		{"\r\n\r", false, false},
		{"\r\nHEA", false, false},
		{"\r\n\r\nHEAD", false, false},
	}
	for _, tt := range tests {
		if head, known := isHead([]byte(tt.b)); head != tt.head || known != tt.known {
			t.Errorf("isHead(%q) = %v, %v; want %v, %v", tt.b, head, known, tt.head, tt.known)
		}
	}
}

func waitReadable(t *testing.T, fd int) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 5000); n != 1 || err != nil {
		t.Fatalf("poll: %d %v", n, err)
	}
}

// TestRefuseWaitHoldsNoThread: connections refused before their client
// has sent anything wait for its first bytes without a thread each (a
// flood of them would otherwise leave the supervisor with hundreds of
// threads for good), and are still answered once it speaks.
func TestRefuseWaitHoldsNoThread(t *testing.T) {
	const n = 200
	before := threadCount(t)
	var clients []net.Conn
	for range n {
		c, fd := acceptedPair(t)
		refuse(fd, wire.StatusBusy, "busy: test", true, false)
		clients = append(clients, c)
	}
	// The waits are under way: each goroutine is parked, on a thread or not.
	deadline := time.Now().Add(5 * time.Second)
	for refuseWaiting.Load() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	during := threadCount(t)
	t.Logf("threads: %d before, %d with %d refusals waiting", before, during, refuseWaiting.Load())
	if during-before > n/4 {
		t.Errorf("%d more threads with %d refusals waiting for their clients", during-before, n)
	}
	for _, c := range clients[:4] {
		io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got, _ := io.ReadAll(c); !strings.HasPrefix(string(got), "HTTP/1.1 503 ") {
			t.Errorf("a client that spoke while its refusal waited got %q", got)
		}
	}
	// The others hang up: their waits end (the count is global).
	for _, c := range clients {
		c.Close()
	}
	deadline = time.Now().Add(5 * time.Second)
	for refuseWaiting.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := refuseWaiting.Load(); n > 0 {
		t.Errorf("%d refusals still waiting after their clients hung up", n)
	}
}

// threadCount is this process's number of threads.
func threadCount(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads in /proc/self/status")
	return 0
}
