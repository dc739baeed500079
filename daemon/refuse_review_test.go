package daemon

import (
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/proxyproto"
	"github.com/zfs-serve/zfs-serve/wire"
)

// refuseExchange refuses a real accepted connection whose client sends
// pieces (the first before the refusal, the rest 100ms apart after it)
// and returns what the client read and how long after the refusal.
func refuseExchange(t *testing.T, http, proxy bool, pieces ...string) (string, time.Duration, error) {
	t.Helper()
	c, fd := acceptedPair(t)
	if len(pieces) > 0 && pieces[0] != "" {
		io.WriteString(c, pieces[0])
		waitReadable(t, fd)
	}
	start := time.Now()
	refuse(fd, wire.StatusBusy, "busy: test", http, proxy)
	type result struct {
		got  []byte
		took time.Duration
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		done <- result{got, time.Since(start), err}
	}()
	for _, p := range pieces[min(1, len(pieces)):] {
		time.Sleep(100 * time.Millisecond)
		io.WriteString(c, p)
	}
	r := <-done
	return string(r.got), r.took, r.err
}

func TestRefuseReview(t *testing.T) {
	v2 := string(proxyproto.AppendV2(nil, proxyproto.Header{Source: netip.MustParseAddrPort("203.0.113.7:1"), Dest: netip.MustParseAddrPort("192.0.2.1:2")}))
	v1 := "PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\n"
	longV2 := string(proxyproto.AppendV2(nil, proxyproto.Header{Local: true}, proxyproto.TLV{Type: 0xE0, Value: make([]byte, proxyproto.MaxHeader-16-3)}))
	if len(longV2) != proxyproto.MaxHeader {
		t.Fatalf("longV2 is %d bytes", len(longV2))
	}
	body := "\r\n\r\nbusy: test\n"
	native := string(wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/a"}))
	for _, tt := range []struct {
		name        string
		http, proxy bool
		pieces      []string
		want        string // "body", "head", "native", "closed"
		slow        bool   // answered only after more pieces
	}{
		{"GET at once", true, false, []string{"GET / HTTP/1.1\r\n\r\n"}, "body", false},
		{"G at once", true, false, []string{"G"}, "body", false},
		{"lowercase head", true, false, []string{"head / HTTP/1.1\r\n\r\n"}, "body", false},
		{"HEAD tab", true, false, []string{"HEAD\t/ HTTP/1.1\r\n\r\n"}, "body", false},
		{"crlf run", true, false, []string{strings.Repeat("\r\n", 5000)}, "body", false},
		{"crlf run in pieces", true, false, []string{"\r", "\n", "\r\n", "\r\n"}, "body", true},
		{"v2 then split HEAD", true, true, []string{v2 + "HE", "AD / HTTP/1.1\r\n\r\n"}, "head", true},
		{"v2 byte by byte then HEAD", true, true, []string{v2[:5], v2[5:], "H", "E", "A", "D", " "}, "head", true},
		{"v1 split then crlf HEAD split", true, true, []string{v1[:10], v1[10:] + "\r\n", "HEA", "D / HTTP/1.1\r\n\r\n"}, "head", true},
		{"max v2 then crlfcrlf HEAD", true, true, []string{longV2 + "\r\n\r\nHEAD / HTTP/1.1\r\n\r\n"}, "head", false},
		{"max v2 then crlfcrlf GET", true, true, []string{longV2 + "\r\n\r\nGET / HTTP/1.1\r\n\r\n"}, "body", false},
		{"native byte by byte", true, false, []string{native[:1], native[1:2], native[2:]}, "native", false},
		{"native byte by byte, no first", true, false, []string{"", native[:1], native[1:]}, "native", true},
		{"native after v2 in pieces", true, true, []string{v2, "Z", native[1:]}, "native", true},
		{"HE http off", false, false, []string{"HE", "AD / HTTP/1.1\r\n\r\n"}, "closed", false},
		{"HE then silence, http off", false, false, []string{"HE"}, "closed", false},
		{"CRLF then silence, http off", false, false, []string{"\r\n"}, "closed", false},
		{"H then silence, proxy, http off", false, true, []string{v1 + "H"}, "closed", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, took, err := refuseExchange(t, tt.http, tt.proxy, tt.pieces...)
			if err != nil {
				t.Fatalf("read: %v (got %q after %v)", err, got, took)
			}
			t.Logf("%v: %q", took, got)
			switch tt.want {
			case "body":
				if !strings.HasPrefix(got, "HTTP/1.1 503 ") || !strings.HasSuffix(got, body) {
					t.Errorf("got %q, want a 503 with a body", got)
				}
			case "head":
				if !strings.HasPrefix(got, "HTTP/1.1 503 ") || strings.HasSuffix(got, body) || !strings.HasSuffix(got, "\r\n\r\n") {
					t.Errorf("got %q, want a 503 without a body", got)
				}
			case "native":
				if !strings.HasPrefix(got, "ZR") {
					t.Errorf("got %q, want the native refusal", got)
				}
			case "closed":
				if got != "" {
					t.Errorf("got %q, want a close", got)
				}
			}
			// Answered at once unless more pieces were needed; never past refuseWait.
			if !tt.slow && took > 80*time.Millisecond {
				t.Errorf("answered after %v, want at once", took)
			}
			if took > refuseWait+200*time.Millisecond {
				t.Errorf("answered after %v, past refuseWait", took)
			}
		})
	}
}

// TestRefuseHeadPrefixBounded: clients that send a beginning of "HEAD "
// and then nothing are closed within refuseWait, leaving no goroutine,
// wait slot or descriptor behind, and do not spin a CPU meanwhile.
func TestRefuseHeadPrefixBounded(t *testing.T) {
	fdsBefore := countFDs(t)
	gBefore := runtime.NumGoroutine()
	var cs []net.Conn
	var ru0, ru1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	start := time.Now()
	for _, p := range []string{"H", "HE", "HEA", "HEAD", "\r", "\r\n", "\r\n\r\n", "\r\n\r\nHEAD", "\r\nH"} {
		for range 10 {
			c, fd := acceptedPair(t)
			io.WriteString(c, p)
			waitReadable(t, fd)
			refuse(fd, wire.StatusBusy, "busy: test", true, false)
			cs = append(cs, c)
		}
	}
	for _, c := range cs {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got, err := io.ReadAll(c); err != nil || len(got) != 0 {
			t.Errorf("got %q, %v; want a close", got, err)
		}
	}
	took := time.Since(start)
	unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	t.Logf("%d connections closed after %v, %v of CPU", len(cs), took, cpu)
	if took > refuseWait+500*time.Millisecond {
		t.Errorf("closed after %v", took)
	}
	if cpu > took/2 {
		t.Errorf("%v of CPU in %v: spinning?", cpu, took)
	}
	for _, c := range cs {
		c.Close()
	}
	deadline := time.Now().Add(3 * time.Second)
	for (refuseWaiting.Load() > 0 || runtime.NumGoroutine() > gBefore || countFDs(t) > fdsBefore) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := refuseWaiting.Load(); n != 0 {
		t.Errorf("refuseWaiting = %d", n)
	}
	if g := runtime.NumGoroutine(); g > gBefore {
		t.Errorf("%d goroutines, %d before", g, gBefore)
	}
	if n := countFDs(t); n > fdsBefore {
		t.Errorf("%d open descriptors, %d before", n, fdsBefore)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	es, err := readDirNames("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// TestRefuseDiscardsTheRequest: the refused request is discarded before
// the close, so the connection ends with a FIN and no reset: a reset
// drops what the kernel still holds to send (or resend) and, on some
// systems, what the client has not read yet.
func TestRefuseDiscardsTheRequest(t *testing.T) {
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("X-Pad: y\r\n", 2000) + "\r\n",
	} {
		c, fd := acceptedPair(t)
		io.WriteString(c, req)
		waitReadable(t, fd)
		refuse(fd, wire.StatusBusy, "busy: test", true, false)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil || !strings.HasPrefix(string(got), "HTTP/1.1 503 ") {
			t.Fatalf("got %q, %v", got, err)
		}
		time.Sleep(50 * time.Millisecond) // a reset would have come by now
		rc, _ := c.(*net.TCPConn).SyscallConn()
		var info *unix.TCPInfo
		rc.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
		if err != nil {
			t.Fatal(err)
		}
		// CLOSE_WAIT: the server's FIN came, and nothing after it.
		if info.State != 8 /* TCP_CLOSE_WAIT */ {
			t.Errorf("client state %d after the refusal of %d bytes, want CLOSE_WAIT (8): reset (7 is TCP_CLOSE)", info.State, len(req))
		}
	}
}

// TestRefuseHeadPrefixSlots: clients stopped inside "HEAD " take the
// waiting slots, at most maxRefuseWait of them; past the bound one is
// closed at once, and an HTTP client that is not a HEAD, or a native one,
// is still answered at once.
func TestRefuseHeadPrefixSlots(t *testing.T) {
	var cs []net.Conn
	for range maxRefuseWait {
		c, fd := acceptedPair(t)
		io.WriteString(c, "HE")
		waitReadable(t, fd)
		refuse(fd, wire.StatusBusy, "busy: test", true, false)
		cs = append(cs, c)
	}
	if n := refuseWaiting.Load(); n != maxRefuseWait {
		t.Fatalf("refuseWaiting = %d, want %d", n, maxRefuseWait)
	}
	for _, tc := range []struct{ send, want string }{{"HE", ""}, {"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 503 "}, {"ZQ", "ZR"}} {
		got, took, err := refuseExchange(t, true, false, tc.send)
		if err != nil || !strings.HasPrefix(got, tc.want) || tc.want == "" && got != "" || took > 100*time.Millisecond {
			t.Errorf("%q past the bound: %q, %v after %v; want %q at once", tc.send, got, err, took, tc.want)
		}
	}
	for _, c := range cs {
		c.Close()
	}
	deadline := time.Now().Add(3 * time.Second)
	for refuseWaiting.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := refuseWaiting.Load(); n != 0 {
		t.Errorf("refuseWaiting = %d after the clients hung up", n)
	}
}
