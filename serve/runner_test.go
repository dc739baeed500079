package serve

import (
	"io"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"
	"unsafe"
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
	serveBurst(t, ts.srv, 2*maxIdleRunners, "GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
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

// serveBurst starts n connections on s at once, then sends each the
// request (which asks for the close) and reads its whole answer, and
// waits until every one has ended.
func serveBurst(t *testing.T, s *Server, n int, request string) {
	t.Helper()
	var clients []net.Conn
	var wg sync.WaitGroup
	wg.Add(n)
	for range n {
		c, fd := loopback(t)
		clients = append(clients, c)
		s.Start(fd, ConnInfo{Client: c.LocalAddr().String(), Nonblocking: true}, func(Result) { wg.Done() })
	}
	for _, c := range clients {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, request); err != nil {
			t.Fatal(err)
		}
		if b, err := io.ReadAll(c); err != nil || len(b) == 0 {
			t.Fatalf("response: %q, %v", b, err)
		}
	}
	wg.Wait()
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

// TestReserveStack: after reserveStack, a goroutine's calls may use most
// of stackReserve without the stack growing: it is not copied, so a
// local variable stays where it was. Were reserveStack's frame shrunk (a
// compiler that saw through the array) or the call dropped, runners
// would grow their stacks deep in a request again, copying every frame.
func TestReserveStack(t *testing.T) {
	// A collection may shrink a stack, which moves it too.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	moved := make(chan bool)
	go func() {
		reserveStack()
		var x byte
		at := uintptr(unsafe.Pointer(&x))
		useStack(stackReserve * 3 / 4)
		moved <- uintptr(unsafe.Pointer(&x)) != at
	}()
	if <-moved {
		t.Errorf("the stack was copied in a call using %d bytes after reserveStack", stackReserve*3/4)
	}
}

// TestRunnerStack: after a request, a runner's stack is 8 KiB, as a
// goroutine's grows to for a request without reserveStack: the reserve
// grew it once, at the top frame, and not further. A reserve whose frame
// and the runtime's guard do not fit in 8 KiB gets a 16 KiB stack, half
// of it never used: twice the memory per busy connection.
func TestRunnerStack(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's stack guard is larger")
	}
	ts := newHTTPServer(t)
	ts.write(t, "f", make([]byte, 64<<10))
	ts.client.Close()
	<-ts.result
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // a collection shrinks stacks
	const n = maxIdleRunners
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	serveBurst(t, ts.srv, n, "GET /f HTTP/1.1\r\nHost: x\r\nRange: bytes=0-10,20-30\r\nConnection: close\r\n\r\n")
	waitIdleRunners(t, ts.srv, n)
	runtime.ReadMemStats(&after)
	if per := (int64(after.StackInuse) - int64(before.StackInuse)) / n; per > 12<<10 {
		t.Errorf("%d runners hold %d bytes of stack each after a request, want 8 KiB", n, per)
	}
}

// useStack uses about n bytes of stack, in frames of about 512.
//
//go:noinline
func useStack(n int) byte {
	var a [512]byte
	a[n&(len(a)-1)] = byte(n)
	if n <= len(a) {
		return a[0]
	}
	return useStack(n-len(a)) + a[(n+1)&(len(a)-1)]
}
