package fetch

import (
	"context"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// silentAfterGet: once the server has answered a GET, every later STAT
// gets no answer (the mirror accepts, then says nothing) until release is
// closed.
func silentAfterGet(release <-chan struct{}) func(int, wire.Request) fault {
	var got atomic.Bool
	return func(n int, q wire.Request) fault {
		switch {
		case q.Op == wire.OpGet:
			return fault{after: func() { got.Store(true) }}
		case q.Op == wire.OpStat && got.Load():
			return fault{before: func() { <-release }}
		}
		return fault{}
	}
}

// mirrorPair starts a reference server a and a mirror b with the same
// file /f, size random bytes at mtime1.
func mirrorPair(t *testing.T, size int) (v1 []byte, a, b *fakeServer) {
	t.Helper()
	v1 = randBytes(size, 3)
	a, b = newFakeServer(t), newFakeServer(t)
	a.put("/f", v1, mtime1)
	b.put("/f", v1, mtime1)
	return v1, a, b
}

// fetchPair fetches /f from a, with b as its mirror, into dst; each
// source's range arrives from it whole (no stealing).
func fetchPair(ctx context.Context, c *Client, a, b *fakeServer, dst string, resume bool) (Result, error) {
	c.noSteal = true
	return c.Fetch(ctx, Job{Src: a.target("/f"), Mirrors: []Target{b.target("/f")}, Dst: dst, Resume: resume})
}

// setHook replaces s's hook under its lock: an earlier run's connections
// may still read it.
func (s *fakeServer) setHook(h func(int, wire.Request) fault) {
	s.mu.Lock()
	s.hook = h
	s.mu.Unlock()
}

// thenCancel runs hook, and cancel 200 ms after the after step of the
// fault it returns (the response sent), if it has one.
func thenCancel(hook func(int, wire.Request) fault, cancel func()) func(int, wire.Request) fault {
	return func(n int, q wire.Request) fault {
		f := hook(n, q)
		if after := f.after; after != nil {
			f.after = func() { after(); time.Sleep(200 * time.Millisecond); cancel() }
		}
		return f
	}
}

// interruptedRun1 is run 1 of a resume test: a's first GET stalls, b's
// answers with hook, and the run is canceled 200 ms after b's response;
// then both servers' hooks are cleared.
func interruptedRun1(t *testing.T, a, b *fakeServer, dst string, hook func(int, wire.Request) fault) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.hook = thenCancel(hook, cancel)
	a.hook = onFirstGet(fault{stallAt: 1 << 20})
	c, _ := testClient(t, Options{})
	if _, err := fetchPair(ctx, c, a, b, dst, false); err == nil {
		t.Fatal("run 1 was not interrupted")
	}
	a.setHook(nil)
	b.setHook(nil)
}

// TestRecheckSilentSupplierNotWaited: a mirror that supplied bytes and is
// silent at the look before the rename is not waited for the stall
// timeout: the reference answered, the download completes promptly.
func TestRecheckSilentSupplierNotWaited(t *testing.T) {
	v1, a, b := mirrorPair(t, 2*MinSplit)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	b.hook = silentAfterGet(release)
	c, _ := testClient(t, Options{StallTimeout: 20 * time.Second})
	dst := filepath.Join(t.TempDir(), "f")
	start := time.Now()
	if _, err := fetchPair(context.Background(), c, a, b, dst, false); err != nil {
		t.Fatal(err)
	}
	if b.sent.Load() == 0 {
		t.Fatalf("the mirror supplied no bytes: the test proves nothing")
	}
	checkFile(t, dst, v1, mtime1)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v: the silent mirror was waited for", d)
	}
}

// TestRecheckRefusedSupplier: a mirror that supplied bytes and is down at
// the look before the rename does not fail the download.
func TestRecheckRefusedSupplier(t *testing.T) {
	v1, a, b := mirrorPair(t, 2*MinSplit)
	b.hook = func(n int, q wire.Request) fault {
		if q.Op == wire.OpGet {
			// Down from now on: no new connection, the open ones cut.
			return fault{after: func() {
				b.stopListening()
				b.mu.Lock()
				for c := range b.open {
					c.Close()
				}
				b.mu.Unlock()
			}}
		}
		return fault{}
	}
	c, _ := testClient(t, Options{})
	dst := filepath.Join(t.TempDir(), "f")
	if _, err := fetchPair(context.Background(), c, a, b, dst, false); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, v1, mtime1)
}

// TestDroppedSupplierRechecked: a mirror whose file changed in place
// during its range's last chunk (that response whole, its header the old
// version's), and which is dropped afterwards for a refusal, supplied a
// mix: the look before the rename asks it too, dropped or not, and the
// download starts over instead of renaming the mix into place.
func TestDroppedSupplierRechecked(t *testing.T) {
	v1, a, b := mirrorPair(t, 4*MinSplit)
	tampered := inPlaceAtEnd(b, v1, mtime1+1e9)
	var gets atomic.Int64
	b.hook = func(n int, q wire.Request) fault {
		if q.Op != wire.OpGet {
			return fault{}
		}
		if gets.Add(1) == 1 {
			return tampered(n, q)
		}
		return fault{status: wire.StatusForbidden}
	}
	c, rec := testClient(t, Options{Conns: 2})
	dst := filepath.Join(t.TempDir(), "f")
	if _, err := fetchPair(context.Background(), c, a, b, dst, false); err != nil {
		t.Fatal(err)
	}
	if b.sent.Load() == 0 || len(rec.kinds(EventSource)) == 0 {
		t.Fatalf("the mirror supplied nothing or was never dropped: the test proves nothing")
	}
	checkFile(t, dst, v1, mtime1)
}

// TestResumeMirrorChangedBeforeInterrupt: run 1 is interrupted after the
// mirror's range arrived, its last chunk of a new version (the file
// changed in place then); run 2 resumes with -c. The mirror's file now
// differs from the reference and it is left out, but its bytes from run 1
// are in the .part (the resume state records the mirror): the resume
// starts over instead of renaming a mix of two versions into place.
func TestResumeMirrorChangedBeforeInterrupt(t *testing.T) {
	v1, a, b := mirrorPair(t, 2*MinSplit)
	dst := filepath.Join(t.TempDir(), "f")
	interruptedRun1(t, a, b, dst, inPlaceAtEnd(b, v1, mtime1+1e9))
	c2, rec := testClient(t, Options{})
	if _, err := fetchPair(context.Background(), c2, a, b, dst, true); err != nil {
		t.Fatal(err)
	}
	if r := rec.kinds(EventRestart); len(r) != 1 || !strings.Contains(r[0].Err.Error(), "no longer used") {
		t.Fatalf("restart events: %+v", r)
	}
	checkFile(t, dst, v1, mtime1)
}

// TestResumeMirrorUnchanged: the same, with the mirror's file unchanged:
// the resume keeps what run 1 got.
func TestResumeMirrorUnchanged(t *testing.T) {
	v1, a, b := mirrorPair(t, 2*MinSplit)
	dst := filepath.Join(t.TempDir(), "f")
	interruptedRun1(t, a, b, dst, onFirstGet(fault{after: func() {}}))
	c2, rec := testClient(t, Options{})
	res, err := fetchPair(context.Background(), c2, a, b, dst, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed < MinSplit || len(rec.kinds(EventRestart)) != 0 {
		t.Fatalf("resumed %d bytes, restarts %+v", res.Resumed, rec.kinds(EventRestart))
	}
	checkFile(t, dst, v1, mtime1)
}

// TestResumeMirrorChangedAnswersLate: as TestResumeMirrorChangedBeforeInterrupt,
// but in run 2 the mirror answers too late to be compared with the
// reference before the download starts (learnGrace): its worker asks it,
// finds its file differs and drops it. The bytes it sent in run 1 are
// still in the .part: the look before the rename starts over.
func TestResumeMirrorChangedAnswersLate(t *testing.T) {
	v1, a, b := mirrorPair(t, 2*MinSplit)
	dst := filepath.Join(t.TempDir(), "f")
	interruptedRun1(t, a, b, dst, inPlaceAtEnd(b, v1, mtime1+1e9))
	b.setHook(func(n int, q wire.Request) fault {
		if q.Op == wire.OpStat {
			return fault{before: func() { time.Sleep(learnGrace + 500*time.Millisecond) }}
		}
		return fault{}
	})
	a.setHook(onFirstGet(fault{before: func() { time.Sleep(learnGrace + time.Second) }}))
	c2, rec := testClient(t, Options{})
	if _, err := fetchPair(context.Background(), c2, a, b, dst, true); err != nil {
		t.Fatal(err)
	}
	if r := rec.kinds(EventRestart); len(r) != 1 || !strings.Contains(r[0].Err.Error(), "now differs") {
		t.Fatalf("restart events: %+v", r)
	}
	checkFile(t, dst, v1, mtime1)
}
