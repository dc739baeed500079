package fetch

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Two downloads of one destination: the second cannot take the .part
// while the first holds it, and can once it is released.
func TestOpenPartOneWriter(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "f")
	p1, err := openPart(partName(dst))
	if err != nil {
		t.Fatal(err)
	}
	p1.f.Close() // the lock outlives the file, as in install
	p1.f = nil
	_, err = openPart(partName(dst))
	var le *LocalError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "another zfetch is writing it") {
		t.Fatalf("second writer: %v", err)
	}
	// The first renames its file into place, then lets go: the next
	// writer gets a new .part, not the renamed file.
	if err := os.Rename(p1.path, dst); err != nil {
		t.Fatal(err)
	}
	p1.release()
	p2, err := openPart(partName(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer p2.release()
	var a, b os.FileInfo
	if a, err = p2.f.Stat(); err != nil {
		t.Fatal(err)
	}
	if b, err = os.Stat(dst); err != nil {
		t.Fatal(err)
	}
	if os.SameFile(a, b) {
		t.Fatal("the new .part is the renamed file")
	}
}

func TestSameMTime(t *testing.T) {
	const server = int64(1_700_000_000_123_456_789)
	for _, c := range []struct {
		name  string
		local int64
		want  bool
	}{
		{"nanoseconds, equal", server, true},
		{"nanoseconds, another version", server + 1, false},
		{"100 ns (NTFS, SMB)", server - server%100, true},
		{"10 ms (exFAT)", server - server%1e7, true},
		{"10 ms, another version", server - server%1e7 + 2e7, false},
		{"microseconds (truncated)", server - server%1e3, true},
		{"microseconds, another version", server - server%1e3 + 2e3, false},
		{"seconds (truncated)", server - server%1e9, true},
		{"seconds (rounded up)", server - server%1e9 + 1e9, true},
		{"FAT's two seconds", server - server%2e9, true},
		{"FAT's two seconds, rounded up", server - server%2e9 + 2e9, true},
		{"seconds, another version", server - server%1e9 + 3e9, false},
		{"seconds, a version before", server - server%1e9 - 2e9, false},
	} {
		if got := sameMTime(time.Unix(0, c.local), server); got != c.want {
			t.Errorf("%s: sameMTime(%d, %d) = %v", c.name, c.local, server, got)
		}
	}
	// A server mtime of whole seconds (files from a tar archive) is kept
	// exactly by every file system but FAT: a local copy a second off is
	// another version.
	whole := server - server%2e9 // even: FAT keeps it too
	for _, local := range []int64{whole - 1e9, whole + 1e9, whole + 2e9} {
		if sameMTime(time.Unix(0, local), whole) {
			t.Errorf("whole-second server mtime %d matched local %d", whole, local)
		}
	}
	if !sameMTime(time.Unix(0, whole), whole) {
		t.Error("whole-second mtime does not match itself")
	}
}

// -c leaves a complete file alone even with a .part beside it (in a tree
// with both "f" and "f.part", the latter is another file), and does not
// touch that .part.
func TestResumeCompleteFileIgnoresPart(t *testing.T) {
	s := newFakeServer(t)
	data := randBytes(5000, 7)
	s.put("/f", data, mtime1)
	c, _ := testClient(t, Options{})
	dst := filepath.Join(t.TempDir(), "f")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst}); err != nil {
		t.Fatal(err)
	}
	other := []byte("another file that happens to be called f.part")
	if err := os.WriteFile(dst+".part", other, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Resume: true})
	if err != nil || !res.Skipped {
		t.Fatalf("-c: %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(dst + ".part"); string(b) != string(other) {
		t.Fatalf("f.part changed: %q", b)
	}
	if g := s.getLog(); len(g) != 1 {
		t.Fatalf("%d GETs, want 1", len(g))
	}
}

// A destination that is a directory fails before any byte is fetched.
func TestDestinationIsADirectory(t *testing.T) {
	s := newFakeServer(t)
	s.put("/f", randBytes(5000, 8), mtime1)
	c, _ := testClient(t, Options{})
	dst := t.TempDir()
	_, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst})
	var le *LocalError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("err %v", err)
	}
	if g := s.getLog(); len(g) != 0 {
		t.Fatalf("%d GETs, want none", len(g))
	}
	if _, err := os.Stat(dst + ".part"); err == nil {
		t.Fatal("a .part was left")
	}
}

// --retry-for bounds an attempt that hears nothing: a server that accepts
// and never answers is given up on after about that long, not after the
// stall timeout.
func TestRetryForBoundsASilentServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 16)
	t.Cleanup(func() {
		ln.Close()
		close(held)
		for c := range held {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case held <- c: // keep it open, say nothing
			default:
				c.Close()
			}
		}
	}()
	c, _ := testClient(t, Options{Retries: -1, RetryFor: time.Second, StallTimeout: time.Minute})
	start := time.Now()
	_, err = c.Fetch(context.Background(), Job{Src: Target{Addr: ln.Addr().String(), Path: "/f"}, Dst: filepath.Join(t.TempDir(), "f")})
	var ge *GiveUpError
	if !errors.As(err, &ge) {
		t.Fatalf("err %v, want a GiveUpError", err)
	}
	// Well under the one-minute stall timeout: what is checked is which
	// bound applied, not how fast.
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("gave up after %v", d)
	}
}

func TestGiveUpErrorGrammar(t *testing.T) {
	if got := (&GiveUpError{Attempts: 1, Err: errors.New("x")}).Error(); !strings.HasSuffix(got, "(gave up after 1 attempt)") {
		t.Errorf("%q", got)
	}
	if got := (&GiveUpError{Attempts: 3, Err: errors.New("x")}).Error(); !strings.HasSuffix(got, "(gave up after 3 attempts)") {
		t.Errorf("%q", got)
	}
}

// -c on a file never fetched before is a plain start: no "starting over"
// for the empty .part that the lock has just created.
func TestResumeFreshIsNoRestart(t *testing.T) {
	s := newFakeServer(t)
	data := randBytes(5000, 9)
	s.put("/f", data, mtime1)
	c, rec := testClient(t, Options{})
	dst := filepath.Join(t.TempDir(), "f")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Resume: true}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, mtime1)
	if r := rec.kinds(EventRestart); len(r) != 0 {
		t.Fatalf("restart events %+v", r)
	}
}

// A checkpoint between learning a changed file's new identity and
// emptying the .part (the checkpointer may fire there) must not save the
// new identity with the old version's progress: a crash then, and -c would
// join two versions.
func TestNoCheckpointOfAChangedFileBeforeRestart(t *testing.T) {
	v1, v2 := randBytes(2*MinSplit, 1), randBytes(2*MinSplit, 2)
	s := newFakeServer(t)
	s.put("/f", v1, mtime1)
	s.hook = changeAfterCut(s, v2, mtime1+1, 1<<20)
	c, _ := testClient(t, Options{Conns: 2}) // preallocated: the state's pending list is what -c trusts
	dst := filepath.Join(t.TempDir(), "f")
	var saved []*State
	testHookRestart = func(d *download) {
		d.checkpoint()
		b, err := os.ReadFile(d.part.statePath)
		if err != nil {
			t.Error(err)
			return
		}
		st, err := DecodeState(b)
		if err != nil {
			t.Error(err)
			return
		}
		saved = append(saved, st)
	}
	t.Cleanup(func() { testHookRestart = nil })
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, v2, mtime1+1)
	if len(saved) == 0 {
		t.Fatal("the hook never ran: the test proves nothing")
	}
	for _, st := range saved {
		if st.MTime == mtime1+1 && st.Remaining() < st.Size {
			t.Fatalf("saved the new version's identity with the old version's progress: %+v", st)
		}
	}
}

// The checkpointer reads the file's identity (its mtime, size, ETag) and
// the segments, and saves the state, at any moment, a restart included.
// From the moment a restart has learnt the new identity, another
// goroutine does what the checkpointer does, over and over, while the
// restart replaces the segments and saves its own state, and the download
// goes on: under -race, this fails if either side reads or writes them
// without download.mu; and two saves at once (one through the temporary
// file the other has just renamed) failed the download.
func TestCheckpointerDuringRestart(t *testing.T) {
	v1, v2 := randBytes(2*MinSplit, 1), randBytes(2*MinSplit, 2)
	s := newFakeServer(t)
	s.put("/f", v1, mtime1)
	s.hook = changeAfterCut(s, v2, mtime1+1, 1<<20)
	c, _ := testClient(t, Options{Conns: 2, CheckpointEvery: time.Millisecond}) // preallocated: checkpoints
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads atomic.Int64
	testHookRestart = func(d *download) {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if st := d.state(); st.MTime != mtime1+1 || d.refIdent().MTime != mtime1+1 {
					t.Errorf("read mtime %d after learning %d", st.MTime, mtime1+1)
					return
				}
				d.checkpoint()
				reads.Add(1)
				runtime.Gosched()
			}
		})
	}
	t.Cleanup(func() { testHookRestart = nil })
	dst := filepath.Join(t.TempDir(), "f")
	_, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, v2, mtime1+1)
	if reads.Load() == 0 {
		t.Fatal("no read during a restart: the test proves nothing")
	}
}

// Saves of the resume state go through one temporary file: the
// checkpointer's and the download's own (a restart's) must not overlap,
// or one renames the other's temporary away and fails the download.
func TestSaveOneAtATime(t *testing.T) {
	p, err := openPart(partName(filepath.Join(t.TempDir(), "f")))
	if err != nil {
		t.Fatal(err)
	}
	defer p.release()
	st := func() *State { return &State{Size: 10, Pending: [][2]int64{{0, 10}}} }
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				if err := p.save(st); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got, err := readState(p.statePath); err != nil || got.Size != 10 {
		t.Fatalf("state %+v, %v", got, err)
	}
	// Installed: no save recreates the state.
	if err := p.install(filepath.Join(filepath.Dir(p.path), "f"), 0); err != nil {
		t.Fatal(err)
	}
	if err := p.save(st); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.statePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a save after install: %v", err)
	}
}

// TestOpenPartNotRegular: a .part that is a FIFO or a character device is
// refused by its kind, before a byte is written into it or it is renamed.
func TestOpenPartNotRegular(t *testing.T) {
	for _, tc := range []struct {
		mode uint32
		kind string
	}{
		{unix.S_IFIFO, "is a FIFO, not a regular file"},
		{unix.S_IFCHR, "is a character device, not a regular file"},
	} {
		part := partName(filepath.Join(t.TempDir(), "f"))
		if err := unix.Mknod(part, tc.mode|0o666, int(unix.Mkdev(1, 3))); err != nil {
			t.Skipf("mknod: %v", err)
		}
		p, err := openPart(part)
		if err == nil {
			p.release()
		}
		var le *LocalError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), tc.kind) {
			t.Errorf("openPart(%s) = %v, want a LocalError saying it %s", part, err, tc.kind)
		}
	}
}
