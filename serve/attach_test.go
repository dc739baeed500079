package serve

import (
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/wire"
)

// connectSent is connect with req written by the client before the
// server starts on the connection (as when a request arrives with the
// handshake). With shut, the client's close (FIN) has reached the
// server's socket too.
func (ts *testServer) connectSent(t *testing.T, req string, shut bool) {
	t.Helper()
	c, fd := loopback(t)
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	if shut {
		c.(*net.TCPConn).CloseWrite()
	}
	// The request (and the FIN) are in the server's socket before Run
	// reads it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var b [1]byte
		n, _, err := syscall.Recvfrom(fd, b[:], syscall.MSG_PEEK)
		ready := n == 1 && err == nil
		if shut {
			ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			ready = ready && err == nil && ti.State == unix.BPF_TCP_CLOSE_WAIT
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the request did not reach the server's socket")
		}
		runtime.Gosched()
	}
	ts.runOn(c, fd, ConnInfo{})
}

// TestHTTPCloseAsked: a client that asks for the close and sends nothing
// more is closed at once, as nginx does, not after lingering for its
// close (lingerTimeout); and a connection that never had to wait never
// joined the runtime poller (attach.go).
func TestHTTPCloseAsked(t *testing.T) {
	for _, c := range []struct{ name, req string }{
		{"1.1 close", "GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
		{"1.0", "GET /f HTTP/1.0\r\n\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ts := newHTTPServer(t)
			ts.write(t, "f", []byte("hello"))
			ts.client.Close() // newTestServer's own connection
			<-ts.result
			before, peeks := ts.srv.attaches.Load(), ts.srv.peeks.Load()
			ts.connectSent(t, c.req, false)
			ts.client.SetDeadline(time.Now().Add(10 * time.Second))
			resp, body := ts.httpRead(t, "GET")
			if resp.StatusCode != 200 || string(body) != "hello" {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			select {
			case r := <-ts.result:
				if r.Outcome != OutcomeClosed || r.Requests != 1 {
					t.Fatalf("result %+v", r)
				}
			case <-time.After(lingerTimeout - time.Second):
				t.Fatalf("the server still holds the connection %v after the response: it lingers", lingerTimeout-time.Second)
			}
			if n := ts.srv.attaches.Load() - before; n != 0 {
				t.Errorf("%d attaches for a connection that never waited", n)
			}
			// The read that brought the request emptied the socket: no
			// peek for more (a system call per connection; nginx does
			// not look either).
			if n := ts.srv.peeks.Load() - peeks; n != 0 {
				t.Errorf("%d peeks after a request that asked for the close", n)
			}
		})
	}
}

// TestHTTPKeepAliveAttachesOnce: in waitPoller mode (wait.go) a
// kept-alive connection joins the poller to wait for its next request,
// once, and is served as before.
func TestHTTPKeepAliveAttachesOnce(t *testing.T) {
	ts := newHTTPServer(t, func(o *Options) { o.keepAliveWait = waitPoller })
	ts.write(t, "f", []byte("hello"))
	ts.client.Close()
	<-ts.result
	before := ts.srv.attaches.Load()
	ts.connectSent(t, "GET /f HTTP/1.1\r\nHost: x\r\n\r\n", false)
	for i := range 3 {
		var resp *http.Response
		var body []byte
		if i == 0 {
			ts.client.SetDeadline(time.Now().Add(10 * time.Second))
			resp, body = ts.httpRead(t, "GET")
		} else {
			// The server waits for this request in the poller first.
			waitIdle(t, ts.srv)
			resp, body = ts.httpDo(t, "GET", "GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
		}
		if resp.StatusCode != 200 || string(body) != "hello" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	ts.client.Close()
	if r := <-ts.result; r.Requests != 3 || r.Outcome != OutcomeClosed {
		t.Fatalf("result %+v", r)
	}
	if n := ts.srv.attaches.Load() - before; n != 1 {
		t.Errorf("%d attaches, want 1", n)
	}
}

// TestNativeClosedClientNeverAttaches: a native client whose close has
// arrived with its request is served and closed without the poller.
func TestNativeClosedClientNeverAttaches(t *testing.T) {
	ts := newTestServer(t, "sendfile")
	ts.write(t, "f", []byte("hello"))
	ts.client.Close()
	<-ts.result
	before := ts.srv.attaches.Load()
	var req strings.Builder
	if err := wire.WriteRequest(&req, &wire.Request{Op: wire.OpGet, Path: "/f"}); err != nil {
		t.Fatal(err)
	}
	ts.connectSent(t, req.String(), true)
	ts.client.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(ts.br)
	if err != nil || !strings.HasSuffix(string(b), "hello") {
		t.Fatalf("response %q, %v", b, err)
	}
	if r := <-ts.result; r.Requests != 1 || r.Outcome != OutcomeClosed {
		t.Fatalf("result %+v", r)
	}
	if n := ts.srv.attaches.Load() - before; n != 0 {
		t.Errorf("%d attaches for a connection that never waited", n)
	}
}

// waitIdle waits until a connection of s waits idle for its next request.
func waitIdle(t *testing.T, s *Server) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); runtime.Gosched() {
		s.mu.Lock()
		idle := false
		for c := range s.conns {
			idle = idle || c.state.Load() == connIdle
		}
		s.mu.Unlock()
		if idle {
			return
		}
	}
	t.Fatal("no connection went idle")
}
