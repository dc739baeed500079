package daemon

import (
	"errors"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
)

// startAcceptLoop runs the supervisor's accept loop on a new loopback
// listener, handing over to one fake worker, and returns the listener
// and the worker's end of the channel. afterBatch, if not nil, is the
// loop's test hook (Supervisor.afterBatch). The loop ends at cleanup.
func startAcceptLoop(t *testing.T, afterBatch func()) (*listener, *net.UnixConn) {
	t.Helper()
	s := &Supervisor{log: quietLog(), cfg: config.Default(), afterBatch: afterBatch}
	s.maxConns.Store(1 << 20)
	local, remote := channel(t)
	s.dispatch.Store(&[]*workerProc{{ch: local, pid: 100}})
	l := testListener(t, "127.0.0.1:0")
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.acceptLoop(l)
	}()
	t.Cleanup(func() {
		l.closed.Store(true)
		l.f.Close()
		<-done
	})
	return l, remote
}

// handedOver reads the worker's end of the channel until n connections
// have been handed over, and fails if they are not within a generous
// time: a connection the accept loop does not see stays queued for good
// unless another one arrives.
func handedOver(t *testing.T, remote *net.UnixConn, n int, what string) {
	t.Helper()
	remote.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, maxMsg)
	for got := 0; got < n; {
		m, fds, err := fdpass.Recv(remote, buf, make([]byte, fdpass.OOBSpace))
		closeFDs(fds)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: %d of %d connections handed over; the rest stay in the accept queue (a lost wake-up)", what, got, n)
		}
		if err != nil {
			t.Fatal(err)
		}
		if m == 0 || buf[0] != msgConns {
			continue
		}
		cs, err := parseConns(buf[1:m])
		if err != nil {
			t.Fatal(err)
		}
		got += len(cs)
	}
}

// TestAcceptLoopBackToBack: pairs of connections dialled back to back,
// each pair served before the next is dialled, are all handed over: the
// second of a pair often arrives while the loop hands over the first,
// and nothing comes after it to wake the loop again.
func TestAcceptLoopBackToBack(t *testing.T) {
	l, remote := startAcceptLoop(t, nil)
	const rounds = 200
	for i := range rounds {
		var cs [2]net.Conn
		for k := range cs {
			c, err := net.Dial("tcp", l.addr)
			if err != nil {
				t.Fatal(err)
			}
			cs[k] = c
		}
		handedOver(t, remote, len(cs), "round "+strconv.Itoa(i))
		for _, c := range cs {
			c.Close()
		}
	}
}

// TestAcceptLoopQueuedBetweenBatches: a connection queued after an
// accept batch found the queue empty, and before the loop waits again
// (while it hands the batch off), is accepted without waiting for yet
// another connection. The poller takes the listener's edge while nobody
// waits (pdReady), and a new SyscallConn().Read resets that
// (prepareRead) before it calls its function: a loop that then waited
// without trying accept4 first (cc8d310) waited for good; bench/run's
// new-connection section stuck every client. The hook stops the loop
// right after its first handoff, deterministically.
func TestAcceptLoopQueuedBetweenBatches(t *testing.T) {
	inHook, release := make(chan struct{}), make(chan struct{})
	hooked := false
	l, remote := startAcceptLoop(t, func() { // on the accept loop's goroutine
		if !hooked {
			hooked = true
			inHook <- struct{}{}
			<-release
		}
	})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // before the loop's cleanup, which waits for it
	dial := func() {
		t.Helper()
		c, err := net.Dial("tcp", l.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	dial()
	<-inHook // the first is handed over; the loop has not waited again
	dial()
	waitQueued(t, l, 1) // before the loop waits again
	free()
	handedOver(t, remote, 2, "a connection queued during the handoff of the one before")
}
