package serve

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/wire"
)

// parked returns how many connections wait without a goroutine.
func (s *Server) parked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		if c.state.Load() == connParked {
			n++
		}
	}
	return n
}

// parkAll sweeps until n connections are parked (each sweep only parks
// connections idle since before the previous one; parking itself happens
// in the woken goroutine).
func parkAll(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.parked() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections parked", s.parked(), n)
		}
		s.sweep(time.Now())
		time.Sleep(time.Millisecond)
	}
}

// parkProto is a protocol a parked connection resumes in, a request and a
// check of its answer, and the wait mode the server runs in.
type parkProto struct {
	name string
	http bool
	wait waitMode
	do   func(t *testing.T, ts *testServer, data []byte)
}

// parkProtos are both protocols in both wait modes (wait.go).
var parkProtos = func() []parkProto {
	var ps []parkProto
	for _, w := range []waitMode{waitEpoll, waitPoller} {
		ps = append(ps,
			parkProto{w.String() + "/native", false, w, func(t *testing.T, ts *testServer, data []byte) {
				t.Helper()
				r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"})
				if r.Status != wire.StatusOK || !bytes.Equal(body, data) {
					t.Fatalf("status %v, %d bytes, equal=%v", r.Status, len(body), bytes.Equal(body, data))
				}
			}},
			parkProto{w.String() + "/http", true, w, func(t *testing.T, ts *testServer, data []byte) {
				t.Helper()
				resp, body := ts.httpDo(t, "GET", "GET /f HTTP/1.1\r\nHost: a\r\n\r\n")
				if resp.StatusCode != 200 || !bytes.Equal(body, data) {
					t.Fatalf("status %d, %d bytes, equal=%v", resp.StatusCode, len(body), bytes.Equal(body, data))
				}
			}})
	}
	return ps
}()

func newParkServer(t *testing.T, w waitMode, http bool, opts ...func(*Options)) *testServer {
	t.Helper()
	opts = append([]func(*Options){func(o *Options) { o.keepAliveWait = w }}, opts...)
	if http {
		return newHTTPServer(t, opts...)
	}
	return newTestServer(t, config.ModeSendfile, opts...)
}

// parkedServer is a server in p's wait mode (idle_timeout a minute,
// then opts) with one connection that fetched /f (4 KiB, returned) and
// is parked.
func parkedServer(t *testing.T, p parkProto, opts ...func(*Options)) (*testServer, []byte) {
	t.Helper()
	opts = append([]func(*Options){func(o *Options) { o.IdleTimeout = time.Minute }}, opts...)
	ts := newParkServer(t, p.wait, p.http, opts...)
	data := random(4096)
	ts.write(t, "f", data)
	p.do(t, ts, data)
	parkAll(t, ts.srv, 1)
	return ts, data
}

// TestParkResume: a kept-alive connection idle through a sweep waits
// without a goroutine; a request wakes it, is answered whole, and the
// connection parks and resumes again (the epoll registration re-armed). A
// parked connection still counts as active.
func TestParkResume(t *testing.T) {
	for _, p := range parkProtos {
		t.Run(p.name, func(t *testing.T) {
			ts := newParkServer(t, p.wait, p.http, func(o *Options) { o.IdleTimeout = time.Minute })
			data := random(100<<10 + 7)
			ts.write(t, "f", data)
			for i := range 3 {
				p.do(t, ts, data)
				parkAll(t, ts.srv, 1)
				if st := ts.srv.Stats(); st.Active != 1 {
					t.Fatalf("round %d: %d active while parked, want 1", i, st.Active)
				}
			}
			p.do(t, ts, data)
			ts.client.Close()
			res := ts.waitResult(t)
			if res.Outcome != OutcomeClosed || res.Requests != 4 || res.Bytes != 4*int64(len(data)) {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

// TestParkClientClose: a client that closes a parked connection ends it
// (the close wakes it like a request).
func TestParkClientClose(t *testing.T) {
	for _, p := range parkProtos {
		t.Run(p.name, func(t *testing.T) {
			ts, _ := parkedServer(t, p)
			ts.client.Close()
			res := ts.waitResult(t)
			if res.Outcome != OutcomeClosed || res.Requests != 1 {
				t.Fatalf("result %+v", res)
			}
			if st := ts.srv.Stats(); st.Active != 0 {
				t.Fatalf("%d active after the close", st.Active)
			}
		})
	}
}

// TestParkIdleTimeout: a parked connection past its idle_timeout is
// closed by the sweep, with the idle outcome.
func TestParkIdleTimeout(t *testing.T) {
	for _, p := range parkProtos {
		t.Run(p.name, func(t *testing.T) {
			ts, _ := parkedServer(t, p)
			ts.srv.sweep(time.Now()) // not yet
			if ts.srv.parked() != 1 {
				t.Fatal("parked connection closed before its idle_timeout")
			}
			ts.srv.sweep(time.Now().Add(time.Minute + time.Second))
			res := ts.waitResult(t)
			if res.Outcome != OutcomeIdle {
				t.Fatalf("result %+v", res)
			}
			ts.client.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := ts.br.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("client read %d, %v; want EOF", n, err)
			}
		})
	}
}

// TestParkDrain: a drain closes parked connections at once (without
// waiting for them inside Drain) and lets a busy one finish its response.
func TestParkDrain(t *testing.T) {
	for _, p := range parkProtos {
		t.Run(p.name, func(t *testing.T) {
			ts, _ := parkedServer(t, p)
			ts.srv.Drain()
			res := ts.waitResult(t)
			if res.Outcome != OutcomeDrained || res.Requests != 1 {
				t.Fatalf("result %+v", res)
			}
			ts.client.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := ts.br.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("client read %d, %v; want EOF", n, err)
			}
			ts.srv.Wait()
		})
	}
}

// TestParkNoGoroutine: parked connections hold no goroutine. 50 kept-alive
// connections idle, then parked: the goroutines serving them are gone.
func TestParkNoGoroutine(t *testing.T) {
	for _, w := range []waitMode{waitEpoll, waitPoller} {
		t.Run(w.String(), func(t *testing.T) {
			ts := newParkServer(t, w, false, func(o *Options) { o.IdleTimeout = time.Minute })
			data := random(4096)
			ts.write(t, "f", data)
			before := runtime.NumGoroutine() // with one connection's
			const n = 50
			conns := []*testServer{ts}
			for range n - 1 {
				c := &testServer{srv: ts.srv, root: ts.root, result: make(chan Result, 1)}
				c.connect(t)
				conns = append(conns, c)
			}
			for _, c := range conns {
				parkProtos[0].do(t, c, data)
			}
			parkAll(t, ts.srv, n)
			deadline := time.Now().Add(10 * time.Second)
			for runtime.NumGoroutine() > before+9 { // the parking goroutines end just after parking
				if time.Now().After(deadline) {
					t.Fatalf("%d goroutines with %d connections parked, %d with one connection waiting", runtime.NumGoroutine(), n, before)
				}
				time.Sleep(time.Millisecond)
			}
			for _, c := range conns {
				parkProtos[0].do(t, c, data)
			}
		})
	}
}

// TestReleaseDue: memory is handed back after a burst of parking ends,
// every releaseEvery sweeps while it lasts, and never for churn.
func TestReleaseDue(t *testing.T) {
	type sweep struct{ parked, parking int }
	for _, tc := range []struct {
		name   string
		sweeps []sweep
		want   []int // sweeps (indexes) that release
	}{
		{"few", []sweep{{0, 100}, {100, 0}, {100, 0}}, nil},
		{"burst then quiet", []sweep{{0, 5000}, {5000, 5000}, {10000, 0}, {10000, 0}}, []int{2}},
		{"not twice in a row", []sweep{{0, 0}, {300, 0}, {600, 0}, {900, 0}}, []int{1, 3}},
		{"long burst", []sweep{{0, 1}, {300, 1}, {600, 1}, {900, 1}, {1200, 1}, {1500, 1}, {1800, 1}, {2100, 1}, {2400, 1}, {2700, 1}, {3000, 1}}, []int{9}},
		{"churn", []sweep{{1000, 0}, {1000, 0}, {900, 100}, {1000, 100}, {950, 50}, {1000, 50}}, []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p parker
			var got []int
			for i, sw := range tc.sweeps {
				if p.releaseDue(sw.parked, sw.parking) {
					got = append(got, i)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("released after sweeps %v, want %v", got, tc.want)
			}
		})
	}
}

// TestParkDrainRequestArrived: a drain answers a request that reached a
// parked connection before the drain (its first byte in the socket),
// as it does for an idle connection not yet parked, instead of closing
// the connection on it (a reset, the request lost). The drain comes right
// after the request, before the poller has woken the connection, in most
// rounds.
func TestParkDrainRequestArrived(t *testing.T) {
	for _, p := range parkProtos {
		t.Run(p.name, func(t *testing.T) {
			for round := range 10 {
				ts, data := parkedServer(t, p)
				ts.client.SetDeadline(time.Now().Add(10 * time.Second))
				if p.http {
					io.WriteString(ts.client, "GET /f HTTP/1.1\r\nHost: a\r\n\r\n")
				} else {
					wire.WriteRequest(ts.client, &wire.Request{Op: wire.OpGet, Path: "/f"})
				}
				ts.srv.Drain()
				var body []byte
				if p.http {
					resp, err := http.ReadResponse(ts.br, &http.Request{Method: "GET"})
					if err != nil {
						t.Fatalf("round %d: the request sent before the drain: %v", round, err)
					}
					body, _ = io.ReadAll(resp.Body)
					resp.Body.Close()
				} else {
					r, err := wire.ReadResponse(ts.br)
					if err != nil {
						t.Fatalf("round %d: the request sent before the drain: %v", round, err)
					}
					body = make([]byte, r.BodyLen)
					io.ReadFull(ts.br, body)
				}
				if !bytes.Equal(body, data) {
					t.Fatalf("round %d: %d bytes, not the file's", round, len(body))
				}
				ts.client.Close() // ends an HTTP connection's lingering close
				select {
				case res := <-ts.result:
					// closed: the poller had answered it before the drain
					// began, and read the client's close next.
					if (res.Outcome != OutcomeDrained && res.Outcome != OutcomeClosed) || res.Requests != 2 {
						t.Fatalf("round %d: result %+v", round, res)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("round %d: the connection did not end after the drain", round)
				}
				ts.srv.Wait()
			}
		})
	}
}

// TestParkNotMidRequest: a kept-alive connection whose next request has
// started (one byte, then silence) is never parked, however many sweeps
// run: header_timeout ends it.
func TestParkNotMidRequest(t *testing.T) {
	for _, p := range parkProtos {
		t.Run(p.name, func(t *testing.T) {
			ts := newParkServer(t, p.wait, p.http, func(o *Options) { o.IdleTimeout = time.Minute; o.HeaderTimeout = 300 * time.Millisecond })
			data := random(4096)
			ts.write(t, "f", data)
			p.do(t, ts, data)
			first := "Z"
			if p.http {
				first = "G"
			}
			if p.wait == waitEpoll {
				// Parked at once after the response; the byte wakes it.
				parkAll(t, ts.srv, 1)
			}
			io.WriteString(ts.client, first)
			for deadline := time.Now().Add(10 * time.Second); ts.srv.parked() != 0; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the first byte of a request did not wake the parked connection")
				}
			}
			deadline := time.After(10 * time.Second)
			for {
				ts.srv.sweep(time.Now())
				if n := ts.srv.parked(); n != 0 {
					t.Fatal("a connection in the middle of a request was parked")
				}
				select {
				case res := <-ts.result:
					if res.Requests != 1 || (res.Outcome != OutcomeIdle && res.Outcome != OutcomeBadRequest) {
						t.Fatalf("result %+v", res)
					}
					return
				case <-deadline:
					t.Fatal("header_timeout did not end the connection")
				case <-time.After(time.Millisecond):
				}
			}
		})
	}
}
