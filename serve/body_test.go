package serve

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/wire"
)

// logBuf collects a test server's log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitResult waits for the connection's end.
func (ts *testServer) waitResult(t *testing.T) Result {
	t.Helper()
	select {
	case res := <-ts.result:
		return res
	case <-time.After(10 * time.Second):
		t.Fatal("the connection did not end")
	}
	return Result{}
}

// TestFileChangedWhileSent: a file changed in place while its body is being
// sent (new bytes, its mtime put back, or only its mode) is never sent
// whole: the body ends short before its last chunk, the outcome is
// file-changed, and the log says so. With the open-file cache too, whose
// descriptor and stat a hit reuses.
func TestFileChangedWhileSent(t *testing.T) {
	const size = 16 << 20 // far more than the socket buffers hold
	changes := []struct {
		name   string
		change func(t *testing.T, p string, old time.Time)
	}{
		{"in place", func(t *testing.T, p string, old time.Time) {
			// dd conv=notrunc: same size, new bytes in the part not yet sent.
			writeAt(t, p, make([]byte, 1<<20), size-2<<20)
		}},
		{"mtime put back", func(t *testing.T, p string, old time.Time) {
			// rsync --inplace -t: only ctime tells.
			writeAt(t, p, make([]byte, 1<<20), size-2<<20)
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}},
		{"chmod", func(t *testing.T, p string, old time.Time) {
			if err := os.Chmod(p, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	data := random(size)
	for _, mode := range config.Modes {
		for i, ch := range changes {
			for _, cached := range []bool{false, true} {
				if cached && i > 0 {
					continue // the cache matters to what st is, not to what changed
				}
				name := mode + "/" + strings.ReplaceAll(ch.name, " ", "-")
				if cached {
					name += "/cached"
				}
				t.Run(name, func(t *testing.T) {
					ts := newTestServer(t, mode, func(o *Options) {
						o.HeaderTimeout = time.Minute // writing the file below may be slow on a loaded machine
						if cached {
							o.FileCache = time.Minute
						}
					})
					ts.write(t, "f", data)
					p := filepath.Join(ts.root, "f")
					// An hour back, so the change moves mtime whatever the
					// file system's timestamp granularity.
					old := time.Now().Add(-time.Hour).Truncate(time.Second)
					if err := os.Chtimes(p, old, old); err != nil {
						t.Fatal(err)
					}
					if cached {
						if _, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); !bytes.Equal(body, data) {
							t.Fatal("first GET differs")
						}
					}
					if err := ts.client.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
						t.Fatal(err)
					}
					ts.client.SetDeadline(time.Now().Add(10 * time.Second))
					wire.WriteRequest(ts.client, &wire.Request{Op: wire.OpGet, Path: "/f"})
					r, err := wire.ReadResponse(ts.br)
					if err != nil || r.BodyLen != size || r.MTime != old.UnixNano() {
						t.Fatal(r, err)
					}
					head := make([]byte, 1<<20)
					if _, err := io.ReadFull(ts.br, head); err != nil {
						t.Fatal(err)
					}
					ch.change(t, p, old)
					rest, err := io.Copy(io.Discard, ts.br)
					got := int64(len(head)) + rest
					if err != nil || got >= size {
						t.Fatalf("received %d of %d bytes, %v: want a short body, then EOF", got, size, err)
					}
					res := ts.waitResult(t)
					if res.Outcome != OutcomeChanged {
						t.Fatalf("outcome %q, want %q", res.Outcome, OutcomeChanged)
					}
					want := got
					if cached {
						want += size // the first GET's
					}
					if res.Bytes != want {
						t.Errorf("result says %d bytes sent, the client got %d", res.Bytes, want)
					}
					log := ts.logs.String()
					if !strings.Contains(log, "level=WARN") || !strings.Contains(log, "file changed while being sent") ||
						!strings.Contains(log, "path=/f") || !strings.Contains(log, "expected=16777216") {
						t.Fatalf("log:\n%s", log)
					}
					t.Logf("cut after %d of %d bytes", got, size)
				})
			}
		}
	}
}

func writeAt(t *testing.T, p string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestTrailingSlashNotCached: "f/" and "f/." name a directory, so they are
// refused even while "f" is in the open-file cache (whose keys are cleaned
// paths).
func TestTrailingSlashNotCached(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.FileCache = time.Minute })
	ts.write(t, "f", []byte("hello"))
	if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); r.Status != wire.StatusOK || string(body) != "hello" {
		t.Fatalf("GET /f: %v %q", r.Status, body)
	}
	for _, p := range []string{"/f/", "/f/.", "f//", "//f/./"} {
		r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: p})
		if r.Status != wire.StatusNotFound || len(body) != 0 || !strings.Contains(r.Message, "not a directory") {
			t.Errorf("GET %s: %v %q, %d bytes; want not found: not a directory", p, r.Status, r.Message, len(body))
		}
	}
}

// TestSendTimeoutLogged: a client dropped by send_timeout is logged at
// info, with its address and the path.
func TestSendTimeoutLogged(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, func(o *Options) {
		o.SendTimeout = 200 * time.Millisecond
		o.HeaderTimeout = time.Minute // writing the file below may be slow on a loaded machine
	})
	ts.write(t, "f", random(32<<20))
	wire.WriteRequest(ts.client, &wire.Request{Op: wire.OpGet, Path: "/f"})
	if res := ts.waitResult(t); res.Outcome != OutcomeClientGone {
		t.Fatalf("outcome %q", res.Outcome)
	}
	log := ts.logs.String()
	if !strings.Contains(log, "level=INFO") || !strings.Contains(log, "send_timeout") ||
		!strings.Contains(log, "client="+ts.client.LocalAddr().String()) || !strings.Contains(log, "path=/f") {
		t.Fatalf("log:\n%s", log)
	}
}
