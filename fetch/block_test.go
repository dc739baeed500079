package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/wire"
)

// countBlocking counts the bodies received on a blocking socket from now
// until the test ends.
func countBlocking(t *testing.T) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	testHookBlock = func() { n.Add(1) }
	t.Cleanup(func() { testHookBlock = nil })
	return &n
}

// stallFirstGet is a hook that makes the first GET send at bytes of its
// body and then nothing, and records when those bytes were out.
func stallFirstGet(at int64, when *atomic.Int64) func(int, wire.Request) fault {
	return onFirstGet(fault{stallAt: at, stalled: func() { when.Store(time.Now().UnixNano()) }})
}

// fileOrStreamJob fetches /f of s into a new file: as a download (Dst) or,
// if stream, as a stream written to it (Out). It returns the file's path.
func fileOrStreamJob(t *testing.T, s *fakeServer, stream bool) (Job, string) {
	t.Helper()
	job := Job{Src: s.target("/f")}
	dst := filepath.Join(t.TempDir(), "f")
	if !stream {
		job.Dst = dst
		return job, dst
	}
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	job.Out, job.Name = out, "-"
	return job, dst
}

// A server that stops sending in the middle of a body received on a
// blocking socket is given up on after the stall timeout (SO_RCVTIMEO),
// reported as a timeout, and the retry completes the file.
func TestBlockingReceiveStall(t *testing.T) {
	const stall = 300 * time.Millisecond
	data := randBytes(3<<20+5, 21)
	for _, mode := range []RecvMode{RecvCopy, RecvSplice, RecvMmap} {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s-stream=%v", mode, stream), func(t *testing.T) {
				blocked := countBlocking(t)
				s := newFakeServer(t)
				s.put("/f", data, mtime1)
				var stalledAt atomic.Int64
				s.hook = stallFirstGet(1<<20, &stalledAt)
				c, rec := testClient(t, Options{Recv: mode, StallTimeout: stall})
				job, dst := fileOrStreamJob(t, s, stream)
				if _, err := c.Fetch(context.Background(), job); err != nil {
					t.Fatal(err)
				}
				if stream {
					got, _ := os.ReadFile(dst)
					if string(got) != string(data) {
						t.Fatalf("stream: %d bytes, not the %d sent", len(got), len(data))
					}
				} else {
					checkFile(t, dst, data, mtime1)
				}
				r := rec.kinds(EventRetry)
				if len(r) != 1 || Reason(r[0].Err) != "connection timed out" {
					t.Fatalf("retries: %+v", r)
				}
				// Both attempts' bodies (3 MiB, then the last 2) went blocking.
				if n := blocked.Load(); n != 2 {
					t.Fatalf("%d bodies received on a blocking socket, want 2", n)
				}
				// Detected not much later than the stall timeout. (No lower
				// bound: the client's timeout runs from its last read, which
				// on a loaded machine can come well before the server's
				// goroutine records that it stopped.)
				waited := r[0].Time.Sub(time.Unix(0, stalledAt.Load()))
				if waited > stall+5*time.Second {
					t.Fatalf("stall detected %v after the server stopped; timeout %v", waited, stall)
				}
				if r[0].Done != 1<<20 {
					t.Errorf("retry at %d bytes, want %d", r[0].Done, 1<<20)
				}
			})
		}
	}
}

// Cancelling stops a receive that is blocked in the kernel promptly (the
// stall timeout is far away), and progress was reported while it ran.
func TestBlockingReceiveCancel(t *testing.T) {
	data := randBytes(4<<20, 22)
	for _, mode := range []RecvMode{RecvCopy, RecvSplice, RecvMmap} {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s-stream=%v", mode, stream), func(t *testing.T) {
				blocked := countBlocking(t)
				s := newFakeServer(t)
				s.put("/f", data, mtime1)
				var stalledAt atomic.Int64
				s.hook = stallFirstGet(1<<20, &stalledAt)
				c, rec := testClient(t, Options{Recv: mode, StallTimeout: time.Minute, ProgressEvery: 5 * time.Millisecond})
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var canceled atomic.Int64
				var once sync.Once
				c.opts.Events = func(e Event) {
					rec.add(e)
					// All the server sent is in: the receive waits for more.
					if e.Kind == EventProgress && e.Done >= 1<<20 {
						once.Do(func() {
							canceled.Store(time.Now().UnixNano())
							cancel()
						})
					}
				}
				job, dst := fileOrStreamJob(t, s, stream)
				res, err := c.Fetch(ctx, job)
				took := time.Since(time.Unix(0, canceled.Load()))
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("err %v, want canceled", err)
				}
				if canceled.Load() == 0 {
					t.Fatal("no progress event reached the first MiB")
				}
				if took > 2*time.Second {
					t.Fatalf("Fetch returned %v after the cancel", took)
				}
				if blocked.Load() != 1 {
					t.Fatalf("%d bodies received on a blocking socket, want 1", blocked.Load())
				}
				if res.Done != 1<<20 {
					t.Errorf("done %d, want %d", res.Done, 1<<20)
				}
				if !stream && res.Part != dst+".part" {
					t.Errorf("part %q", res.Part)
				}
				s.waitClosed(t) // the client closed its side: no connection is left behind
			})
		}
	}
}

// After a blocking receive the socket is non-blocking again, with no
// receive timeout: Go's deadlines work on it, and the next requests on the
// kept-alive connection (small through the poller, large blocking again)
// succeed.
func TestBlockingRestoresSocket(t *testing.T) {
	blocked := countBlocking(t)
	s := newFakeServer(t)
	big, small := randBytes(2<<20, 23), randBytes(1000, 24)
	s.put("/big", big, mtime1)
	s.put("/small", small, mtime1)
	c, _ := testClient(t, Options{})
	dir := t.TempDir()
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/big"), Dst: filepath.Join(dir, "a")}); err != nil {
		t.Fatal(err)
	}
	if blocked.Load() != 1 {
		t.Fatalf("%d bodies received on a blocking socket, want 1", blocked.Load())
	}
	c.pool.mu.Lock()
	idle := c.pool.idle[s.addr]
	c.pool.mu.Unlock()
	if len(idle) != 1 {
		t.Fatalf("%d idle connections, want 1", len(idle))
	}
	conn := idle[0]
	raw, err := conn.rawConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var tv *unix.Timeval
	var ferr, terr error
	raw.Control(func(fd uintptr) {
		flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0)
		tv, terr = unix.GetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_RCVTIMEO)
	})
	if ferr != nil || flags&unix.O_NONBLOCK == 0 {
		t.Fatalf("socket flags %#x (%v): not O_NONBLOCK", flags, ferr)
	}
	if terr != nil || tv.Sec != 0 || tv.Usec != 0 {
		t.Fatalf("SO_RCVTIMEO left at %+v (%v)", tv, terr)
	}
	// A read through Go with a deadline ends at the deadline: it would
	// hang in the kernel if the socket were still blocking.
	done := make(chan error, 1)
	go func() {
		conn.c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := conn.c.Read(make([]byte, 1))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read on the idle connection: %v", err)
		}
	case <-time.After(10 * time.Second):
		conn.Close()
		t.Fatal("a read with a deadline blocked: the socket is still in blocking mode")
	}
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/small"), Dst: filepath.Join(dir, "b")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/big"), Dst: filepath.Join(dir, "c")}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, filepath.Join(dir, "b"), small, mtime1)
	checkFile(t, filepath.Join(dir, "c"), big, mtime1)
	if n := s.accepted.Load(); n != 1 {
		t.Fatalf("%d connections, want the one kept alive", n)
	}
	if blocked.Load() != 2 {
		t.Fatalf("%d bodies received on a blocking socket, want 2", blocked.Load())
	}
}

// A rate limit keeps the poller (its pacing sleeps between reads); so do
// bodies under blockMin.
func TestBlockingNotWithRateLimit(t *testing.T) {
	blocked := countBlocking(t)
	s := newFakeServer(t)
	s.put("/f", randBytes(2<<20, 25), mtime1)
	s.put("/g", randBytes(blockMin-1, 26), mtime1)
	c, _ := testClient(t, Options{RateLimit: 1 << 30})
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: filepath.Join(t.TempDir(), "f")}); err != nil {
		t.Fatal(err)
	}
	c2, _ := testClient(t, Options{})
	if _, err := c2.Fetch(context.Background(), Job{Src: s.target("/g"), Dst: filepath.Join(t.TempDir(), "g")}); err != nil {
		t.Fatal(err)
	}
	if n := blocked.Load(); n != 0 {
		t.Fatalf("%d bodies received on a blocking socket, want 0", n)
	}
}

// A signal cuts a call with SO_RCVTIMEO short (EINTR, even under
// SA_RESTART): it is repeated with what is left of the stall timeout, so
// signals cannot stretch it; EAGAIN is the timeout itself.
func TestBlockingStallBoundAcrossEINTR(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	const stall = 200 * time.Millisecond
	b := &blockIO{fd: fds[0], stall: stall}
	if err := b.setTimeout(stall); err != nil {
		t.Fatal(err)
	}
	again, err := b.again(unix.EINTR, time.Now().Add(-150*time.Millisecond))
	if !again || err != nil || b.cur <= 0 || b.cur > 50*time.Millisecond {
		t.Fatalf("EINTR 150ms into a 200ms stall: again %v, %v, timeout now %v", again, err, b.cur)
	}
	tv, err := unix.GetsockoptTimeval(b.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO)
	if err != nil || tv.Sec != 0 || tv.Usec <= 0 || tv.Usec > 60000 { // the kernel rounds to its tick
		t.Fatalf("SO_RCVTIMEO %+v, %v", tv, err)
	}
	// The shortened timeout holds for the repeated call, then the full one
	// is back.
	start := time.Now()
	n, err := b.read(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n != 0 {
		t.Fatalf("read with nothing to read: %d, %v", n, err)
	}
	if el := time.Since(start); el > stall {
		t.Fatalf("timed out after %v: the shortened timeout was not used", el)
	}
	if b.cur != stall {
		t.Fatalf("timeout %v after the call, want %v back", b.cur, stall)
	}
	if again, err := b.again(unix.EINTR, time.Now().Add(-stall)); again || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("EINTR after the whole stall: again %v, %v", again, err)
	}
	if again, err := b.again(unix.EAGAIN, time.Now()); again || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("EAGAIN: again %v, %v", again, err)
	}
	// Data: returned at once.
	unix.Write(fds[1], []byte("abc"))
	if n, err := b.read(make([]byte, 10)); n != 3 || err != nil {
		t.Fatalf("read: %d, %v", n, err)
	}
}

// Streams, when the mode is zfetch's choice: splice into pipes and files,
// read and write into character devices.
func TestStreamRecv(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	for _, c := range []struct {
		f    *os.File
		want RecvMode
	}{{pw, RecvSplice}, {f, RecvSplice}, {null, RecvCopy}} {
		if got := streamRecv(int(c.f.Fd())); got != c.want {
			t.Errorf("%s: %s, want %s", c.f.Name(), got, c.want)
		}
	}
	blocked := countBlocking(t)
	s := newFakeServer(t)
	s.put("/f", randBytes(2<<20, 27), mtime1)
	cl, _ := testClient(t, Options{})
	res, err := cl.Fetch(context.Background(), Job{Src: s.target("/f"), Out: null, Name: "-"})
	if err != nil || res.Received != 2<<20 || blocked.Load() != 1 {
		t.Fatalf("to %s: %+v, %v, %d blocking", os.DevNull, res, err, blocked.Load())
	}
}
