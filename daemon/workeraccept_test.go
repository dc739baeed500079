package daemon

import (
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
	"github.com/zfs-serve/zfs-serve/serve"
)

// newAcceptingWorker is a worker in the accept mode, on the worker's end
// of a channel, with limit connections at most, its server closed at the
// test's end.
func newAcceptingWorker(t *testing.T, remote *net.UnixConn, limit int) *worker {
	t.Helper()
	srv, err := serve.New(serve.Options{Root: t.TempDir(), Mode: "sendfile", HeaderTimeout: time.Minute, IdleTimeout: time.Minute}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	w := newWorker(remote, srv, quietLog())
	c := config.Default()
	c.Dispatch, c.Workers, c.MaxConnections = config.DispatchAccept, 1, limit
	w.acc = newAcceptor(w, c, 1000)
	return w
}

// acceptWorker is a worker in the accept mode with limit connections at
// most, its supervisor's end of the channel, and a listening socket.
func acceptWorker(t *testing.T, limit int) (*worker, *net.UnixConn, net.Listener) {
	t.Helper()
	local, remote := channel(t)
	w := newAcceptingWorker(t, remote, limit)
	go w.outbox() // done reports, as run starts it
	return w, local, listenFor(t, w)
}

// listenFor gives w (in the accept mode) a copy of a new loopback
// listening socket to accept on, and returns the socket.
func listenFor(t *testing.T, w *worker) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	rc, _ := ln.(*net.TCPListener).SyscallConn()
	fd := -1
	rc.Control(func(s uintptr) { fd, _ = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	w.listen(appendListen(nil, []listenMeta{{0, ln.Addr().String()}})[1:], []int{fd})
	return ln
}

// reports reads the supervisor's end of the channel and keeps the totals
// of msgAccepted and msgDone, failing if a done ever outruns the accepts.
type reports struct {
	mu             sync.Mutex
	accepted, done int
}

func (r *reports) read(t *testing.T, c *net.UnixConn) {
	buf := make([]byte, maxMsg)
	for {
		n, fds, err := fdpass.Recv(c, buf, make([]byte, fdpass.OOBSpace))
		closeFDs(fds)
		if err != nil || n == 0 {
			return
		}
		r.mu.Lock()
		switch buf[0] {
		case msgAccepted:
			k, _ := parseAccepted(buf[1:n])
			r.accepted += int(k)
		case msgDone:
			ds, _ := parseDone(buf[1:n])
			r.done += len(ds)
			if r.done > r.accepted {
				t.Errorf("%d connections reported done, %d accepted", r.done, r.accepted)
			}
		}
		r.mu.Unlock()
	}
}

func (r *reports) get() (accepted, done int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted, r.done
}

// waitFor polls cond until it holds (bounded).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWorkerAcceptLimit: a worker accepts up to its share of
// max_connections and then waits, with the rest left in the backlog, until
// a connection ends; it reports each connection accepted before done; a
// drain stops its accept loops and leaves the socket open.
func TestWorkerAcceptLimit(t *testing.T) {
	w, local, ln := acceptWorker(t, 2)
	var r reports
	go r.read(t, local)
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	state := func() (active int, waiting bool) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.active, w.acc.waiting
	}
	waitFor(t, "two connections and a loop waiting for room", func() bool { a, wt := state(); return a == 2 && wt })
	// Counted active before its goroutine runs: wait for the server to
	// count it too.
	waitFor(t, "two connections served", func() bool { return w.srv.Stats().Connections >= 2 })
	if got := w.srv.Stats().Connections; got != 2 {
		t.Fatalf("served %d connections at a limit of 2", got)
	}
	clients[0].Close()
	waitFor(t, "the third connection", func() bool { return w.srv.Stats().Connections == 3 })
	if a, _ := state(); a > 2 {
		t.Fatalf("%d connections active at a limit of 2", a)
	}
	waitFor(t, "the accepts and the done reported", func() bool { a, d := r.get(); return a == 3 && d == 1 })

	w.drain()
	w.mu.Lock()
	ls, stopped := len(w.acc.ls), w.acc.stopped
	w.mu.Unlock()
	if ls != 0 || !stopped {
		t.Fatalf("after drain: %d listeners, stopped %v", ls, stopped)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ac, err := ln.Accept() // still queued for the socket's other holders
	if err != nil {
		t.Fatal(err)
	}
	ac.Close()
	if got := w.srv.Stats().Connections; got != 3 {
		t.Errorf("a drained worker served %d connections, want 3", got)
	}
}

// TestWorkerListenAfterDrain: listeners that reach a draining worker are
// closed at once, not accepted on.
func TestWorkerListenAfterDrain(t *testing.T) {
	_, remote := channel(t)
	w := newAcceptingWorker(t, remote, config.Default().MaxConnections)
	w.drain()
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	w.listen(appendListen(nil, []listenMeta{{0, "x"}})[1:], []int{p[0]})
	if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_GETFD, 0); err == nil {
		t.Error("a draining worker kept the socket it was sent")
	}
	if len(w.acc.ls) != 0 {
		t.Error("a draining worker accepts")
	}
}

// TestWorkerAcceptLimitListeners: the limit holds across listeners. With
// connections queued on two listeners when the worker gets them, each
// accept loop used to compute its room from the same count and accept up
// to all of it: twice the limit.
func TestWorkerAcceptLimitListeners(t *testing.T) {
	const limit = 3
	local, remote := channel(t)
	var r reports
	go r.read(t, local)
	w := newAcceptingWorker(t, remote, limit)
	go w.outbox()
	var metas []listenMeta
	var fds []int
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		for range limit {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		}
		rc, _ := ln.(*net.TCPListener).SyscallConn()
		fd := -1
		rc.Control(func(s uintptr) { fd, _ = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
		metas = append(metas, listenMeta{0, ln.Addr().String()})
		fds = append(fds, fd)
	}
	w.listen(appendListen(nil, metas)[1:], fds)
	waitFor(t, "both accept loops waiting for room", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.acc.waiters == 2
	})
	if got := w.srv.Stats().Connections; got > limit {
		t.Fatalf("accepted %d connections at a limit of %d", got, limit)
	}
	w.drain()
}

// TestWorkerAcceptBackoffDrain: a drain stops an accept loop that backs
// off after an accept error (EMFILE, ENFILE, ...) at once: it used to
// sleep the backoff out, and the drain waited for it. The "socket" is a
// pipe, on which every accept4 fails (ENOTSOCK) as EMFILE would; the
// backoff is an hour, so a drain that waits for it never returns.
func TestWorkerAcceptBackoffDrain(t *testing.T) {
	_, remote := channel(t)
	w := newAcceptingWorker(t, remote, config.Default().MaxConnections)
	w.acc.retryMin, w.acc.retryMax = time.Hour, time.Hour
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	w.listen(appendListen(nil, []listenMeta{{0, "pipe"}})[1:], []int{p[0]})
	waitFor(t, "a failed accept", func() bool { return w.acc.failures.Load() > 0 })
	done := make(chan struct{})
	go func() {
		w.drain()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("drain still waits for the accept loop's backoff after 10 s")
	}
	w.mu.Lock()
	n := w.active
	w.mu.Unlock()
	if n != 0 {
		t.Errorf("%d connections active after failed accepts", n)
	}
}

// TestWorkerSetLimit: a budget from the supervisor (msgLimit) moves the
// worker's limit both ways, never above its descriptor capacity; a
// raise wakes the loops waiting for room.
func TestWorkerSetLimit(t *testing.T) {
	w, local, ln := acceptWorker(t, 1)
	var r reports
	go r.read(t, local)
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	limit := func() (int, int, bool) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.acc.limit, w.active, w.acc.waiting
	}
	waitFor(t, "one connection, a loop waiting", func() bool { _, a, wt := limit(); return a == 1 && wt })
	w.setLimit(appendLimit(nil, 3)[1:])
	waitFor(t, "three connections served", func() bool { return w.srv.Stats().Connections == 3 })
	w.setLimit(appendLimit(nil, 0)[1:])
	if l, _, _ := limit(); l != 0 {
		t.Errorf("limit %d after a budget of 0", l)
	}
	w.setLimit(appendLimit(nil, 1<<31)[1:])
	if l, _, _ := limit(); l != 1000 {
		t.Errorf("limit %d after a budget above the capacity of 1000", l)
	}
	w.drain()
}

// TestWorkerAcceptDonePrompt: in the accept mode every finished
// connection is reported promptly (within doneDelay), those the worker
// accepted itself included: the supervisor's budgets and counts are what
// it reported. They used to be left lazy (lazyDoneDelay) unless flagged
// by a handoff, which accepted ones never are.
func TestWorkerAcceptDonePrompt(t *testing.T) {
	local, remote := channel(t)
	var r reports
	go r.read(t, local)
	w := newAcceptingWorker(t, remote, 10)
	ln := listenFor(t, w)
	defer w.drain()
	var clients []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	waitFor(t, "two connections served", func() bool { return w.srv.Stats().Connections == 2 })
	clients[0].Close() // the other one still active, not draining
	if d := nextDone(t, w); !d.prompt {
		t.Fatalf("done %+v of a connection the worker accepted, want prompt", d)
	}
}
