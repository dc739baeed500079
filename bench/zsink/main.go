// Command zsink is the benchmark's minimal stream receiver, the same for
// every server: a blocking socket (no runtime poller), one GET request, and
// read(2) into a 1 MiB buffer that is thrown away. It speaks zfs-serve's
// native protocol or HTTP/1.1 (nginx, Go net/http, the bare sendfile probe).
//
//	zsink -proto native -addr 127.0.0.1:7070 -path /big.bin         # one stream, whole file
//	zsink -proto http -addr 127.0.0.1:8080 -path /big.bin -c 16 -d 3s  # 16 streams for 3 s
//
// Without -d each stream fetches the file once and the figure is total
// bytes over the time until the last stream ends. With -d every stream
// keeps fetching (keep-alive) until the time is up; the figure is bytes
// received within it.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/bench/internal/httphead"
	"github.com/zfs-serve/zfs-serve/wire"
)

// Result is what zsink prints (with -json, as one JSON object).
type Result struct {
	Proto       string  `json:"proto"`
	Streams     int     `json:"streams"`
	Bytes       int64   `json:"bytes"` // body bytes
	Responses   int64   `json:"responses"`
	Seconds     float64 `json:"seconds"`
	BytesPerSec float64 `json:"bytes_per_sec"`
}

const bufSize = 1 << 20

func main() {
	proto := flag.String("proto", "native", "protocol: native or http")
	addr := flag.String("addr", "127.0.0.1:7070", "server address host:port")
	path := flag.String("path", "/big.bin", "file to fetch")
	streams := flag.Int("c", 1, "parallel streams (connections)")
	dur := flag.Duration("d", 0, "keep fetching for this long (0: fetch the file once per stream)")
	maxTime := flag.Duration("max-time", 2*time.Minute, "hard cap on the run")
	asJSON := flag.Bool("json", false, "print the result as JSON")
	flag.Parse()

	ap, err := netip.ParseAddrPort(*addr)
	if err != nil || !ap.Addr().Is4() {
		fatal(fmt.Errorf("-addr must be an IPv4 address:port: %q", *addr))
	}
	var req []byte
	switch *proto {
	case "native":
		var b bytes.Buffer
		if err := wire.WriteRequest(&b, &wire.Request{Op: wire.OpGet, Path: *path}); err != nil {
			fatal(err)
		}
		req = b.Bytes()
	case "http":
		req = httphead.Request(*addr, *path)
	default:
		fatal(fmt.Errorf("unknown -proto %q", *proto))
	}

	start := time.Now()
	end := start.Add(*maxTime)
	if *dur > 0 {
		end = start.Add(*dur)
	}
	var mu sync.Mutex
	var total, responses int64
	var firstErr error
	var wg sync.WaitGroup
	for range *streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, r, err := stream(ap, req, *proto == "native", *dur > 0, end)
			mu.Lock()
			total += n
			responses += r
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if *dur > 0 {
		secs = min(secs, dur.Seconds())
	}
	if firstErr != nil {
		fatal(firstErr)
	}
	r := Result{Proto: *proto, Streams: *streams, Bytes: total, Responses: responses, Seconds: secs, BytesPerSec: float64(total) / secs}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(r)
	} else {
		fmt.Printf("%d streams: %d bytes in %d responses, %.3fs, %.3f GB/s\n", r.Streams, r.Bytes, r.Responses, r.Seconds, r.BytesPerSec/1e9)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "zsink:", err)
	os.Exit(1)
}

// stream connects and fetches: once, or until end when repeat is set. It
// returns the body bytes received before end.
func stream(ap netip.AddrPort, req []byte, native, repeat bool, end time.Time) (int64, int64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, 0, err
	}
	defer unix.Close(fd)
	// A receive timeout bounds a stalled server.
	tv := unix.Timeval{Sec: 10}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}); err != nil {
		return 0, 0, fmt.Errorf("connect: %w", err)
	}
	buf := make([]byte, bufSize)
	var total, responses int64
	have := 0 // bytes at the start of buf that belong to the next response
	for {
		if _, err := unix.Write(fd, req); err != nil {
			return total, responses, fmt.Errorf("write request: %w", err)
		}
		// Read until the head is complete.
		var headLen int
		var body int64
		for {
			var ok bool
			var err error
			headLen, body, ok, err = parseHead(buf[:have], native)
			if err != nil {
				return total, responses, err
			}
			if ok {
				break
			}
			n, err := read(fd, buf[have:])
			if err != nil {
				return total, responses, err
			}
			have += n
		}
		got := int64(have - headLen)
		if got > body {
			return total, responses, errors.New("server sent more than the body before the next request")
		}
		total += got
		have = 0
		for got < body {
			n, err := read(fd, buf[:min(int64(len(buf)), body-got)])
			if err != nil {
				return total, responses, err
			}
			got += int64(n)
			total += int64(n)
			if now := time.Now(); !now.Before(end) {
				if !repeat {
					return total, responses, fmt.Errorf("time limit reached after %d of %d body bytes", got, body)
				}
				return total, responses, nil
			}
		}
		responses++
		if !repeat || !time.Now().Before(end) {
			return total, responses, nil
		}
	}
}

func read(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			return 0, errors.New("server closed the connection mid-response")
		}
		return n, nil
	}
}

// parseHead reports whether b holds a complete response head and, if so,
// its length and the body length that follows.
func parseHead(b []byte, native bool) (headLen int, body int64, ok bool, err error) {
	if native {
		if len(b) < wire.ResponseHeaderLen {
			return 0, 0, false, nil
		}
		msgLen := int(b[6])<<8 | int(b[7])
		if len(b) < wire.ResponseHeaderLen+msgLen {
			return 0, 0, false, nil
		}
		r, err := wire.ReadResponse(bytes.NewReader(b))
		if err != nil {
			return 0, 0, false, err
		}
		if r.Status != wire.StatusOK {
			return 0, 0, false, fmt.Errorf("server: %v: %s", r.Status, r.Message)
		}
		return wire.ResponseHeaderLen + msgLen, r.BodyLen, true, nil
	}
	i := bytes.Index(b, httphead.End)
	if i < 0 {
		if len(b) >= bufSize {
			return 0, 0, false, errors.New("response head too large")
		}
		return 0, 0, false, nil
	}
	h, err := httphead.Parse(b[:i+len(httphead.End)])
	if err != nil {
		return 0, 0, false, err
	}
	if h.Status != 200 {
		return 0, 0, false, fmt.Errorf("server: HTTP %d", h.Status)
	}
	return i + len(httphead.End), h.ContentLength, true, nil
}
