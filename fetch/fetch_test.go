package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

func randBytes(n int, seed uint64) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

// recorder collects events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) add(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) kinds(k EventKind) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

func testClient(t *testing.T, o Options) (*Client, *recorder) {
	t.Helper()
	rec := &recorder{}
	o.Events = rec.add
	if o.Retries == 0 {
		o.Retries = 5
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = 5 * time.Second
	}
	c := New(o)
	c.backoffBase, c.backoffCap = time.Millisecond, 5*time.Millisecond
	t.Cleanup(func() { c.Close() })
	return c, rec
}

const mtime1 = int64(1_700_000_000_123_456_789)

func checkFile(t *testing.T, path string, want []byte, mtime int64) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, differ from the %d expected", path, len(got), len(want))
	}
	fi, _ := os.Stat(path)
	if fi.ModTime().UnixNano() != mtime {
		t.Errorf("%s: mtime %v, want %v", path, fi.ModTime().UnixNano(), mtime)
	}
	for _, leftover := range []string{path + ".part", path + ".part" + StateSuffix} {
		if _, err := os.Stat(leftover); err == nil {
			t.Errorf("%s left behind", leftover)
		}
	}
}

func TestFetchEveryModeAndConns(t *testing.T) {
	s := newFakeServer(t)
	sizes := []int{0, 1, 4096, 1<<20 + 1, 2*MinSplit + 12345}
	for i, n := range sizes {
		s.put(fmt.Sprintf("/f%d", i), randBytes(n, uint64(i)), mtime1+int64(i))
	}
	for _, mode := range []RecvMode{RecvCopy, RecvSplice, RecvMmap} {
		for _, conns := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s-x%d", mode, conns), func(t *testing.T) {
				c, rec := testClient(t, Options{Recv: mode, Conns: conns})
				dir := t.TempDir()
				for i, n := range sizes {
					dst := filepath.Join(dir, fmt.Sprint(i))
					res, err := c.Fetch(context.Background(), Job{ID: i, Src: s.target(fmt.Sprintf("/f%d", i)), Dst: dst})
					if err != nil {
						t.Fatalf("size %d: %v", n, err)
					}
					if res.Size != int64(n) || res.Received != int64(n) || res.Done != int64(n) {
						t.Errorf("size %d: result %+v", n, res)
					}
					checkFile(t, dst, randBytes(n, uint64(i)), mtime1+int64(i))
				}
				if got := len(rec.kinds(EventDone)); got != len(sizes) {
					t.Errorf("%d done events, want %d", got, len(sizes))
				}
				if conns > 1 {
					// The big file went over several connections, by ranges.
					var ranged int
					for _, q := range s.getLog() {
						if q.Path == "/f4" && q.Length > 0 && q.Length < int64(sizes[4]) {
							ranged++
						}
					}
					if ranged < 2 {
						t.Errorf("big file fetched in %d ranged GETs", ranged)
					}
				}
			})
		}
	}
}

func TestFetchToStream(t *testing.T) {
	s := newFakeServer(t)
	data := randBytes(3<<20+7, 7)
	s.put("/s", data, mtime1)
	sum := sha256.Sum256(data)
	for _, mode := range []RecvMode{RecvCopy, RecvSplice, RecvMmap} {
		for _, digest := range []string{"", hex.EncodeToString(sum[:])} {
			t.Run(fmt.Sprintf("%s-digest%v", mode, digest != ""), func(t *testing.T) {
				c, _ := testClient(t, Options{Recv: mode})
				// A pipe, like zfetch -o - | sha256sum.
				pr, pw, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				var got []byte
				done := make(chan struct{})
				go func() {
					defer close(done)
					got, _ = readAll(pr)
				}()
				_, err = c.Fetch(context.Background(), Job{Src: s.target("/s"), Out: pw, Name: "-", SHA256: digest})
				pw.Close()
				<-done
				pr.Close()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("stream: %d bytes, not the %d sent", len(got), len(data))
				}
			})
		}
	}
}

func readAll(f *os.File) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(f)
	return b.Bytes(), err
}

// A connection cut mid-body is retried from the next byte, in every mode.
func TestRetryResumesWhereBytesStop(t *testing.T) {
	data := randBytes(5<<20+3, 11)
	for _, mode := range []RecvMode{RecvCopy, RecvSplice, RecvMmap} {
		t.Run(string(mode), func(t *testing.T) {
			s := newFakeServer(t)
			s.put("/big", data, mtime1)
			cuts := 0
			s.hook = func(n int, q wire.Request) fault {
				if q.Op == wire.OpGet && cuts < 3 {
					cuts++
					return fault{cutAfter: 1 << 20}
				}
				return fault{}
			}
			c, rec := testClient(t, Options{Recv: mode})
			dst := filepath.Join(t.TempDir(), "big")
			res, err := c.Fetch(context.Background(), Job{Src: s.target("/big"), Dst: dst})
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, dst, data, mtime1)
			gets := s.getLog()
			if len(gets) != 4 {
				t.Fatalf("%d GETs, want 4: %+v", len(gets), gets)
			}
			for i, q := range gets {
				if want := int64(i) << 20; q.Offset != want {
					t.Errorf("GET %d at offset %d, want %d", i, q.Offset, want)
				}
			}
			if res.Received != int64(len(data)) || s.sent.Load() != int64(len(data)) {
				t.Errorf("received %d, server sent %d, for %d bytes", res.Received, s.sent.Load(), len(data))
			}
			retries := rec.kinds(EventRetry)
			if len(retries) != 3 || Reason(retries[0].Err) != "connection closed by the server" {
				t.Errorf("retry events: %+v", retries)
			}
		})
	}
}

// Busy and draining answers are retried; "not found" is not.
func TestRetryOnBusyAndDraining(t *testing.T) {
	s := newFakeServer(t)
	data := randBytes(1000, 3)
	s.put("/f", data, mtime1)
	statuses := []wire.Status{wire.StatusDraining, wire.StatusBusy}
	s.hook = func(n int, q wire.Request) fault {
		if n < len(statuses) {
			return fault{status: statuses[n]}
		}
		return fault{}
	}
	c, rec := testClient(t, Options{})
	dst := filepath.Join(t.TempDir(), "f")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, mtime1)
	r := rec.kinds(EventRetry)
	if len(r) != 2 || !strings.HasPrefix(RetryMessage(r[0]), "server draining, retrying in ") || Reason(r[1].Err) != "server busy" {
		t.Fatalf("retries: %v", r)
	}

	_, err := c.Fetch(context.Background(), Job{Src: s.target("/nope"), Dst: filepath.Join(t.TempDir(), "x")})
	var se *StatusError
	if !errors.As(err, &se) || se.Status != wire.StatusNotFound || err.Error() != "not found: /nope" {
		t.Fatalf("missing file: %v", err)
	}
	if Retryable(err) {
		t.Fatal("not found is retryable")
	}
}

// With nobody listening, the retry budget runs out: --retries N means N
// retries after the first attempt.
func TestGiveUpAfterRetries(t *testing.T) {
	s := newFakeServer(t)
	s.stopListening()
	c, rec := testClient(t, Options{Retries: 3})
	_, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: filepath.Join(t.TempDir(), "f")})
	var ge *GiveUpError
	if !errors.As(err, &ge) || ge.Attempts != 4 {
		t.Fatalf("err %v, want a GiveUpError after 4 attempts", err)
	}
	if got := len(rec.kinds(EventRetry)); got != 3 {
		t.Errorf("%d retry events, want 3", got)
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %q does not say connection refused", err)
	}
	if errs := rec.kinds(EventError); len(errs) != 1 {
		t.Errorf("%d error events", len(errs))
	}

	// --retry-for: unlimited count, bounded time since the last byte.
	c2, _ := testClient(t, Options{Retries: -1, RetryFor: 50 * time.Millisecond})
	start := time.Now()
	_, err = c2.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: filepath.Join(t.TempDir(), "f")})
	if !errors.As(err, &ge) || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("retry-for: %v after %v", err, time.Since(start))
	}
}

// A server that stops sending mid-body is given up on after the stall
// timeout and retried.
func TestStallTimeout(t *testing.T) {
	s := newFakeServer(t)
	data := randBytes(100000, 5)
	s.put("/f", data, mtime1)
	s.hook = func(n int, q wire.Request) fault {
		if q.Op == wire.OpGet && n == 1 {
			return fault{hang: true}
		}
		return fault{}
	}
	c, rec := testClient(t, Options{StallTimeout: 100 * time.Millisecond})
	dst := filepath.Join(t.TempDir(), "f")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, mtime1)
	if r := rec.kinds(EventRetry); len(r) != 1 || Reason(r[0].Err) != "connection timed out" {
		t.Fatalf("retries: %+v", r)
	}
}

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

func TestSHA256(t *testing.T) {
	s := newFakeServer(t)
	data := randBytes(70000, 6)
	s.put("/f", data, mtime1)
	sum := sha256.Sum256(data)
	c, _ := testClient(t, Options{})
	dst := filepath.Join(t.TempDir(), "f")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, SHA256: hex.EncodeToString(sum[:])}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, mtime1)
	dst2 := filepath.Join(t.TempDir(), "g")
	_, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst2, SHA256: strings.Repeat("0", 64)})
	var ve *VerifyError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("wrong digest: %v", err)
	}
	for _, p := range []string{dst2, dst2 + ".part", dst2 + ".part" + StateSuffix} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s exists after a failed verification", p)
		}
	}
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

func TestWalk(t *testing.T) {
	s := newFakeServer(t)
	s.put("/tree/a.txt", []byte("a"), mtime1)
	s.put("/tree/sub dir/b.bin", randBytes(10, 1), mtime1)
	s.put("/tree/sub dir/deeper/empty", nil, mtime1)
	s.mkdir("/tree/empty dir", mtime1)
	s.put("/elsewhere/target", []byte("xyz"), mtime1+3)
	s.links["/tree/link-to-file"] = "/elsewhere/target"
	s.links["/tree/link-to-dir"] = "/elsewhere"
	s.links["/tree/dangling"] = "/nowhere"
	c, _ := testClient(t, Options{})
	es, err := c.Walk(context.Background(), s.target("/tree"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, fmt.Sprintf("%s %v %d", e.Rel, e.Kind, e.Size))
	}
	want := []string{
		"a.txt file 1",
		"dangling other 0",
		"empty dir dir 0",
		"link-to-dir symlink 0",
		"link-to-file file 3",
		"sub dir dir 0",
		"sub dir/b.bin file 10",
		"sub dir/deeper dir 0",
		"sub dir/deeper/empty file 0",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("walk:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := c.Walk(context.Background(), s.target("/tree/a.txt"), nil); err == nil {
		t.Fatal("walking a file worked")
	}
}

func TestNotAFile(t *testing.T) {
	s := newFakeServer(t)
	s.mkdir("/d", mtime1)
	c, _ := testClient(t, Options{})
	_, err := c.Fetch(context.Background(), Job{Src: s.target("/d"), Dst: filepath.Join(t.TempDir(), "d")})
	if err == nil || !strings.Contains(err.Error(), "is a directory (use -r") || Retryable(err) {
		t.Fatalf("err %v", err)
	}
}

func TestLocalErrorIsNotRetried(t *testing.T) {
	s := newFakeServer(t)
	s.put("/f", []byte("x"), mtime1)
	c, rec := testClient(t, Options{})
	_, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: filepath.Join(t.TempDir(), "no", "such", "dir", "f")})
	var le *LocalError
	if !errors.As(err, &le) {
		t.Fatalf("err %T %v", err, err)
	}
	if len(rec.kinds(EventRetry)) != 0 {
		t.Fatal("a local error was retried")
	}
}

func TestRateLimit(t *testing.T) {
	s := newFakeServer(t)
	data := randBytes(1<<20, 2)
	s.put("/f", data, mtime1)
	c, _ := testClient(t, Options{RateLimit: 4 << 20})
	start := time.Now()
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: filepath.Join(t.TempDir(), "f")}); err != nil {
		t.Fatal(err)
	}
	// 1 MiB at 4 MiB/s, less the burst allowance: at least ~200ms.
	if el := time.Since(start); el < 180*time.Millisecond {
		t.Fatalf("1 MiB at 4 MiB/s took %v", el)
	}
}

// Idle pooled connections that the server closed meanwhile are replaced
// without counting as a failure.
func TestStalePooledConnection(t *testing.T) {
	s := newFakeServer(t)
	s.put("/a", []byte("aaa"), mtime1)
	c, rec := testClient(t, Options{Retries: -1})
	dir := t.TempDir()
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/a"), Dst: filepath.Join(dir, "a")}); err != nil {
		t.Fatal(err)
	}
	// Close the server side of every idle connection.
	s.mu.Lock()
	for conn := range s.open {
		conn.Close()
	}
	s.mu.Unlock()
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/a"), Dst: filepath.Join(dir, "b")}); err != nil {
		t.Fatal(err)
	}
	if r := rec.kinds(EventRetry); len(r) != 0 {
		t.Fatalf("stale connection reported as retries: %+v", r)
	}
}
