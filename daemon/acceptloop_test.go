package daemon

import (
	"errors"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
)

// startAcceptLoop runs the supervisor's accept loop on a new loopback
// listener, handing over to one fake worker, whose end of the channel it
// returns with the worker and the listener. The loop ends at cleanup.
func startAcceptLoop(t *testing.T) (*Supervisor, *listener, *workerProc, *net.UnixConn) {
	t.Helper()
	s := &Supervisor{log: quietLog(), cfg: config.Default()}
	s.maxConns.Store(1 << 20)
	local, remote := channel(t)
	w := &workerProc{ch: local, pid: 100}
	s.dispatch.Store(&[]*workerProc{w})
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
	return s, l, w, remote
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

// TestAcceptLoopEdgeDuringHandoff: a connection queued while the accept
// loop hands over the batch before it, which ended at EAGAIN, is accepted
// without waiting for yet another connection. The poller takes the
// listener's readiness edge while nobody waits for it (pdReady), and a
// new SyscallConn().Read resets that (prepareRead) before it calls its
// function: a loop that then waited without trying accept4 first would
// wait for good.
func TestAcceptLoopEdgeDuringHandoff(t *testing.T) {
	s, l, w, remote := startAcceptLoop(t)
	// Hold the handoff of the first connection after its accept.
	w.sendMu.Lock()
	locked := true
	defer func() {
		if locked {
			w.sendMu.Unlock()
		}
	}()
	c1, err := net.Dial("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	for s.metrics.accepted.Load() < 1 { // in distribute: its batch ended at EAGAIN
		time.Sleep(time.Millisecond)
	}
	c2, err := net.Dial("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	waitQueued(t, l, 1)
	// Let the runtime's poller take the edge of c2 while the loop does
	// not wait for it: any idle P polls, so this goroutine's sleep is
	// enough. (Were it not, the test would pass without testing this,
	// never fail wrongly.)
	time.Sleep(20 * time.Millisecond)
	w.sendMu.Unlock()
	locked = false
	handedOver(t, remote, 2, "a connection queued during the handoff of the one before")
}

// TestAcceptLoopBackToBack: pairs of connections dialled back to back,
// each pair served before the next is dialled, are all handed over: the
// second of a pair often arrives while the loop hands over the first,
// and nothing comes after it to wake the loop again.
func TestAcceptLoopBackToBack(t *testing.T) {
	_, l, _, remote := startAcceptLoop(t)
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
