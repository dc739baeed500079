package daemon

import (
	"bytes"
	"log/slog"
	"net"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
	"github.com/zfs-serve/zfs-serve/serve"
)

// runReal runs a real worker in this process on the fake's channel, in
// the accept mode, whose accepts are reported only after an hour: as if
// it died within the report's batching window.
func (p *fakeProc) runReal(cfgMsg []byte) {
	wc, err := parseConfig(cfgMsg)
	if err != nil {
		p.exit("exit status 1")
		return
	}
	srv, err := serve.New(serve.Options{Root: "/", Mode: "sendfile", HeaderTimeout: time.Minute, IdleTimeout: time.Minute}, quietLog())
	if err != nil {
		p.exit("exit status 1")
		return
	}
	w := newWorker(p.ch, srv, quietLog())
	w.acc = newAcceptor(w, wc.Config, 1000)
	w.acc.reportDelay = time.Hour
	p.amu.Lock()
	p.real = w
	p.amu.Unlock()
	fdpass.Send(p.ch, appendU32(nil, msgReady, 0))
	w.run()
}

// syncBuffer is a log's destination that tests read.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestAcceptCutUnreported: connections a worker accepted and had not
// reported yet (msgAccepted is batched) when it died count in its
// connections_cut, and in the accepted total, as a handed-over
// connection does. They used to be missed.
func TestAcceptCutUnreported(t *testing.T) {
	var logs syncBuffer
	r := newRig(t, "dispatch = \"accept\"\nworkers = 1", "real")
	r.on(func(s *Supervisor) { s.log = slog.New(slog.NewTextHandler(&logs, nil)) })
	r.serving(1)
	p := r.proc(0)
	var w *worker
	r.until("the worker accepting", func(*Supervisor) bool {
		p.amu.Lock()
		w = p.real
		p.amu.Unlock()
		if w == nil {
			return false
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.acc.ls) == 1
	})
	t.Cleanup(w.stopAccepting)
	var addr string
	r.on(func(s *Supervisor) { addr = s.listeners[0].addr })
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		// The native magic, the start of a request: TCP_DEFER_ACCEPT
		// queues the connection now, and the worker waits for the rest.
		c.Write([]byte("ZQ"))
	}
	waitFor(t, "3 connections accepted", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.active == 3
	})
	p.exit("killed by signal SIGKILL")
	r.until("the exit", func(s *Supervisor) bool { return s.current.slots[0].restarts == 1 })
	if !strings.Contains(logs.String(), "connections_cut=3") {
		t.Errorf("the exit does not say 3 connections were cut:\n%s", logs.String())
	}
	r.on(func(s *Supervisor) {
		if n := s.metrics.accepted.Load(); n != 3 {
			t.Errorf("accepted total %d, want 3", n)
		}
	})
}

// TestAcceptCountWorkerCannotShrink: the worker gets the counter's memfd
// read-write, and runs as a less privileged user. Truncating it must
// fail: the supervisor's read of its mapping would then take SIGBUS and
// bring the whole server down.
func TestAcceptCountWorkerCannotShrink(t *testing.T) {
	c, fd, err := newAcceptCount()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, 1<<20); err == nil {
		t.Error("the worker could grow the shared count")
	}
	if err := unix.Ftruncate(fd, 0); err == nil {
		t.Error("the worker could truncate the shared count")
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if e := recover(); e != nil {
			t.Errorf("reading the count after the worker's truncate: %v", e)
		}
	}()
	if n := c.unreported(10); n != 0 {
		t.Errorf("unreported %d, want 0", n)
	}
}

// TestAcceptCountGarbage: what a worker wrote in the shared count is
// bounded by what it could have accepted and not reported: a worker
// that writes garbage there must not make connections_cut negative,
// nor add billions to the accepted total.
func TestAcceptCountGarbage(t *testing.T) {
	var logs syncBuffer
	r := newRig(t, "dispatch = \"accept\"\nworkers = 1\nmax_connections = 10", "ready")
	r.on(func(s *Supervisor) { s.log = slog.New(slog.NewTextHandler(&logs, nil)) })
	r.serving(1)
	p := r.proc(0)
	var w *workerProc
	r.until("the worker's sockets", func(s *Supervisor) bool {
		w = s.current.slots[0].w
		return w.accCount.Load() != nil
	})
	// The fake closed its memfd: stand in one the test writes.
	c, fd, err := newAcceptCount()
	if err != nil {
		t.Fatal(err)
	}
	count, err := mapAcceptCount(fd)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	r.on(func(*Supervisor) { w.accCount.Load().unreported(0); w.sentAcceptCount(c) })
	count.Store(1<<63 + 7)
	p.exit("killed by signal SIGKILL")
	r.until("the exit", func(s *Supervisor) bool { return s.current.slots[0].restarts == 1 })
	most := 10 + doneQueue + 4*maxBatch
	m := regexp.MustCompile(`connections_cut=(-?[0-9]+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no connections_cut logged:\n%s", logs.String())
	}
	if n, _ := strconv.Atoi(m[1]); n < 0 || n > most {
		t.Errorf("connections_cut=%d, want 0 to %d", n, most)
	}
	r.on(func(s *Supervisor) {
		if n := s.metrics.accepted.Load(); n > uint64(most) {
			t.Errorf("accepted total %d, want at most %d", n, most)
		}
	})
}

// TestAcceptCountNotForGone: a worker that died right after it reported
// ready (its channel reader has run, its exit is not handled yet) gets no
// shared count when dispatch is refreshed meanwhile: nobody would unmap
// it, and a worker crashing at its start would leak one mapping in the
// supervisor each time.
func TestAcceptCountNotForGone(t *testing.T) {
	r := newRig(t, "dispatch = \"accept\"\nworkers = 1", "ready")
	r.serving(1)
	p := r.proc(0)
	r.until("the worker's sockets", func(s *Supervisor) bool { return s.current.slots[0].w.accCount.Load() != nil })
	r.on(func(s *Supervisor) {
		w := s.current.slots[0].w
		// It dies; its exit waits for this function, on the loop.
		p.exit("exit status 2")
		waitFor(t, "its channel reader done", func() bool { return w.isGone() && w.accCount.Load() == nil })
		delete(s.am.given, w) // as a worker not given yet (it was just ready)
		s.giveListeners([]*workerProc{w})
		if c := w.accCount.Load(); c != nil {
			c.unreported(0)
			t.Error("a gone worker was given a shared count")
		}
	})
}
