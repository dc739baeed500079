package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/bench/internal/httphead"
	"github.com/zfs-serve/zfs-serve/bench/internal/proc"
	"github.com/zfs-serve/zfs-serve/wire"
)

// The idle section: what an idle keep-alive connection costs a server in
// memory. Each run starts the server fresh, opens IdleConns connections,
// each completing one request so it is a kept-alive connection waiting for
// its next, waits IdleSettle, reads the server's RSS and closes them.

var (
	mBaseRSS = Metric{Key: "rss_base", Label: "RSS before MiB", Scale: 1.0 / (1 << 20), Digits: 1, Lower: true, Memory: true}
	mOpenRSS = Metric{Key: "rss_open", Label: "RSS just opened MiB", Scale: 1.0 / (1 << 20), Digits: 1, Lower: true, Memory: true}
	mIdleNow = Metric{Key: "rss_idle", Label: "RSS idle MiB", Scale: 1.0 / (1 << 20), Digits: 1, Lower: true, Memory: true}
	mIdleKiB = Metric{Key: "kib_per_idle_conn", Label: "KiB per idle connection", Scale: 1, Digits: 2, Lower: true, Memory: true}
)

// params.IdleSettle is how long the connections stay idle before RSS is
// read: longer than zfs-serve takes to park an idle connection
// (serve/park.go: at most two sweeps of a second) and to hand the memory
// of the ended goroutines back (the next sweep that parks nobody), 6 s;
// the quick run's 3 s is just enough for that, and no measurement.

// idleOpeners is how many connections are being opened at once.
const idleOpeners = 16

// idle runs the idle section against zfs-serve (native and HTTP, on its
// one port) and nginx, each run on a freshly started server.
func (b *bench) idle() {
	n := b.p.IdleConns
	sec := &Section{ID: "idle", Title: fmt.Sprintf("Memory per idle keep-alive connection, %d connections", n),
		What:    fmt.Sprintf("A freshly started server (zfs-serve: supervisor and two workers; nginx: master and two workers) answers one request on one connection; then the resident memory (VmRSS) of all its processes, summed, is read (before). %d connections are opened, %d at a time, and each sends one request for a 4 KiB file and reads the whole response, so each is a kept-alive connection waiting for its next request (zfs-serve: the native protocol, or HTTP/1.1 on the same port; nginx: HTTP/1.1). RSS is read once all are open (just opened) and again after they have been idle for %s (idle). KiB per idle connection = (idle - before) / %d. Then they are closed and the server stopped. Every run starts its server anew, so one run's freed memory is not another's. Memory is not a timing: it is reported even if the box was busy.", n, idleOpeners, b.p.IdleSettle, n),
		Metrics: []Metric{mBaseRSS, mOpenRSS, mIdleNow, mIdleKiB}, Ratios: []string{"kib_per_idle_conn"}}
	b.quiet(sec)
	if b.nofile < n+100 {
		b.fail("idle: open file limit %d is too low for %d connections (bench/run raises it)", b.nofile, n)
		return
	}
	type rowSpec struct{ key, server, label, proto string }
	rows := []rowSpec{
		{"zfs-sendfile", "zfs-sendfile", "zfs-serve (sendfile), native", "native"},
		{zfsHTTPKey, "zfs-sendfile", "zfs-serve (sendfile), HTTP", "http"},
		{"nginx", "nginx", serverLabel("nginx"), "http"},
	}
	failed := map[string]bool{}
	for i := range b.p.Runs {
		for j := range rows {
			r := rows[(i+j)%len(rows)]
			row := sec.row(r.key, r.label)
			if failed[r.key] {
				continue
			}
			m, err := b.idleRun(r.server, r.proto, n)
			if err != nil {
				row.Errors = append(row.Errors, err.Error())
				b.fail("idle: %s: %v", r.label, err)
				failed[r.key] = true
				continue
			}
			row.Runs = append(row.Runs, m)
			b.logf("idle: %s: %.0f -> %.0f -> %.0f KiB, %.2f KiB per idle connection (%.2f of it in the supervisor or master)", r.label,
				m["rss_base"]/1024, m["rss_open"]/1024, m["rss_idle"]/1024, m["kib_per_idle_conn"], m["kib_per_idle_conn_main"])
		}
	}
	var ordered []*Row
	for _, r := range rows {
		if x := sec.find(r.key); x != nil {
			ordered = append(ordered, x)
		}
	}
	sec.Rows = ordered
	b.finish(sec)
}

// idleRun is one run of the idle section on a fresh server.
func (b *bench) idleRun(key, proto string, n int) (sample, error) {
	s, err := b.start(key)
	if err != nil {
		return nil, err
	}
	defer b.stop(s)
	// One request first, so that what the first connection sets up once
	// (caches, the workers' first goroutines) is in the baseline.
	warm, err := idleConn(s.addr, proto)
	if err != nil {
		return nil, fmt.Errorf("warm-up request: %w", err)
	}
	warm.Close()
	time.Sleep(500 * time.Millisecond)
	pids := s.pids()
	base := proc.RSS(pids)
	baseMain := proc.RSS(pids[:1])
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range idleOpeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := idleConn(s.addr, proto)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
					next.Store(int64(n)) // stop the others
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	pids = s.pids()
	open := proc.RSS(pids)
	time.Sleep(b.p.IdleSettle)
	idle := proc.RSS(s.pids())
	idleMain := proc.RSS([]int{s.pid()})
	// Every connection must still be open: a server that closed them
	// would look cheap.
	if err := idleAlive(conns); err != nil {
		return nil, err
	}
	return sample{"rss_base": float64(base), "rss_open": float64(open), "rss_idle": float64(idle),
		"kib_per_idle_conn": float64(idle-base) / 1024 / float64(n), "conns": float64(n),
		"kib_per_idle_conn_main": float64(idleMain-baseMain) / 1024 / float64(n)}, nil
}

// idleConn opens a connection to addr and completes one request for a
// 4 KiB file on it, reading the whole response, and leaves it open.
func idleConn(addr, proto string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := idleRequest(c, proto); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

const idlePath = "/small/0000.bin"

func idleRequest(c net.Conn, proto string) error {
	if proto == "native" {
		q := wire.Request{Op: wire.OpGet, Path: idlePath}
		if err := wire.WriteRequest(c, &q); err != nil {
			return err
		}
		r, err := wire.ReadResponse(c)
		if err != nil {
			return err
		}
		if r.Status != wire.StatusOK {
			return fmt.Errorf("status %v: %s", r.Status, r.Message)
		}
		_, err = io.CopyN(io.Discard, c, r.BodyLen)
		return err
	}
	if _, err := c.Write(httphead.Request("bench", idlePath)); err != nil {
		return err
	}
	// The server sends nothing after the response, so a buffered reader
	// cannot read into anything else.
	br := bufio.NewReaderSize(c, 512)
	var head []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		head = append(head, line...)
		if len(line) <= 2 {
			break
		}
	}
	h, err := httphead.Parse(head)
	if err != nil {
		return err
	}
	if h.Status != 200 || h.Close {
		return fmt.Errorf("status %d, close %v", h.Status, h.Close)
	}
	_, err = io.CopyN(io.Discard, br, h.ContentLength)
	if err == nil && br.Buffered() > 0 {
		err = errors.New("bytes after the response")
	}
	return err
}

// idleAlive checks that the server has closed none of the connections:
// MSG_PEEK|MSG_DONTWAIT finds EAGAIN on an open, idle connection, and EOF
// or an error on one the server closed.
func idleAlive(conns []net.Conn) error {
	closed := 0
	for _, c := range conns {
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			return err
		}
		open := false
		rc.Control(func(fd uintptr) {
			var b [1]byte
			_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			open = err == unix.EAGAIN
		})
		if !open {
			closed++
		}
	}
	if closed > 0 {
		return fmt.Errorf("the server closed %d of %d idle connections", closed, len(conns))
	}
	return nil
}
