package fetch

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// One file from an HTTP server, another HTTP server and a zfs-serve (native)
// server at once: the bytes are right and the work is spread.
func TestMirrorsSpreadTheWork(t *testing.T) {
	data := randBytes(6*MinSplit+777, 21)
	h1, h2 := newHTTPFake(t, false), newHTTPFake(t, false)
	h1.put("/f", data, lastMod)
	h2.put("/g", data, lastMod)
	n := newFakeServer(t)
	n.put("/f", data, mtime1)
	for _, stream := range []bool{false, true} {
		c, rec := testClient(t, Options{Conns: 2})
		before := [3]int64{h1.sent.Load(), h2.sent.Load(), n.sent.Load()}
		j := Job{Src: h1.target("/f"), Mirrors: []Target{h2.target("/g"), n.target("/f")}, Name: "out"}
		dst := filepath.Join(t.TempDir(), "out")
		if stream {
			out, err := os.Create(dst)
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			j.Out = out
		} else {
			j.Dst = dst
		}
		if _, err := c.Fetch(context.Background(), j); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(dst)
		if sumHex(got) != sumHex(data) {
			t.Fatalf("stream=%v: content differs (%d bytes)", stream, len(got))
		}
		sent := [3]int64{h1.sent.Load() - before[0], h2.sent.Load() - before[1], n.sent.Load() - before[2]}
		used := 0
		for _, s := range sent {
			if s > 0 {
				used++
			}
		}
		t.Logf("stream=%v: bytes sent by each source: %v", stream, sent)
		if !stream && used < 2 {
			t.Errorf("only %d of 3 sources sent bytes: %v", used, sent)
		}
		if p := rec.kinds(EventDone); len(p) != 1 || p[0].Sources != 3 || p[0].SourcesLive != 3 || p[0].SHA256 != sumHex(data) {
			t.Errorf("done: %+v", p)
		}
	}
}

// A mirror that keeps failing, one whose file differs and one that refuses
// are dropped with a warning; the others finish the file.
func TestMirrorsDropped(t *testing.T) {
	data := randBytes(4*MinSplit+5, 22)
	good, failing, other, missing := newHTTPFake(t, false), newHTTPFake(t, false), newHTTPFake(t, false), newHTTPFake(t, false)
	good.put("/f", data, lastMod)
	failing.put("/f", data, lastMod)
	other.put("/f", randBytes(len(data)+1, 23), lastMod)
	failing.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		if r.Method == "GET" {
			w.WriteHeader(403)
			return true
		}
		return false
	}
	c, rec := testClient(t, Options{Conns: 2})
	dst := filepath.Join(t.TempDir(), "out")
	j := Job{Src: failing.target("/f"), Mirrors: []Target{other.target("/f"), missing.target("/f"), good.target("/f")}, Dst: dst, Name: "out"}
	if _, err := c.Fetch(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, lastMod.UnixNano())
	why := map[string]string{}
	for _, e := range rec.kinds(EventSource) {
		why[e.Mirror] = e.Err.Error()
	}
	for u, want := range map[string]string{failing.url("/f"): "HTTP 403", other.url("/f"): "differs: size", missing.url("/f"): "404"} {
		if !strings.Contains(why[u], want) {
			t.Errorf("%s: dropped for %q, want %q (all: %v)", u, why[u], want, why)
		}
	}
	for _, r := range other.requests() {
		if r.Method == "GET" {
			t.Errorf("the differing mirror was asked for bytes: %+v", r)
		}
	}
	if d := rec.kinds(EventDone); len(d) != 1 || d[0].SourcesLive != 1 {
		t.Errorf("done: %+v", d)
	}
}

// A mirror whose announced digest differs from the reference's is dropped
// even though size and mtime match.
func TestMirrorDigestDiffers(t *testing.T) {
	data := randBytes(100000, 24)
	a, b := newHTTPFake(t, false), newHTTPFake(t, false)
	a.put("/f", data, lastMod)
	fb := b.put("/f", data, lastMod)
	fb.digest = "sha-256=:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x42}, 32)) + ":"
	c, rec := testClient(t, Options{})
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := c.Fetch(context.Background(), Job{Src: a.target("/f"), Mirrors: []Target{b.target("/f")}, Dst: dst, Name: "out"}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, lastMod.UnixNano())
	if s := rec.kinds(EventSource); len(s) != 1 || !strings.Contains(s[0].Err.Error(), "sha256") {
		t.Errorf("source events: %+v", s)
	}
}

// A mirror that goes away in the middle (its server closes every
// connection and stops listening) has its ranges finished by the others.
func TestMirrorStopsMidway(t *testing.T) {
	data := randBytes(8*MinSplit+3, 25)
	a, b := newFakeServer(t), newHTTPFake(t, false)
	a.put("/f", data, mtime1)
	b.put("/f", data, lastMod)
	a.hook = func(n int, q wire.Request) fault {
		if q.Op.String() == "GET" && n >= 2 {
			return fault{cutAfter: 1 << 20, after: func() { a.stopListening() }}
		}
		return fault{}
	}
	c, rec := testClient(t, Options{Conns: 2, RetryFor: 2 * time.Second})
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := c.Fetch(context.Background(), Job{Src: a.target("/f"), Mirrors: []Target{b.target("/f")}, Dst: dst, Name: "out"}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, mtime1)
	t.Logf("native sent %d, http sent %d; %d retries, %d sources dropped", a.sent.Load(), b.sent.Load(), len(rec.kinds(EventRetry)), len(rec.kinds(EventSource)))
}

// A slow mirror does not hold the download back: a faster one takes over
// the far part of its range.
func TestMirrorSlowIsRelieved(t *testing.T) {
	data := randBytes(6*MinSplit, 26)
	fast, slow := newHTTPFake(t, false), newHTTPFake(t, false)
	fast.put("/f", data, lastMod)
	slow.put("/f", data, lastMod)
	slow.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		if r.Method != "GET" {
			return false
		}
		// 64 KiB, then a stall long enough to lose the rest to the fast one.
		w.Header().Set("ETag", slow.files["/f"].etag)
		w.Header().Set("Last-Modified", lastMod.UTC().Format(http.TimeFormat))
		rs, re, code := 0, len(data), 200
		if rg := r.Header.Get("Range"); rg != "" {
			fmt.Sscanf(rg, "bytes=%d-%d", &rs, &re)
			re++
			code = 206
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rs, re-1, len(data)))
		}
		w.Header().Set("Content-Length", fmt.Sprint(re-rs))
		w.WriteHeader(code)
		k := min(re-rs, 64<<10)
		w.Write(data[rs : rs+k])
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
		return true
	}
	c, _ := testClient(t, Options{StallTimeout: 60 * time.Second})
	dst := filepath.Join(t.TempDir(), "out")
	start := time.Now()
	if _, err := c.Fetch(context.Background(), Job{Src: slow.target("/f"), Mirrors: []Target{fast.target("/f")}, Dst: dst, Name: "out"}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, lastMod.UnixNano())
	t.Logf("done in %v; fast sent %d, slow %d", time.Since(start), fast.sent.Load(), slow.sent.Load())
	if fast.sent.Load() < int64(len(data))/2 {
		t.Errorf("the fast mirror sent only %d of %d bytes", fast.sent.Load(), len(data))
	}
}
