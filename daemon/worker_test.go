package daemon

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
	"github.com/zfs-serve/zfs-serve/serve"
	"github.com/zfs-serve/zfs-serve/wire"
)

// channel returns both ends of a supervisor-worker channel.
func channel(t *testing.T) (local, remote *net.UnixConn) {
	t.Helper()
	l, r, err := fdpass.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := fdpass.FileConn(r, "remote")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); rc.Close() })
	return l, rc
}

func recvMsg(t *testing.T, c *net.UnixConn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, maxMsg)
	n, fds, err := fdpass.Recv(c, buf, make([]byte, fdpass.OOBSpace))
	closeFDs(fds)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestSendDrainWaitsForRoom: a drain message that meets a full channel is
// sent once there is room, and the worker is neither killed nor skipped.
func TestSendDrainWaitsForRoom(t *testing.T) {
	local, remote := channel(t)
	s := &Supervisor{log: quietLog()}
	w := &workerProc{ch: local, pid: 1}
	filler := bytes.Repeat([]byte{msgStatusReq}, 4096)
	sent := 0
	for {
		err := fdpass.TrySend(local, filler)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sent++
	}
	s.sendDrain(w) // w.proc is nil: killing it would panic the test
	if !w.draining || w.killed {
		t.Fatalf("draining %v killed %v", w.draining, w.killed)
	}
	for range sent {
		if m := recvMsg(t, remote); len(m) != len(filler) {
			t.Fatalf("filler message of %d bytes", len(m))
		}
	}
	if m := recvMsg(t, remote); len(m) != 1 || m[0] != msgDrain {
		t.Fatalf("after the filler: %v, want the drain message", m)
	}
}

// TestSendToSkipsDeadWorker: once a worker's count has been written off,
// no handoff counts against it (the counts would drift otherwise).
func TestSendToSkipsDeadWorker(t *testing.T) {
	s := &Supervisor{log: quietLog()}
	deadCh, deadRemote := channel(t)
	liveCh, liveRemote := channel(t)
	dead := &workerProc{ch: deadCh, pid: 1}
	markGone(dead)
	live := &workerProc{ch: liveCh, pid: 2}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFDs(fds[:])
	d := &dispatcher{s: s, metas: []connMeta{{id: 7, client: "c"}}, mkeys: []string{""}}
	if !d.sendTo([]*workerProc{dead, live}, 0, fds[:1]) {
		t.Fatal("not sent to the live worker")
	}
	if dead.active.Load() != 0 || live.active.Load() != 1 || s.inflight.Load() != 1 {
		t.Fatalf("active dead %d live %d, inflight %d; want 0 1 1", dead.active.Load(), live.active.Load(), s.inflight.Load())
	}
	if m := recvMsg(t, liveRemote); m[0] != msgConns {
		t.Fatalf("live worker got message type %d", m[0])
	}
	deadRemote.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if n, _, err := fdpass.Recv(deadRemote, make([]byte, 64), make([]byte, fdpass.OOBSpace)); err == nil {
		t.Fatalf("the dead worker got a %d-byte message", n)
	}
	// With only the dead one, nothing is sent and nothing counted.
	if d.sendTo([]*workerProc{dead}, 0, fds[:1]) || s.inflight.Load() != 1 {
		t.Fatalf("sent to a dead worker, inflight %d", s.inflight.Load())
	}
}

func testWorker(t *testing.T) (*worker, *net.UnixConn, string) {
	t.Helper()
	local, remote := channel(t)
	root := t.TempDir()
	srv, err := serve.New(serve.Options{Root: root, Mode: config.ModeSendfile, Chunk: 64 << 10,
		HeaderTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second, SendTimeout: 5 * time.Second}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return newWorker(remote, srv, quietLog()), local, root
}

// TestWorkerReportsLostConnections: connections whose fds the kernel
// dropped (MSG_CTRUNC) are reported done, so the supervisor's counts for
// this worker do not leak.
func TestWorkerReportsLostConnections(t *testing.T) {
	w, sup, _ := testWorker(t)
	msg := appendConns(nil, []connMeta{{id: 11, client: "a"}, {id: 12, client: "b"}})
	w.startConns(msg[1:], nil, true)
	m := recvMsg(t, sup)
	if m[0] != msgDone {
		t.Fatalf("message type %d, want msgDone", m[0])
	}
	ds, err := parseDone(m[1:])
	if err != nil || len(ds) != 2 || ds[0].id != 11 || ds[1].id != 12 || ds[0].outcome != "dropped" {
		t.Fatalf("done %+v %v", ds, err)
	}
}

// TestDrainedWorkerServesQueuedConnections: a connection the supervisor
// queued right after the drain message (its dispatch raced the drain) is
// served, not refused; then the worker shuts its channel's read side (the
// supervisor's next handoff fails over with EPIPE) and exits 0.
func TestDrainedWorkerServesQueuedConnections(t *testing.T) {
	w, sup, root := testWorker(t)
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	client, fd := acceptedPair(t) // refuse_test.go
	if err := fdpass.Send(sup, []byte{msgDrain}); err != nil {
		t.Fatal(err)
	}
	if err := fdpass.Send(sup, appendConns(nil, []connMeta{{id: 5, client: "c"}}), fd); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	exit := make(chan int, 1)
	go func() { exit <- w.run() }()
	client.SetDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteRequest(client, &wire.Request{Op: wire.OpGet, Path: "/f"}); err != nil {
		t.Fatal(err)
	}
	r, err := wire.ReadResponse(client)
	if err != nil || r.Status != wire.StatusOK || r.BodyLen != 5 {
		t.Fatalf("response %+v %v, want the file", r, err)
	}
	if b, err := io.ReadAll(client); err != nil || string(b) != "hello" {
		t.Fatalf("body %q %v, then close", b, err)
	}
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit status %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the drained worker did not exit")
	}
	ds, err := parseDone(recvMsg(t, sup)[1:])
	if err != nil || len(ds) != 1 || ds[0].id != 5 || ds[0].outcome != string(serve.OutcomeDrained) || ds[0].bytes != 5 {
		t.Fatalf("done %+v %v", ds, err)
	}
	if err := fdpass.TrySend(sup, []byte{msgStatusReq}); !errors.Is(err, unix.EPIPE) {
		t.Fatalf("handoff to a drained worker: %v, want EPIPE", err)
	}
}

// nextDone is the next finished connection w reports to its outbox.
func nextDone(t *testing.T, w *worker) doneMeta {
	t.Helper()
	select {
	case d := <-w.done:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("no done report")
		return doneMeta{}
	}
}

// handOff hands w one message of connections described by ms, and
// returns their clients.
func handOff(t *testing.T, w *worker, ms ...connMeta) []net.Conn {
	t.Helper()
	var clients []net.Conn
	var fds []int
	for range ms {
		c, fd := acceptedPair(t)
		clients, fds = append(clients, c), append(fds, fd)
	}
	w.startConns(appendConns(nil, ms)[1:], fds, false)
	return clients
}

// TestWorkerDonePrompt: a finished connection is reported promptly
// (within doneDelay) unless the supervisor flagged it connLazy, when the
// worker falls idle, or when it drains; otherwise lazily.
func TestWorkerDonePrompt(t *testing.T) {
	w, _, _ := testWorker(t)
	// The prompt one first: a later handoff flagged lazy says no limit
	// is near any longer (TestWorkerDonePromptPressure).
	prompt := handOff(t, w, connMeta{id: 3})
	lazy := handOff(t, w, connMeta{id: 1, flags: connLazy}, connMeta{id: 2, flags: connLazy})
	lazy[0].Close() // two others still active: lazy
	if d := nextDone(t, w); d.id != 1 || d.prompt {
		t.Fatalf("first done %+v, want id 1 not prompt", d)
	}
	prompt[0].Close() // not flagged lazy by the supervisor
	if d := nextDone(t, w); d.id != 3 || !d.prompt {
		t.Fatalf("second done %+v, want id 3 prompt", d)
	}
	lazy[1].Close() // the last: the worker falls idle
	if d := nextDone(t, w); d.id != 2 || !d.prompt {
		t.Fatalf("third done %+v, want id 2 prompt", d)
	}

	// Draining: every one is prompt.
	clients := handOff(t, w, connMeta{id: 4, flags: connLazy}, connMeta{id: 5, flags: connLazy})
	w.mu.Lock()
	w.draining = true
	w.mu.Unlock()
	clients[0].Close()
	if d := nextDone(t, w); d.id != 4 || !d.prompt {
		t.Fatalf("done while draining %+v, want id 4 prompt", d)
	}
	clients[1].Close()
	nextDone(t, w)
}

// TestWorkerDonePromptPressure: a connection handed off while no limit
// was near (connLazy) is reported promptly if it ends after a later
// handoff the supervisor did not flag lazy (a limit is near now: it counts
// against it until reported), and lazily again once a later one is.
// Whether its count matters used to be judged only at its own handoff, so
// a long transfer handed off at low load and ending at the limit held its
// place for lazyDoneDelay.
func TestWorkerDonePromptPressure(t *testing.T) {
	w, _, _ := testWorker(t)
	old := handOff(t, w, connMeta{id: 1, flags: connLazy}, connMeta{id: 2, flags: connLazy}, connMeta{id: 3, flags: connLazy}) // no limit near
	defer old[2].Close()
	held := handOff(t, w, connMeta{id: 4}) // a limit is near now
	defer held[0].Close()
	old[0].Close()
	if d := nextDone(t, w); d.id != 1 || !d.prompt {
		t.Fatalf("done %+v after a handoff not flagged lazy, want id 1 prompt", d)
	}
	quiet := handOff(t, w, connMeta{id: 5, flags: connLazy}) // no longer
	defer quiet[0].Close()
	old[1].Close()
	if d := nextDone(t, w); d.id != 2 || d.prompt {
		t.Fatalf("done %+v after a handoff flagged lazy, want id 2 lazy", d)
	}
}

// TestWorkerDoneUnflaggedPrompt: a connection handed off without a flag
// is reported promptly. A supervisor from before the lazy reports (a
// package upgrade and a reload run the new worker binary under the old
// supervisor, TestReloadRunsBinaryOnDisk) flags nothing: its per-client
// and max_connections counts must lag no more than they used to. Only a
// connection flagged connLazy may wait lazyDoneDelay.
func TestWorkerDoneUnflaggedPrompt(t *testing.T) {
	w, _, _ := testWorker(t)
	clients := handOff(t, w, connMeta{id: 1}, connMeta{id: 2})
	defer clients[1].Close()
	clients[0].Close() // the other one still active, not draining
	if d := nextDone(t, w); d.id != 1 || !d.prompt {
		t.Fatalf("done %+v of an unflagged connection, want id 1 prompt", d)
	}
}

// TestDrainFlushesLazyReports: a drain sends the done reports that wait
// lazily at once, so that the supervisor's counts are exact while the
// workers drain (a kill's connections_cut, the exit status).
func TestDrainFlushesLazyReports(t *testing.T) {
	w, sup, _ := testWorker(t)
	w.lazyDelay = time.Hour
	go w.outbox()
	t.Cleanup(func() { close(w.done) })
	w.done <- doneMeta{id: 7, outcome: "closed"}
	w.drain()
	sup.SetReadDeadline(time.Now().Add(5 * time.Second))
	ds, err := parseDone(recvMsg(t, sup)[1:])
	if err != nil || len(ds) != 1 || ds[0].id != 7 {
		t.Fatalf("done %+v %v, want id 7", ds, err)
	}
}
