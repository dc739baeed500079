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
