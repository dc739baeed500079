package serve

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// TestLeaderStress: many kept-alive connections, each sending a mix of
// requests the leader serves itself (cache hits from memory, HEAD, a
// range, a 304) and requests that make it hand its place on (a miss, a
// body not in memory, pipelining, a request in pieces), some clients
// vanishing mid-response, then a drain while requests are in flight:
// every answer is whole, and every connection ends (none is lost, none
// served twice). Run it under -race. Bounded by rounds and by time.
func TestLeaderStress(t *testing.T) {
	ts, small, big, ks := stressSetup(t, true)
	// read reads one response to method and checks it.
	read := func(k *keptConn, method string, code int, want []byte) error {
		resp, err := http.ReadResponse(k.br, &http.Request{Method: method})
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != code || (want != nil && !bytes.Equal(body, want)) {
			return fmt.Errorf("%s: status %d, %d bytes", method, resp.StatusCode, len(body))
		}
		return nil
	}
	get := "GET /f HTTP/1.1\r\nHost: a\r\n\r\n"
	stress(t, ks, func(k *keptConn) { io.WriteString(k.c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n") }, func(k *keptConn, i, r int) error {
		var err error
		switch (i*7 + r) % 8 {
		case 0:
			io.WriteString(k.c, get)
			err = read(k, "GET", 200, small)
		case 1:
			io.WriteString(k.c, "GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n")
			err = read(k, "GET", 404, nil)
		case 2:
			io.WriteString(k.c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
			err = read(k, "GET", 200, big)
		case 3:
			io.WriteString(k.c, get+get)
			if err = read(k, "GET", 200, small); err == nil {
				err = read(k, "GET", 200, small)
			}
		case 4:
			io.WriteString(k.c, get[:7])
			io.WriteString(k.c, get[7:])
			err = read(k, "GET", 200, small)
		case 5:
			io.WriteString(k.c, "HEAD /f HTTP/1.1\r\nHost: a\r\n\r\n")
			err = read(k, "HEAD", 200, []byte{})
		case 6:
			io.WriteString(k.c, "GET /f HTTP/1.1\r\nHost: a\r\nRange: bytes=0-9\r\n\r\n")
			err = read(k, "GET", 206, small[:10])
		case 7:
			io.WriteString(k.c, "GET /f HTTP/1.1\r\nHost: a\r\nIf-None-Match: *\r\n\r\n")
			err = read(k, "GET", 304, []byte{})
		}
		return err
	})
	t.Logf("%d requests, %d hand-overs of the leader's place", ts.srv.Stats().HTTPRequests, ts.srv.leadHandoffs.Load())
	// A drain while requests arrive: each is answered whole or the
	// connection closes cleanly, between responses.
	for _, k := range ks {
		io.WriteString(k.c, get)
	}
	ts.srv.Drain()
	for i, k := range ks {
		if err := read(k, "GET", 200, small); err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			// A vanished client's own close.
			if i%5 != 4 {
				t.Errorf("connection %d at the drain: %v", i, err)
			}
		}
		k.c.Close()
	}
	waitAllEnded(t, ts)
}

// stressSetup is the leader stress tests' server (HTTP or native), with
// the open-file cache kept for the whole test, a small file "f" served
// from memory, a big one "big" that is not, and 16 kept-alive connections.
func stressSetup(t *testing.T, http bool) (ts *testServer, small, big []byte, ks []*keptConn) {
	settleNow(t)
	ts = newParkServer(t, waitEpoll, http, func(o *Options) {
		o.FileCache, o.FileCacheValid, o.IdleTimeout = time.Hour, time.Hour, time.Minute
	})
	small, big = random(4096), random(inlineMax+1)
	ts.write(t, "f", small)
	ts.write(t, "big", big)
	ks = make([]*keptConn, 16)
	for i := range ks {
		ks[i] = ts.dialKept(t, false)
	}
	return ts, small, big, ks
}

// TestLeaderStressNative is TestLeaderStress in the native protocol:
// cache hits from memory, a miss, a body not in memory, STAT, pipelining,
// a header in pieces and a path after its header, clients vanishing.
func TestLeaderStressNative(t *testing.T) {
	ts, small, big, ks := stressSetup(t, false)
	read := func(k *keptConn, status wire.Status, want []byte) error {
		r, err := wire.ReadResponse(k.br)
		if err != nil {
			return err
		}
		body := make([]byte, r.BodyLen)
		if _, err := io.ReadFull(k.br, body); err != nil {
			return err
		}
		if r.Status != status || (want != nil && !bytes.Equal(body, want)) {
			return fmt.Errorf("status %v, %d bytes", r.Status, len(body))
		}
		return nil
	}
	req := func(op wire.Op, p string) []byte { return wire.AppendRequest(nil, &wire.Request{Op: op, Path: p}) }
	get := req(wire.OpGet, "/f")
	stress(t, ks, func(k *keptConn) { k.c.Write(req(wire.OpGet, "/big")) }, func(k *keptConn, i, r int) error {
		var err error
		switch (i*7 + r) % 7 {
		case 0:
			k.c.Write(get)
			err = read(k, wire.StatusOK, small)
		case 1:
			k.c.Write(req(wire.OpGet, "/nothing"))
			err = read(k, wire.StatusNotFound, nil)
		case 2:
			k.c.Write(req(wire.OpGet, "/big"))
			err = read(k, wire.StatusOK, big)
		case 3:
			k.c.Write(append(append([]byte(nil), get...), get...))
			if err = read(k, wire.StatusOK, small); err == nil {
				err = read(k, wire.StatusOK, small)
			}
		case 4:
			k.c.Write(get[:7])
			k.c.Write(get[7:])
			err = read(k, wire.StatusOK, small)
		case 5:
			k.c.Write(get[:wire.RequestHeaderLen])
			k.c.Write(get[wire.RequestHeaderLen:])
			err = read(k, wire.StatusOK, small)
		case 6:
			k.c.Write(req(wire.OpStat, "/f"))
			err = read(k, wire.StatusOK, []byte{})
		}
		return err
	})
	t.Logf("%d requests, %d hand-overs of the leader's place", ts.srv.Stats().NativeRequests, ts.srv.leadHandoffs.Load())
	for _, k := range ks {
		k.c.Close()
	}
	waitAllEnded(t, ts)
}

// stress runs do on each of ks's connections, round after round, for
// stressRounds rounds or stressFor, whichever ends first; do returns what
// a round found wrong. Every fifth connection vanishes a third of the
// way through: gone sends it a request whose response the sockets do not
// hold, and it closes once the response has started.
func stress(t *testing.T, ks []*keptConn, gone func(k *keptConn), do func(k *keptConn, i, r int) error) {
	t.Helper()
	stop := time.Now().Add(stressFor)
	var wg sync.WaitGroup
	for i, k := range ks {
		wg.Go(func() {
			k.c.SetDeadline(time.Now().Add(30 * time.Second))
			for r := range stressRounds {
				if time.Now().After(stop) {
					return
				}
				if i%5 == 4 && r == stressRounds/3 {
					gone(k)
					k.br.Peek(1)
					k.c.Close()
					return
				}
				if err := do(k, i, r); err != nil {
					t.Errorf("connection %d round %d: %v", i, r, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// The bounds of a stress test: rounds per connection, and time.
const (
	stressRounds = 400
	stressFor    = 3 * time.Second
)

// waitAllEnded checks, once every test client has closed (ts.client, the
// one newParkServer made, here too), that every connection ends and
// leaves the registry.
func waitAllEnded(t *testing.T, ts *testServer) {
	t.Helper()
	ts.client.Close()
	ended := make(chan struct{})
	go func() { ts.srv.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(20 * time.Second):
		t.Fatalf("connections left after every client closed: %d", ts.srv.Stats().Active)
	}
	if r := ts.srv.registered(); r != 0 {
		t.Fatalf("%d connections left in the registry", r)
	}
}
