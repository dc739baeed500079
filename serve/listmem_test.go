package serve

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// TestListingRefusedBeforeBuilt: a worker that holds as many listing
// bytes as it may refuses a listing at once, without waiting for a turn
// to build it: building it would cost a walk of the folder and its whole
// body in memory, only to refuse it then.
func TestListingRefusedBeforeBuilt(t *testing.T) {
	ts := newHTTPServer(t)
	ts.write(t, "d/a", []byte("1"))
	for range cap(ts.srv.listBuilds) {
		ts.srv.listBuilds <- struct{}{} // as if others were being built
	}
	t.Cleanup(func() {
		for range cap(ts.srv.listBuilds) {
			<-ts.srv.listBuilds
		}
	})
	ts.srv.listBytes.Store(maxListBytes) // as if others were being sent
	resp, _ := ts.httpDo(t, "GET", "GET /d/ HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("HTTP listing over the budget: %d %v", resp.StatusCode, resp.Header)
	}
	other := &testServer{srv: ts.srv, result: make(chan Result, 1)}
	other.connect(t)
	if r, _ := other.do(t, wire.Request{Op: wire.OpList, Path: "/d"}); r.Status != wire.StatusBusy {
		t.Fatalf("LIST over the budget: %v", r.Status)
	}
}

// TestListingHeldOffHeap: large listings being sent to clients that do
// not read are held outside Go's heap (listmem.go), where the collector's
// headroom and the slack of append do not double them, and are given back
// when their connections end. On the heap, eight listings of 518 kB held
// at once grew it by 4.3 MB.
func TestListingHeldOffHeap(t *testing.T) {
	ts := newHTTPServer(t)
	long := strings.Repeat("n", 200)
	const files = 1000
	for i := range files {
		ts.write(t, fmt.Sprintf("big/%s%05d", long, i), nil)
	}
	// Clients that read nothing, with little room in either socket buffer,
	// so each response waits with its listing held.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return nil
	}}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const conns = 8
	clients := make([]net.Conn, conns)
	for i := range clients {
		c, fd := loopbackDial(t, d)
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
		go ts.srv.Run(fd, ConnInfo{Client: c.LocalAddr().String()}, func(Result) {})
		if _, err := io.WriteString(c, "GET /big/ HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		clients[i] = c
	}
	var held int64
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if held = ts.srv.listBytes.Load(); held >= conns*400<<10 && held%conns == 0 && len(ts.srv.listBuilds) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d listing bytes held, want %d listings of at least 400 kB", held, conns)
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > held/2 {
		t.Errorf("the heap grew by %d bytes with %d listing bytes held", grew, held)
	}
	// A held copy is the listing, whole (this one read by a client that
	// reads).
	resp, body := ts.httpDo(t, "GET", "GET /big/ HTTP/1.1\r\nHost: x\r\n\r\n")
	if b := string(body); resp.StatusCode != 200 || int64(len(b)) != held/conns || !strings.HasSuffix(b, "</html>\n") || !strings.Contains(b, fmt.Sprintf(">%s%05d</a>", long, files-1)) {
		t.Fatalf("listing: %d, %d bytes: %.200q ... %.200q", resp.StatusCode, len(b), b, b[max(0, len(b)-200):])
	}
	for _, c := range clients {
		c.Close()
	}
	for deadline := time.Now().Add(20 * time.Second); ts.srv.listBytes.Load() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d listing bytes still held after the clients left", ts.srv.listBytes.Load())
		}
	}
}

// TestListingRefusedBeforeBuiltNoRoom: a listing is refused before it is
// built when the worker has less room left than its size when last built,
// not only when it has none. The bytes held stay below the bound by up to
// a listing's size (holdListing refuses what would pass it), so a check
// for no room at all would never refuse first: with 9.6 MB listings a
// worker holds 13 of them, 125 MB of its 128 MiB, and built every further
// request only to refuse it (each a walk and lstat of 50000 names). A
// folder whose size is not known, or that fits, is still built.
func TestListingRefusedBeforeBuiltNoRoom(t *testing.T) {
	ts := newHTTPServer(t)
	for i := range 50 {
		ts.write(t, fmt.Sprintf("d/file%03d", i), nil)
	}
	ts.write(t, "e/a", nil)
	conn := func() *testServer {
		o := &testServer{srv: ts.srv, result: make(chan Result, 1)}
		o.connect(t)
		return o
	}
	// Built once each with room, so their sizes are known.
	_, html := conn().httpDo(t, "GET", "GET /d/ HTTP/1.1\r\nHost: x\r\n\r\n")
	_, list := conn().do(t, wire.Request{Op: wire.OpList, Path: "/d"})
	for deadline := time.Now().Add(10 * time.Second); ts.srv.listBytes.Load() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d listing bytes still held", ts.srv.listBytes.Load())
		}
	}
	if len(html) == 0 || len(list) == 0 {
		t.Fatalf("listings of %d and %d bytes", len(html), len(list))
	}
	// Some room, less than either listing needs.
	ts.srv.listBytes.Store(maxListBytes - int64(min(len(html), len(list))) + 1)
	t.Cleanup(func() { ts.srv.listBytes.Store(0) })
	// Every build token taken: a listing not refused at once would wait
	// for one (and the read time out).
	for range cap(ts.srv.listBuilds) {
		ts.srv.listBuilds <- struct{}{}
	}
	released := false
	release := func() {
		if !released {
			released = true
			for range cap(ts.srv.listBuilds) {
				<-ts.srv.listBuilds
			}
		}
	}
	t.Cleanup(release)
	if resp, _ := conn().httpDo(t, "GET", "GET /d/ HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("HTTP listing with too little room: %d %v", resp.StatusCode, resp.Header)
	}
	if r, _ := conn().do(t, wire.Request{Op: wire.OpList, Path: "/d"}); r.Status != wire.StatusBusy {
		t.Fatalf("LIST with too little room: %v", r.Status)
	}
	release()
	if resp, body := conn().httpDo(t, "GET", "GET /e/ HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || !strings.Contains(string(body), ">a</a>") {
		t.Fatalf("a small listing with room for it: %d %q", resp.StatusCode, body)
	}
}

// TestListingOneAllocation: an HTML or JSON listing is made in one
// allocation of its exact size, whatever its names and sizes: a guess
// that falls short is grown by append, which leaves the guess and the
// growth's slack on the heap. The old guess (120 bytes of HTML markup or
// 80 of JSON a file, names twice or once) was short for files of a few GB
// and for names that need escaping or are not ASCII.
func TestListingOneAllocation(t *testing.T) {
	ts := newHTTPServer(t)
	names := []string{"file-with-a-reasonably-long-name-%03d.txt", "Ça été créé à %03d", "日本語のファイル名%03d", "a&b<c>\"d\" %03d"}
	for i := range 400 {
		name := filepath.Join(ts.root, "d", fmt.Sprintf(names[i%len(names)], i))
		ts.write(t, "d/x", nil)
		if err := os.Rename(filepath.Join(ts.root, "d", "x"), name); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(name, int64(i)<<26); err != nil { // sparse, up to 25 GiB
			t.Fatal(err)
		}
	}
	for _, accept := range []string{"text/html", "application/json"} {
		c := &conn{s: ts.srv}
		c.getHTTP()
		c.http.req.Accept = accept
		body, ctype, _, err := c.listing("/d/")
		if err != nil || !strings.Contains(ctype, strings.TrimPrefix(accept, "text/")) {
			t.Fatalf("%s: %s %v", accept, ctype, err)
		}
		if cap(body) != len(body) {
			t.Errorf("%s listing of %d bytes made in a slice of %d", accept, len(body), cap(body))
		}
	}
}
