package serve

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sendCorked writes b and the client's FIN in one segment: with TCP_CORK
// the bytes wait, and shutdown(SHUT_WR) sets FIN on the segment they wait
// in and sends it. The server's socket then reports both in one event.
func sendCorked(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1) })
	if serr != nil {
		t.Fatal(serr)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
}

// TestKeepAliveWaitRequestAndClose: a parked connection woken by a
// request that arrived with the client's close (FIN in the same segment:
// a client that half-closes after its last request) answers it and then
// ends at once, as it does when the close comes later. The event that
// woke it was the only one: the read that takes the request is short and
// leaves the close unread, and no byte comes after it, so parking again
// would wait for idle_timeout.
func TestKeepAliveWaitRequestAndClose(t *testing.T) {
	for _, p := range parkProtos {
		t.Run(p.name, func(t *testing.T) {
			ts, data := parkedServer(t, p)
			ts.client.SetDeadline(time.Now().Add(10 * time.Second))
			sendCorked(t, ts.client, request(t, p.http))
			if err := ts.readAnswer(p.http, data); err != nil {
				t.Fatalf("the request sent with the close: %v", err)
			}
			if _, err := ts.br.ReadByte(); err != io.EOF {
				t.Fatalf("after the response: %v, want EOF (the server's close)", err)
			}
			res := ts.waitResult(t)
			if res.Requests != 2 || res.Outcome != OutcomeClosed {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

// TestParkIdleTimeoutRequestArrived: a request that reached a parked
// connection's socket before the sweep found its idle_timeout past, but
// whose event the set's goroutine had not handled yet, is answered, as a
// drain answers one (TestParkDrainRequestArrived), instead of the close
// resetting the connection on it. The test holds the registry's lock, so
// the event waits; the sweep runs past the idle_timeout.
func TestParkIdleTimeoutRequestArrived(t *testing.T) {
	for _, p := range parkProtos {
		t.Run(p.name, func(t *testing.T) {
			ts, data := parkedServer(t, p)
			c := ts.srv.theConn(t)
			ts.srv.park.regMu.Lock()
			locked := true
			defer func() {
				if locked {
					ts.srv.park.regMu.Unlock()
				}
			}()
			ts.client.SetDeadline(time.Now().Add(10 * time.Second))
			ts.client.Write(request(t, p.http))
			for deadline := time.Now().Add(10 * time.Second); ; {
				var b [1]byte
				if n, _, err := unix.Recvfrom(c.fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT); n == 1 && err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the request did not reach the server's socket")
				}
				time.Sleep(time.Millisecond)
			}
			swept := make(chan struct{})
			go func() {
				ts.srv.sweep(time.Now().Add(2 * time.Minute))
				close(swept)
			}()
			// The sweep returns, or (closing the connection) waits for the
			// registry's lock once it has taken it out of the server's set.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
				select {
				case <-swept:
				default:
					if ts.srv.Stats().Active == 1 {
						if time.Now().After(deadline) {
							t.Fatal("the sweep did not finish")
						}
						continue
					}
				}
				break
			}
			ts.srv.park.regMu.Unlock()
			locked = false
			if err := ts.readAnswer(p.http, data); err != nil {
				t.Fatalf("the request that arrived at the idle_timeout: %v", err)
			}
			if res := ts.closeAndResult(t); res.Requests != 2 {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

// TestIdleTimeoutShorterThanHeader: an idle_timeout shorter than
// header_timeout holds for the wait that follows a request, whose read
// deadline was header_timeout's: the coarse update of the deadline (at
// most about once a second) must not keep a later one than idle_timeout.
func TestIdleTimeoutShorterThanHeader(t *testing.T) {
	for _, p := range parkProtos {
		t.Run(p.name, func(t *testing.T) {
			ts := newParkServer(t, p.wait, p.http, func(o *Options) { o.IdleTimeout = 50 * time.Millisecond; o.HeaderTimeout = time.Minute })
			data := random(2000)
			ts.write(t, "f", data)
			p.do(t, ts, data)
			select {
			case res := <-ts.result:
				if res.Outcome != OutcomeIdle || res.Requests != 1 {
					t.Fatalf("result %+v", res)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("not closed 20 s into an idle_timeout of 50 ms")
			}
		})
	}
}

// TestQuickCloseEvent: a connection whose client asked for the close is
// not closed without a look at its socket when the epoll set has seen the
// socket readable since the read that brought the request (ready): bytes
// came after it, and a close on unread bytes resets the connection, which
// can lose the response still queued.
func TestQuickCloseEvent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ready bool
		want  bool
	}{
		{"no event", false, true},
		{"event since the read", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &conn{drained: true, rpos: 3, rend: 3}
			c.ready.Store(tc.ready)
			if got := c.quickClose(); got != tc.want {
				t.Fatalf("quickClose = %v, want %v", got, tc.want)
			}
		})
	}
}
