package serve

import (
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestRunners: Start serves connections on runners that wait for the next
// one afterwards (so their stacks are reused), no more than
// maxIdleRunners of them at a time after a burst larger than that, and
// Close ends the waiting ones.
func TestRunners(t *testing.T) {
	ts := newHTTPServer(t)
	ts.write(t, "f", []byte("hello"))
	ts.client.Close()
	<-ts.result
	before := runtime.NumGoroutine()

	// A burst: more connections at once than runners may wait.
	const burst = 2 * maxIdleRunners
	var clients []net.Conn
	var wg sync.WaitGroup
	wg.Add(burst)
	for range burst {
		c, fd := loopback(t)
		clients = append(clients, c)
		ts.srv.Start(fd, ConnInfo{Client: c.LocalAddr().String(), Nonblocking: true}, func(Result) { wg.Done() })
	}
	for _, c := range clients {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(c)
		if err != nil || len(b) == 0 {
			t.Fatalf("response: %q, %v", b, err)
		}
	}
	wg.Wait()
	waitIdleRunners(t, ts.srv, maxIdleRunners)

	// The next connection reuses a waiting runner: no new goroutine.
	idle, started := ts.srv.run.idle.Load(), ts.srv.run.started.Load()
	c, fd := loopback(t)
	done := make(chan Result, 1)
	ts.srv.Start(fd, ConnInfo{Client: c.LocalAddr().String(), Nonblocking: true}, func(r Result) { done <- r })
	io.WriteString(c, "GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if b, err := io.ReadAll(c); err != nil || len(b) == 0 {
		t.Fatalf("response: %q, %v", b, err)
	}
	if r := <-done; r.Requests != 1 {
		t.Fatalf("result %+v", r)
	}
	waitIdleRunners(t, ts.srv, idle)
	if n := ts.srv.run.started.Load() - started; n != 0 {
		t.Errorf("%d runners started for a connection while %d waited", n, idle)
	}

	// Close ends the waiting runners.
	ts.srv.Close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Close, %d before the connections", n, before)
	}
}

// waitIdleRunners waits until s has want runners waiting.
func waitIdleRunners(t *testing.T, s *Server, want int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.run.idle.Load() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d runners waiting, want %d", s.run.idle.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}
