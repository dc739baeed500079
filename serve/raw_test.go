package serve

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/internal/rawcall"
	"github.com/zfs-serve/zfs-serve/wire"
)

// dropCache asks the kernel to forget the cached pages of the file at p,
// and skips the test where it cannot (tmpfs keeps them).
func dropCache(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fsync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if rawcall.Resident(int(f.Fd()), 0, 1) {
		t.Skipf("the page cache of %s cannot be dropped here (tmpfs?)", p)
	}
}

func needCachestat(t *testing.T) {
	t.Helper()
	if err := rawcall.ProbeCachestat(); err != nil {
		t.Skipf("no cachestat(2) here: %v", err)
	}
}

// TestSendfileUncached: a file whose pages are not cached is sent on the
// scheduler's path and arrives whole; afterwards its pages are cached and
// the next send takes the raw one.
func TestSendfileUncached(t *testing.T) {
	needCachestat(t)
	ts := newTestServer(t, config.ModeSendfile)
	data := random(3<<20 + 12345)
	ts.write(t, "f", data)
	p := filepath.Join(ts.root, "f")
	for i := range 2 {
		if i == 0 {
			dropCache(t, p)
		}
		r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"})
		if r.Status != wire.StatusOK || !bytes.Equal(body, data) {
			t.Fatalf("round %d: status %v, %d bytes, equal=%v", i, r.Status, len(body), bytes.Equal(body, data))
		}
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !rawcall.Resident(int(f.Fd()), 0, len(data)) {
		t.Errorf("the file's pages are not cached after sending it")
	}
}

// TestRunBlockingSocket: a worker's reads and sends are raw (internal/rawcall), so a
// blocking socket would hold the worker's only P, and stop every other
// connection and the garbage collector, while it waits for its client. A
// blocking socket is refused, not served.
func TestRunBlockingSocket(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	ts.write(t, "f", []byte("hello"))
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	client := os.NewFile(uintptr(fds[1]), "client")
	defer client.Close()
	// A request ready before the server starts, so that a server that
	// did serve the blocking socket would not wait on it.
	if err := wire.WriteRequest(client, &wire.Request{Op: wire.OpGet, Path: "/f"}); err != nil {
		t.Fatal(err)
	}
	unix.Shutdown(fds[1], unix.SHUT_WR)
	res := make(chan Result, 1)
	go ts.srv.Run(fds[0], ConnInfo{Client: "test"}, func(r Result) { res <- r })
	if r := <-res; r.Outcome != OutcomeError || r.Requests != 0 {
		t.Errorf("a blocking socket was served: outcome %s, %d requests", r.Outcome, r.Requests)
	}
}

// TestSendfileRawDecidedPerAttempt: whether a sendfile may be raw is
// decided at every attempt, not once per chunk: after a wait for the
// socket (a slow client: up to send_timeout) the chunk's pages may have
// left the cache, and a raw sendfile would then read them from disk while
// holding the worker.
func TestSendfileRawDecidedPerAttempt(t *testing.T) {
	needCachestat(t)
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, random(256<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	c := &conn{s: &Server{}, atimeOK: true} // (the access time is send.go's other condition)
	const n = 64 << 10
	c.op = sockOp{kind: opSendfile, fd: int(f.Fd()), len: n}
	c.doOp(uintptr(fds[0]))
	if c.op.err != nil {
		t.Fatal(c.op.err)
	}
	if !c.op.raw {
		t.Error("an attempt on a cached file was not raw")
	}
	// The attempt that comes after a wait, the pages gone meanwhile (the
	// socket holds on to the pages it was given until they are read).
	buf := make([]byte, n)
	for {
		if _, err := unix.Read(fds[1], buf); err != nil {
			break
		}
	}
	dropCache(t, p)
	c.op = sockOp{kind: opSendfile, fd: int(f.Fd()), len: n, raw: true}
	c.doOp(uintptr(fds[0]))
	if c.op.raw {
		t.Errorf("an attempt on pages no longer cached was raw (err %v)", c.op.err)
	}
}
