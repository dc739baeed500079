package e2e

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// cacheGet sends one GET of path on c and returns the announced length
// and the body's sha256 with how many bytes came, and the read error
// (io.ErrUnexpectedEOF for a body cut short).
func cacheGet(t *testing.T, c net.Conn, br *bufio.Reader, path string) (length int64, sum string, n int, err error) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	return resp.ContentLength, FileSHA256Bytes(b), len(b), err
}

// TestHTTPOpenFileCacheValid: a cached small file's stat stands in for a
// fresh one for open_file_cache_valid, through the real binary. Within a
// long window a file grown in place is sent at its old length (the old
// bytes), one truncated in place is cut short and its connection closed
// (never padded), after which the new length is served, and one renamed
// over is still served whole from the old file; with the window at 0 each
// change is seen at once; with a short window the rename is seen once it
// is over.
func TestHTTPOpenFileCacheValid(t *testing.T) {
	data := make([]byte, 64<<10) // one send_chunk at most, larger than what is kept in memory
	rand.Read(data)
	other := make([]byte, 3000)
	rand.Read(other)
	setup := func(t *testing.T, valid string) (*Daemon, string, func() (net.Conn, *bufio.Reader)) {
		root := shortTempDir(t)
		p := filepath.Join(root, "f.bin")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1,
			Config: fmt.Sprintf("open_file_cache = \"1h\"\nopen_file_cache_valid = %q\n", valid)})
		conn := func() (net.Conn, *bufio.Reader) {
			c := dial(t, d.Addr)
			t.Cleanup(func() { c.Close() })
			return c, bufio.NewReader(c)
		}
		return d, p, conn
	}
	renameOver := func(t *testing.T, p string) {
		tmp := p + ".new"
		if err := os.WriteFile(tmp, other, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
	appendTo := func(t *testing.T, p string, n int) {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(make([]byte, n))
		f.Close()
	}

	t.Run("long", func(t *testing.T) {
		_, p, conn := setup(t, "1h")
		c, br := conn()
		if l, sum, _, err := cacheGet(t, c, br, "/f.bin"); l != 64<<10 || sum != FileSHA256Bytes(data) || err != nil {
			t.Fatalf("first GET: length %d, %v", l, err)
		}
		appendTo(t, p, 1000)
		if l, sum, _, err := cacheGet(t, c, br, "/f.bin"); l != 64<<10 || sum != FileSHA256Bytes(data) || err != nil {
			t.Fatalf("grown within the window: length %d, %v: want the old length and bytes", l, err)
		}
		if err := os.Truncate(p, 1000); err != nil {
			t.Fatal(err)
		}
		l, sum, n, err := cacheGet(t, c, br, "/f.bin")
		if l != 64<<10 || n != 1000 || sum != FileSHA256Bytes(data[:1000]) || err != io.ErrUnexpectedEOF {
			t.Fatalf("truncated within the window: length %d, %d bytes, %v: want 64 KiB announced, the file's 1000 bytes, then a close", l, n, err)
		}
		c, br = conn()
		if l, sum, _, err := cacheGet(t, c, br, "/f.bin"); l != 1000 || sum != FileSHA256Bytes(data[:1000]) || err != nil {
			t.Fatalf("after the short response: length %d, %v: want the new length", l, err)
		}
		renameOver(t, p)
		if l, sum, _, err := cacheGet(t, c, br, "/f.bin"); l != 1000 || sum != FileSHA256Bytes(data[:1000]) || err != nil {
			t.Fatalf("renamed over within the window: length %d, %v: want the old file, whole", l, err)
		}
	})
	t.Run("zero", func(t *testing.T) {
		_, p, conn := setup(t, "0s")
		c, br := conn()
		cacheGet(t, c, br, "/f.bin")
		appendTo(t, p, 1000)
		if l, _, _, err := cacheGet(t, c, br, "/f.bin"); l != 64<<10+1000 || err != nil {
			t.Fatalf("grown: length %d, %v: want the new length at once", l, err)
		}
		if err := os.Truncate(p, 1000); err != nil {
			t.Fatal(err)
		}
		if l, sum, _, err := cacheGet(t, c, br, "/f.bin"); l != 1000 || sum != FileSHA256Bytes(data[:1000]) || err != nil {
			t.Fatalf("truncated: length %d, %v: want the new length at once", l, err)
		}
		renameOver(t, p)
		if l, sum, _, err := cacheGet(t, c, br, "/f.bin"); l != 3000 || sum != FileSHA256Bytes(other) || err != nil {
			t.Fatalf("renamed over: length %d, %v: want the new file at once", l, err)
		}
	})
	t.Run("short", func(t *testing.T) {
		_, p, conn := setup(t, "100ms")
		c, br := conn()
		cacheGet(t, c, br, "/f.bin")
		renameOver(t, p)
		deadline := time.Now().Add(10 * time.Second)
		for {
			l, sum, _, err := cacheGet(t, c, br, "/f.bin")
			if err != nil {
				t.Fatal(err)
			}
			if l == 3000 && sum == FileSHA256Bytes(other) {
				break
			}
			if l != 64<<10 || sum != FileSHA256Bytes(data) {
				t.Fatalf("length %d: neither the old file nor the new one", l)
			}
			if time.Now().After(deadline) {
				t.Fatal("the file renamed over is still served 10 s later, with open_file_cache_valid 100ms")
			}
			time.Sleep(20 * time.Millisecond) // the pace of the polling, not synchronisation
		}
	})
}
