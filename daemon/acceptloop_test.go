package daemon

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
)

// TestAcceptLoopQueuedBetweenBatches: a connection queued after an
// accept batch found the queue empty, and before the loop waits again
// (while it hands the batch off), is accepted. The runtime poller forgets
// an edge that came before the wait begins, so the first accept4 of each
// wait must be made even though the last one returned EAGAIN: a loop
// that skipped it left such a connection in the queue until another one
// came (found by bench/run under new connections: every client stuck).
func TestAcceptLoopQueuedBetweenBatches(t *testing.T) {
	s := &Supervisor{log: quietLog(), cfg: config.Default()}
	s.maxConns.Store(100)
	local, remote := channel(t)
	ws := []*workerProc{{ch: local, pid: 100}}
	s.dispatch.Store(&ws)

	l, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.closed.Store(true); l.f.Close() })
	inHook, release := make(chan struct{}), make(chan struct{})
	hooked := false
	s.afterBatch = func() { // on the accept loop's goroutine
		if !hooked {
			hooked = true
			inHook <- struct{}{}
			<-release
		}
	}
	go s.acceptLoop(l)

	dial := func() {
		t.Helper()
		c, err := net.Dial("tcp", l.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	dial()
	if m := recvMsg(t, remote); m[0] != msgConns {
		t.Fatalf("message type %d, want conns", m[0])
	}
	<-inHook // the first batch is handed off; the loop has not waited yet
	dial()
	// In the queue (TCP_INFO's unacked is a listener's queue length),
	// before the loop waits again.
	rc, err := l.f.SyscallConn() // not Fd(): that would make it blocking
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		var ti *unix.TCPInfo
		var ierr error
		rc.Control(func(fd uintptr) { ti, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
		if ierr != nil {
			t.Fatal(ierr)
		}
		if ti.Unacked > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second connection never reached the accept queue")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	if m := recvMsg(t, remote); m[0] != msgConns {
		t.Fatalf("message type %d, want conns", m[0])
	}
}
