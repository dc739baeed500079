// Command zload is the benchmark's load generator. It speaks zfs-serve's
// native protocol (package wire) and plain HTTP/1.1, so zfs-serve and nginx
// are measured with the same client: N connections, each sending GET
// requests back to back (keep-alive) or opening a new connection for every
// request, for a duration or a number of requests, whichever comes first.
// It reports requests/s, body bytes/s and latency percentiles (from just
// before the request is written, or the connection dialled, to the last
// body byte read).
//
//	zload -proto native -addr 127.0.0.1:7070 -c 64 -d 10s -pathfmt /small/%04d.bin -npaths 1000
//	zload -proto http -addr 127.0.0.1:8080 -c 32 -newconn -n 100000 -path /small/0000.bin
//
// -proxy starts every connection with a PROXY protocol v2 header, as
// HAProxy's send-proxy-v2 writes it (for a proxy: listener), sent in the
// same write as the connection's first request.
//
// Keep-alive connections are all established before the clock starts, so a
// connect storm (and a listen backlog overflow) is not part of the figure.
// Every run is bounded: -d, -n, and -max-time (a hard cap) all stop it.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zfs-serve/zfs-serve/bench/internal/httphead"
	"github.com/zfs-serve/zfs-serve/proxyproto"
	"github.com/zfs-serve/zfs-serve/wire"
)

type options struct {
	proto   string
	addr    string
	paths   []string
	conns   int
	dur     time.Duration
	maxReq  int64
	maxTime time.Duration
	newConn bool
	timeout time.Duration
	expect  int64
	proxy   bool
}

// Result is what zload prints (with -json, as one JSON object).
type Result struct {
	Proto       string  `json:"proto"`
	Addr        string  `json:"addr"`
	Conns       int     `json:"conns"`
	NewConn     bool    `json:"newconn"`
	Proxy       bool    `json:"proxy,omitempty"`
	Requests    int64   `json:"requests"`
	Bytes       int64   `json:"bytes"` // response body bytes
	Errors      int64   `json:"errors"`
	Reconnects  int64   `json:"reconnects"` // keep-alive connections the server closed
	Seconds     float64 `json:"seconds"`
	RPS         float64 `json:"rps"`
	BytesPerSec float64 `json:"bytes_per_sec"`
	P50us       float64 `json:"p50_us"`
	P90us       float64 `json:"p90_us"`
	P99us       float64 `json:"p99_us"`
	P999us      float64 `json:"p999_us"`
	MaxUs       float64 `json:"max_us"`
	FirstError  string  `json:"first_error,omitempty"`
}

type pathList []string

func (p *pathList) String() string     { return strings.Join(*p, ",") }
func (p *pathList) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	var o options
	var paths pathList
	var pathFmt, pathFile string
	var nPaths int
	var asJSON bool
	flag.StringVar(&o.proto, "proto", "native", "protocol: native (zfs-serve) or http (HTTP/1.1)")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:7070", "server address host:port")
	flag.Var(&paths, "path", "request path (repeat for several; requests cycle through them)")
	flag.StringVar(&pathFmt, "pathfmt", "", "printf format for paths, with -npaths: /small/%04d.bin")
	flag.IntVar(&nPaths, "npaths", 0, "number of paths made from -pathfmt (0..N-1)")
	flag.StringVar(&pathFile, "paths", "", "file with one request path per line")
	flag.IntVar(&o.conns, "c", 64, "concurrent connections")
	flag.DurationVar(&o.dur, "d", 0, "run for this long (0: until -n requests)")
	flag.Int64Var(&o.maxReq, "n", 0, "stop after this many requests (0: until -d)")
	flag.DurationVar(&o.maxTime, "max-time", 10*time.Minute, "hard cap on the run, whatever -d and -n say")
	flag.BoolVar(&o.newConn, "newconn", false, "a new connection for every request")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Second, "connect and I/O timeout")
	flag.Int64Var(&o.expect, "expect", -1, "expected body length of every response (-1: any); a mismatch is an error")
	flag.BoolVar(&asJSON, "json", false, "print the result as JSON")
	flag.BoolVar(&o.proxy, "proxy", false, "start every connection with a PROXY protocol v2 header (for a proxy: listener)")
	flag.Parse()

	o.paths = paths
	if pathFmt != "" {
		for i := range nPaths {
			o.paths = append(o.paths, fmt.Sprintf(pathFmt, i))
		}
	}
	if pathFile != "" {
		b, err := os.ReadFile(pathFile)
		if err != nil {
			fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				o.paths = append(o.paths, l)
			}
		}
	}
	switch {
	case len(o.paths) == 0:
		fatal(errors.New("no request path: use -path, -pathfmt with -npaths, or -paths"))
	case o.proto != "native" && o.proto != "http":
		fatal(fmt.Errorf("unknown -proto %q (native or http)", o.proto))
	case o.conns < 1:
		fatal(errors.New("-c must be at least 1"))
	case o.dur <= 0 && o.maxReq <= 0:
		fatal(errors.New("give -d or -n (or both)"))
	}
	r, err := run(o)
	if err != nil {
		fatal(err)
	}
	if asJSON {
		json.NewEncoder(os.Stdout).Encode(r)
	} else {
		fmt.Printf("%s %s c=%d newconn=%v proxy=%v: %d requests in %.2fs, %.0f req/s, %.1f MB/s, %d errors, %d reconnects\n",
			r.Proto, r.Addr, r.Conns, r.NewConn, r.Proxy, r.Requests, r.Seconds, r.RPS, r.BytesPerSec/1e6, r.Errors, r.Reconnects)
		fmt.Printf("latency us: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f\n", r.P50us, r.P90us, r.P99us, r.P999us, r.MaxUs)
		if r.FirstError != "" {
			fmt.Println("first error:", r.FirstError)
		}
	}
	if r.Requests == 0 {
		os.Exit(1)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "zload:", err)
	os.Exit(2)
}

// requests holds the encoded request for every path, built once.
func requests(o options) [][]byte {
	out := make([][]byte, len(o.paths))
	for i, p := range o.paths {
		if o.proto == "native" {
			q := wire.Request{Op: wire.OpGet, Path: p}
			var b bytes.Buffer
			if err := wire.WriteRequest(&b, &q); err != nil {
				fatal(fmt.Errorf("path %q: %w", p, err))
			}
			out[i] = b.Bytes()
		} else {
			out[i] = httphead.Request(o.addr, p)
		}
	}
	return out
}

type worker struct {
	id         int
	h          hist
	requests   int64
	bytes      int64
	errors     int64
	reconnects int64
	firstErr   error
	c          *conn
}

func (w *worker) fail(err error) {
	w.errors++
	if w.firstErr == nil {
		w.firstErr = err
	}
}

func run(o options) (*Result, error) {
	reqs := requests(o)
	ws := make([]*worker, o.conns)
	for i := range ws {
		ws[i] = &worker{id: i}
	}
	hardStop := time.Now().Add(o.maxTime)
	// Keep-alive: connect everything first, concurrently, before the clock.
	if !o.newConn {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failed int
		var firstErr error
		for _, w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := dial(o, hardStop)
				if err != nil {
					mu.Lock()
					if failed++; firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				w.c = c
			}()
		}
		wg.Wait()
		if failed > 0 {
			for _, w := range ws {
				if w.c != nil {
					w.c.close()
				}
			}
			return nil, fmt.Errorf("%d of %d connections failed: %v", failed, o.conns, firstErr)
		}
	}
	start := time.Now()
	end := hardStop
	if o.dur > 0 && start.Add(o.dur).Before(end) {
		end = start.Add(o.dur)
	}
	var issued atomic.Int64
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(o, reqs, end, &issued)
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()

	r := &Result{Proto: o.proto, Addr: o.addr, Conns: o.conns, NewConn: o.newConn, Proxy: o.proxy, Seconds: secs}
	var h hist
	for _, w := range ws {
		h.merge(&w.h)
		r.Requests += w.requests
		r.Bytes += w.bytes
		r.Errors += w.errors
		r.Reconnects += w.reconnects
		if r.FirstError == "" && w.firstErr != nil {
			r.FirstError = w.firstErr.Error()
		}
	}
	r.RPS = float64(r.Requests) / secs
	r.BytesPerSec = float64(r.Bytes) / secs
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	r.P50us, r.P90us, r.P99us, r.P999us = us(h.quantile(0.5)), us(h.quantile(0.9)), us(h.quantile(0.99)), us(h.quantile(0.999))
	r.MaxUs = us(h.max)
	return r, nil
}

func (w *worker) loop(o options, reqs [][]byte, end time.Time, issued *atomic.Int64) {
	defer func() {
		if w.c != nil {
			w.c.close()
		}
	}()
	next := w.id % len(reqs)
	for {
		if o.maxReq > 0 && issued.Add(1) > o.maxReq {
			return
		}
		t0 := time.Now()
		if !t0.Before(end) {
			return
		}
		req := reqs[next]
		if next++; next == len(reqs) {
			next = 0
		}
		if w.c == nil {
			c, err := dial(o, end.Add(o.timeout))
			if err != nil {
				w.fail(err)
				time.Sleep(10 * time.Millisecond) // do not spin on a refusing server
				continue
			}
			w.c = c
		}
		n, err := w.c.roundTrip(req, o.expect)
		if err != nil && errors.Is(err, errServerClosed) {
			// The server closed an idle keep-alive connection: reconnect
			// and send the request again; not an error.
			w.reconnects++
			w.c.close()
			w.c, err = dial(o, end.Add(o.timeout))
			if err == nil {
				n, err = w.c.roundTrip(req, o.expect)
			}
		}
		if err != nil {
			w.fail(err)
			if w.c != nil {
				w.c.close()
				w.c = nil
			}
			continue
		}
		w.h.add(time.Since(t0))
		w.requests++
		w.bytes += n
		if o.newConn || w.c.mustClose {
			w.c.close()
			w.c = nil
		}
	}
}

// conn is one client connection.
type conn struct {
	nc        net.Conn
	br        *bufio.Reader
	native    bool
	used      bool   // a response has been read on it
	mustClose bool   // the server said Connection: close
	header    []byte // -proxy: the PROXY header, sent with the first request
}

var errServerClosed = errors.New("server closed the keep-alive connection")

func dial(o options, deadline time.Time) (*conn, error) {
	d := net.Dialer{Timeout: o.timeout}
	nc, err := d.Dial("tcp", o.addr)
	if err != nil {
		return nil, err
	}
	// One deadline for the connection's whole life bounds a hung server
	// without re-arming a timer per request.
	nc.SetDeadline(deadline.Add(o.timeout))
	c := &conn{nc: nc, br: bufio.NewReaderSize(nc, 64<<10), native: o.proto == "native"}
	if o.proxy {
		la, ra := nc.LocalAddr().(*net.TCPAddr), nc.RemoteAddr().(*net.TCPAddr)
		c.header = proxyproto.AppendV2(nil, proxyproto.Header{Source: la.AddrPort(), Dest: ra.AddrPort()})
	}
	return c, nil
}

func (c *conn) close() { c.nc.Close() }

// roundTrip sends one request and reads the whole response, discarding the
// body. It returns the body length.
func (c *conn) roundTrip(req []byte, expect int64) (int64, error) {
	if c.header != nil {
		req = append(c.header, req...)
		c.header = nil
	}
	if _, err := c.nc.Write(req); err != nil {
		if c.used && isReset(err) {
			return 0, errServerClosed
		}
		return 0, err
	}
	var n int64
	var err error
	if c.native {
		n, err = c.readNative()
	} else {
		n, err = c.readHTTP()
	}
	if err != nil {
		if c.used && (err == io.EOF || errors.Is(err, net.ErrClosed) || isReset(err)) {
			return 0, errServerClosed
		}
		return n, err
	}
	c.used = true
	if expect >= 0 && n != expect {
		return n, fmt.Errorf("body is %d bytes, expected %d", n, expect)
	}
	return n, nil
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (c *conn) readNative() (int64, error) {
	resp, err := wire.ReadResponse(c.br)
	if err != nil {
		return 0, err
	}
	if resp.Status != wire.StatusOK {
		return 0, fmt.Errorf("server: %v: %s", resp.Status, resp.Message)
	}
	return c.discard(resp.BodyLen)
}

func (c *conn) readHTTP() (int64, error) {
	// Peek until the blank line that ends the head is buffered; asking for
	// one byte more than is buffered makes bufio read whatever has arrived.
	var head []byte
	for {
		b, _ := c.br.Peek(c.br.Buffered()) // what is buffered: no error
		if i := bytes.Index(b, httphead.End); i >= 0 {
			head = b[:i+len(httphead.End)]
			break
		}
		if len(b) == c.br.Size() {
			return 0, errors.New("response head larger than the read buffer")
		}
		if _, err := c.br.Peek(len(b) + 1); err != nil {
			if err == io.EOF && len(b) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
	h, err := httphead.Parse(head)
	if err != nil {
		return 0, err
	}
	c.br.Discard(len(head))
	if h.Status != 200 {
		return 0, fmt.Errorf("server: HTTP %d", h.Status)
	}
	c.mustClose = h.Close
	return c.discard(h.ContentLength)
}

func (c *conn) discard(n int64) (int64, error) {
	var got int64
	for got < n {
		k := int(min(n-got, 1<<30))
		d, err := c.br.Discard(k)
		got += int64(d)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return got, err
		}
	}
	return got, nil
}
