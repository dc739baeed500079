package e2e

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// TestBadInput: every kind of hostile request gets a clear refusal, never
// escapes the root, and the daemon keeps serving the next client.
func TestBadInput(t *testing.T) {
	root := shortTempDir(t)
	outside := shortTempDir(t)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644)
	os.WriteFile(filepath.Join(root, "ok.txt"), []byte("hello"), 0o644)
	os.MkdirAll(filepath.Join(root, "sub"), 0o755)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "abs-link"))
	os.Symlink("../"+filepath.Base(outside)+"/secret", filepath.Join(root, "rel-link"))
	os.Symlink("/proc/self/root/etc/passwd", filepath.Join(root, "magic-link"))
	os.Symlink("ok.txt", filepath.Join(root, "good-link"))
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	haveDev := os.Geteuid() == 0 && syscall.Mknod(filepath.Join(root, "null"), syscall.S_IFCHR|0o666, 1<<8|3) == nil
	WriteRandom(t, filepath.Join(root, "big.bin"), 64<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	pids := WorkerPIDs(d.MustStatus())

	stillServing := func(t *testing.T) {
		t.Helper()
		c := dial(t, d.Addr)
		defer c.Close()
		sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/ok.txt"})
		if r, body := readFull(t, c); r.Status != wire.StatusOK || string(body) != "hello" {
			t.Fatalf("the next request failed: %+v %q", r, body)
		}
	}

	refusals := []struct {
		name   string
		path   string
		status wire.Status
		msg    string
	}{
		{"dotdot", "/../" + filepath.Base(outside) + "/secret", wire.StatusForbidden, "would leave the served root"},
		{"dotdot-inner", "/sub/../../etc/passwd", wire.StatusForbidden, "would leave the served root"},
		{"absolute", "/etc/passwd", wire.StatusNotFound, "not found: /etc/passwd"},
		{"abs-symlink", "/abs-link", wire.StatusForbidden, "outside the served root"},
		{"rel-symlink", "/rel-link", wire.StatusForbidden, "outside the served root"},
		{"magic-link", "/magic-link", wire.StatusForbidden, "forbidden"},
		{"fifo", "/fifo", wire.StatusNotRegular, "not a regular file"},
		{"directory", "/sub", wire.StatusNotRegular, "directory"},
		{"missing", "/nope", wire.StatusNotFound, "not found: /nope"},
	}
	if haveDev {
		refusals = append(refusals, struct {
			name   string
			path   string
			status wire.Status
			msg    string
		}{"device", "/null", wire.StatusNotRegular, "not a regular file"})
	} else {
		t.Log("not root: skipping the device-node case (mknod needs root)")
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, d.Addr)
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Second)) // refused within a second, never blocking
			sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: tc.path})
			r := readResp(t, c)
			if r.Status != tc.status || !strings.Contains(r.Message, tc.msg) || r.BodyLen != 0 {
				t.Fatalf("GET %s: %v %q, want %v containing %q", tc.path, r.Status, r.Message, tc.status, tc.msg)
			}
			// The connection stays usable after a refusal.
			sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/good-link"})
			if r, body := readFull(t, c); r.Status != wire.StatusOK || string(body) != "hello" {
				t.Fatalf("request after refusal: %+v %q", r, body)
			}
		})
	}

	frames := []struct {
		name string
		raw  []byte
		msg  string
	}{
		// Anything that does not start with the magic is HTTP (TestHTTPBadInput).
		{"huge length field", rawHeader(0xFFFF, 0, 0), "limit is 4096"},
		{"path over the limit", append(rawHeader(wire.MaxPath+1, 0, 0), bytes.Repeat([]byte("a"), wire.MaxPath+1)...), "limit is 4096"},
		{"offset overflow", rawHeader(3, 1<<63, 0), "out of range"},
		{"unknown version", func() []byte { b := rawHeader(0, 0, 0); b[2] = 77; return b }(), "version 77"},
	}
	for _, tc := range frames {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, d.Addr)
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write(tc.raw)
			r := readResp(t, c)
			if r.Status == wire.StatusOK || !strings.Contains(r.Message, tc.msg) {
				t.Fatalf("got %v %q, want an error containing %q", r.Status, r.Message, tc.msg)
			}
			// After a framing error the server closes the connection.
			if n, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatalf("connection still open after a framing error (read %d bytes)", n)
			}
			stillServing(t)
		})
	}

	t.Run("range past the end", func(t *testing.T) {
		c := dial(t, d.Addr)
		defer c.Close()
		sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/ok.txt", Offset: 6})
		if r := readResp(t, c); r.Status != wire.StatusRangeNotSatisfiable || !strings.Contains(r.Message, "past the end") {
			t.Fatalf("got %v %q", r.Status, r.Message)
		}
		// Offset == size is an empty, valid range (a resume of a complete file).
		sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/ok.txt", Offset: 5})
		if r, body := readFull(t, c); r.Status != wire.StatusOK || len(body) != 0 || r.Size != 5 {
			t.Fatalf("offset == size: %+v %q", r, body)
		}
		// A range is honoured byte for byte.
		sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/ok.txt", Offset: 1, Length: 3})
		if r, body := readFull(t, c); r.Status != wire.StatusOK || string(body) != "ell" {
			t.Fatalf("range 1+3: %+v %q", r, body)
		}
	})

	t.Run("truncated frame", func(t *testing.T) {
		c := dial(t, d.Addr)
		c.Write(rawHeader(10, 0, 0)[:12])
		c.(*net.TCPConn).CloseWrite()
		io.ReadAll(c)
		c.Close()
		stillServing(t)
	})

	t.Run("client vanishes mid-transfer", func(t *testing.T) {
		for range 20 {
			c := dial(t, d.Addr)
			sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/big.bin"})
			readResp(t, c)
			io.CopyN(io.Discard, c, 256<<10)
			// RST rather than FIN, the rudest way to go.
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
		stillServing(t)
		if got := WorkerPIDs(d.MustStatus()); !slices.Equal(got, pids) {
			t.Fatalf("workers changed from %v to %v: a vanished client killed one (SIGPIPE?)", pids, got)
		}
		if strings.Contains(d.Log(), "worker exited") {
			t.Fatalf("a worker exited:\n%s", d.Log())
		}
	})
}

func TestHeaderTimeout(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Config: "header_timeout = \"300ms\"\n"})
	c := dial(t, d.Addr)
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if err != io.EOF {
		t.Fatalf("silent client: read %d, %v; want EOF (closed by the server)", n, err)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("closed after %v, before the 300ms header timeout", el)
	}
}
