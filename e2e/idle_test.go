package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// idleClient is one kept-alive connection of TestIdleParked.
type idleClient struct {
	c    net.Conn
	br   *bufio.Reader
	http bool
	// once: the connection is used for one request, so an HTTP response
	// that closes it is as good as one that keeps it (a draining worker
	// closes what it answers).
	once bool
}

// get fetches path on the connection and returns the body's SHA-256.
func (ic *idleClient) get(path string) (string, error) {
	ic.c.SetDeadline(time.Now().Add(30 * time.Second))
	defer ic.c.SetDeadline(time.Time{})
	h := sha256.New()
	if ic.http {
		if _, err := io.WriteString(ic.c, "GET "+path+" HTTP/1.1\r\nHost: t\r\n\r\n"); err != nil {
			return "", err
		}
		resp, err := http.ReadResponse(ic.br, &http.Request{Method: "GET"})
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close && !ic.once {
			return "", fmt.Errorf("status %d, close %v", resp.StatusCode, resp.Close)
		}
		if _, err := io.Copy(h, resp.Body); err != nil {
			return "", err
		}
		return hex.EncodeToString(h.Sum(nil)), nil
	}
	if err := wire.WriteRequest(ic.c, &wire.Request{Op: wire.OpGet, Path: path}); err != nil {
		return "", err
	}
	r, err := wire.ReadResponse(ic.br)
	if err != nil {
		return "", err
	}
	if r.Status != wire.StatusOK {
		return "", fmt.Errorf("status %v: %s", r.Status, r.Message)
	}
	if _, err := io.CopyN(h, ic.br, r.BodyLen); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

var parkedLine = regexp.MustCompile(`msg="idle connections".* pid=(\d+) .*parked=(\d+)`)

// parkedNow sums, over the workers, the parked count of each one's last
// "idle connections" debug line.
func parkedNow(log string) int {
	last := map[string]int{}
	for _, m := range parkedLine.FindAllStringSubmatch(log, -1) {
		last[m[1]], _ = strconv.Atoi(m[2])
	}
	sum := 0
	for _, n := range last {
		sum += n
	}
	return sum
}

// TestIdleParked: 2000 kept-alive connections (half native, half HTTP),
// each after one request, are parked by the workers (idle connections
// without a goroutine); each one's next request is answered intact, a
// download runs meanwhile, and a drain closes every one of them at once
// while the daemon exits cleanly.
func TestIdleParked(t *testing.T) {
	const n = 2000
	root := shortTempDir(t)
	small := WriteRandom(t, filepath.Join(root, "small.bin"), 4096)
	big := WriteRandom(t, filepath.Join(root, "big.bin"), 4<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2, Config: "log_level = \"debug\"\nlog_format = \"text\"\nidle_timeout = \"5m\"\n"})

	clients := make([]*idleClient, n)
	t.Cleanup(func() {
		for _, ic := range clients {
			if ic != nil {
				ic.c.Close()
			}
		}
	})
	for i := range clients {
		c, err := net.Dial("tcp", d.Addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		ic := &idleClient{c: c, br: bufio.NewReader(c), http: i%2 == 1}
		clients[i] = ic
		if sum, err := ic.get("/small.bin"); err != nil || sum != small {
			t.Fatalf("connection %d, first request: %v (sha256 %s, want %s)", i, err, sum, small)
		}
	}
	waitParked := func(what string) {
		t.Helper()
		if !waitFor(30*time.Second, func() bool { return parkedNow(d.Log()) == n }) {
			t.Fatalf("%s: %d of %d connections parked\n%s", what, parkedNow(d.Log()), n, tail(d.Log(), 20))
		}
	}
	waitParked("after the first requests")
	active := 0
	for _, w := range d.MustStatus().Workers {
		active += w.Active
	}
	if active != n {
		t.Fatalf("status: %d active connections, want %d", active, n)
	}
	// A download while they are parked.
	out := filepath.Join(shortTempDir(t), "big.bin")
	if r := Zfetch(t, "-q", "-o", out, d.URL("/big.bin")); r.Code != 0 {
		t.Fatalf("zfetch: %d\n%s", r.Code, r.Stderr)
	}
	if got := FileSHA256(t, out); got != big {
		t.Fatalf("download while parked: sha256 %s, want %s", got, big)
	}
	// Every parked connection wakes for its next request.
	for i, ic := range clients {
		if sum, err := ic.get("/small.bin"); err != nil || sum != small {
			t.Fatalf("connection %d, after parking: %v (sha256 %s, want %s)", i, err, sum, small)
		}
	}
	waitParked("after the second requests")

	if r := d.Zctl("drain"); r.Code != 0 {
		t.Fatalf("zctl drain: %d\n%s", r.Code, r.Stderr)
	}
	for i, ic := range clients {
		ic.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := ic.br.ReadByte(); !errors.Is(err, io.EOF) {
			t.Fatalf("connection %d after the drain: %v, want EOF", i, err)
		}
	}
	if code := d.WaitExit(30 * time.Second); code != 0 {
		t.Fatalf("exit status %d after the drain\n%s", code, tail(d.Log(), 20))
	}
}
