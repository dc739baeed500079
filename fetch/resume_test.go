package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// Resume from a .part: only the missing bytes are asked for.
func TestResumePart(t *testing.T) {
	data := randBytes(3<<20, 9)
	for _, prealloc := range []bool{false, true} {
		t.Run(fmt.Sprintf("prealloc=%v", prealloc), func(t *testing.T) {
			s := newFakeServer(t)
			s.put("/f", data, mtime1)
			dst := filepath.Join(t.TempDir(), "f")
			have := int64(1<<20 + 17)
			st := &State{Size: int64(len(data)), MTime: mtime1, Prealloc: prealloc, Pending: [][2]int64{{0, int64(len(data))}}}
			part := data[:have]
			if prealloc {
				// Full length, the first MiB+17 written, the rest zero.
				part = append(slices.Clone(data[:have]), make([]byte, int64(len(data))-have)...)
				st.Pending = [][2]int64{{have, int64(len(data))}}
			}
			os.WriteFile(dst+".part", part, 0o644)
			os.WriteFile(dst+".part"+StateSuffix, st.Encode(), 0o644)
			c, rec := testClient(t, Options{Recv: RecvCopy})
			res, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Resume: true})
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, dst, data, mtime1)
			if res.Resumed != have || res.Received != int64(len(data))-have || s.sent.Load() != int64(len(data))-have {
				t.Fatalf("resumed %d, received %d, server sent %d", res.Resumed, res.Received, s.sent.Load())
			}
			if g := s.getLog(); len(g) != 1 || g[0].Offset != have {
				t.Fatalf("GETs: %+v", g)
			}
			if start := rec.kinds(EventStart); len(start) != 1 || start[0].Resumed != have || start[0].Done != have {
				t.Fatalf("start: %+v", start)
			}
		})
	}
}

// A .part of another version, or without state, is started over.
func TestResumeRefusesAnotherVersion(t *testing.T) {
	data := randBytes(200000, 1)
	cases := map[string]*State{
		"changed mtime": {Size: int64(len(data)), MTime: mtime1 - 1, Pending: [][2]int64{{0, int64(len(data))}}},
		"changed size":  {Size: int64(len(data)) + 1, MTime: mtime1, Pending: [][2]int64{{0, int64(len(data)) + 1}}},
		"no state":      nil,
	}
	for name, st := range cases {
		t.Run(name, func(t *testing.T) {
			s := newFakeServer(t)
			s.put("/f", data, mtime1)
			dst := filepath.Join(t.TempDir(), "f")
			os.WriteFile(dst+".part", bytes.Repeat([]byte("old"), 1000), 0o644)
			if st != nil {
				os.WriteFile(dst+".part"+StateSuffix, st.Encode(), 0o644)
			}
			c, rec := testClient(t, Options{})
			if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Resume: true}); err != nil {
				t.Fatal(err)
			}
			checkFile(t, dst, data, mtime1)
			if g := s.getLog(); len(g) != 1 || g[0].Offset != 0 {
				t.Fatalf("GETs: %+v", g)
			}
			if r := rec.kinds(EventRestart); len(r) != 1 || !strings.Contains(r[0].Err.Error(), "starting over") {
				t.Fatalf("restart events: %+v", r)
			}
		})
	}
}

// The file changes on the server between two attempts of one run: the
// download starts over and the result is the new version, whole.
func TestChangedBetweenAttempts(t *testing.T) {
	for _, conns := range []int{1, 4} {
		t.Run(fmt.Sprintf("x%d", conns), func(t *testing.T) {
			v1, v2 := randBytes(2*MinSplit, 1), randBytes(2*MinSplit, 2)
			s := newFakeServer(t)
			s.put("/f", v1, mtime1)
			// The first GET is cut after 1 MiB; then the file changes, and
			// the next GET must notice.
			s.hook = changeAfterCut(s, v2, mtime1+1, 1<<20)
			c, rec := testClient(t, Options{Conns: conns})
			dst := filepath.Join(t.TempDir(), "f")
			if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst}); err != nil {
				t.Fatal(err)
			}
			checkFile(t, dst, v2, mtime1+1)
			// One connection surely read the old bytes before it saw the
			// change, so it reports a restart. With several, another one
			// may see the change first and stop the rest before any old
			// byte is in place: then there is nothing to start over.
			r := rec.kinds(EventRestart)
			if (conns == 1 && len(r) != 1) || len(r) > 1 || (len(r) == 1 && !strings.Contains(r[0].Err.Error(), "changed on the server")) {
				t.Fatalf("restart events: %+v", r)
			}
		})
	}
}

// changeAfterCut is a hook that cuts the first GET after cut bytes, then
// replaces /f with data: the next GET sees the new version.
func changeAfterCut(s *fakeServer, data []byte, mtime int64, cut int64) func(int, wire.Request) fault {
	return onFirstGet(fault{cutAfter: cut, after: func() { s.put("/f", data, mtime) }})
}

// onFirstGet is a hook that applies f to the first GET and no other request.
func onFirstGet(f fault) func(int, wire.Request) fault {
	var first sync.Once
	return func(n int, q wire.Request) fault {
		if q.Op != wire.OpGet {
			return fault{}
		}
		got := fault{}
		first.Do(func() { got = f })
		return got
	}
}

// Streaming to stdout cannot start over once bytes are out: that is a
// verification failure, not a silent splice of two versions.
func TestStreamChangedIsVerifyError(t *testing.T) {
	s := newFakeServer(t)
	s.put("/f", randBytes(1<<20, 1), mtime1)
	s.hook = changeAfterCut(s, randBytes(1<<20, 2), mtime1+5, 4096)
	c, _ := testClient(t, Options{})
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	_, err = c.Fetch(context.Background(), Job{Src: s.target("/f"), Out: out, Name: "-"})
	var ve *VerifyError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "changed on the server") {
		t.Fatalf("err %v", err)
	}
}

func TestResumeCompleteFileIsLeftAlone(t *testing.T) {
	s := newFakeServer(t)
	data := randBytes(5000, 4)
	s.put("/f", data, mtime1)
	c, rec := testClient(t, Options{})
	dst := filepath.Join(t.TempDir(), "f")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst}); err != nil {
		t.Fatal(err)
	}
	res, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Resume: true})
	if err != nil || !res.Skipped || res.Received != 0 {
		t.Fatalf("second fetch: %+v, %v", res, err)
	}
	if g := s.getLog(); len(g) != 1 {
		t.Fatalf("%d GETs, want 1", len(g))
	}
	if d := rec.kinds(EventDone); len(d) != 2 || !d[1].Skipped {
		t.Fatalf("done events %+v", d)
	}
	// A different version on the server is fetched again.
	s.put("/f", randBytes(5000, 5), mtime1+1)
	if res, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Resume: true}); err != nil || res.Skipped {
		t.Fatalf("changed file: %+v, %v", res, err)
	}
	checkFile(t, dst, randBytes(5000, 5), mtime1+1)
}

// Cancelling keeps a resumable .part; resuming completes it byte-exact.
func TestInterruptAndResume(t *testing.T) {
	for _, mode := range []RecvMode{RecvSplice, RecvMmap} {
		t.Run(string(mode), func(t *testing.T) {
			s := newFakeServer(t)
			data := randBytes(8<<20, 8)
			s.put("/f", data, mtime1)
			ctx, cancel := context.WithCancel(context.Background())
			var c *Client
			c, rec := testClient(t, Options{Recv: mode, RateLimit: 16 << 20, ProgressEvery: 10 * time.Millisecond})
			var once sync.Once
			c.opts.Events = func(e Event) {
				rec.add(e)
				if e.Kind == EventProgress && e.Done > 2<<20 {
					once.Do(cancel)
				}
			}
			dst := filepath.Join(t.TempDir(), "f")
			res, err := c.Fetch(ctx, Job{Src: s.target("/f"), Dst: dst})
			if !errors.Is(err, context.Canceled) || res.Part != dst+".part" {
				t.Fatalf("interrupted fetch: %+v, %v", res, err)
			}
			st, err := readState(dst + ".part" + StateSuffix)
			if err != nil || st == nil {
				t.Fatalf("state: %v %v", st, err)
			}
			if st.Remaining() >= int64(len(data)) {
				t.Fatalf("state records no progress: %+v", st)
			}
			c.Close()
			s.waitClosed(t)
			before := s.sent.Load()
			c2, _ := testClient(t, Options{Recv: mode})
			res, err = c2.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Resume: true})
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, dst, data, mtime1)
			if got := s.sent.Load() - before; got != int64(len(data))-res.Resumed || res.Resumed == 0 {
				t.Fatalf("resume sent %d bytes, resumed at %d of %d", got, res.Resumed, len(data))
			}
		})
	}
}
