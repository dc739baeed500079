package main

import (
	"bufio"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPollSlowReader: a response that needs several POLLOUT wake-ups. The
// client reads slowly, so after each POLLOUT the server's send goes part
// of the way and meets EAGAIN again; each time it must wait for POLLOUT
// anew.
func TestPollSlowReader(t *testing.T) {
	files, want := testFiles(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			addr := startServer(t, mode, files)
			d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
				rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
				return nil
			}}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			const n = 190
			var reqs strings.Builder
			for range n {
				reqs.WriteString("GET /sub/b HTTP/1.1\r\n\r\n")
			}
			if _, err := io.WriteString(c, reqs.String()); err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			r := bufio.NewReaderSize(slowReader{c}, 1024)
			for i := range n {
				status, body, _ := readResponse(t, r, "GET")
				if status != 200 || len(body) != len(want["/sub/b"]) {
					t.Fatalf("response %d: %d, %d bytes", i, status, len(body))
				}
			}
		})
	}
}

// slowReader reads at most 1 KiB at a time, pausing before each read.
type slowReader struct{ c net.Conn }

func (s slowReader) Read(b []byte) (int, error) {
	return s.c.Read(b[:min(len(b), 1024)])
}

// TestPollHalfClose: a client sends its requests and shuts its side down
// (FIN right behind the data); the server answers them and, having read
// the end, closes. A multishot poll reports the wake-ups, so a FIN that
// came with the data's wake-up is seen only if the receive that found the
// data is not the last one tried.
func TestPollHalfClose(t *testing.T) {
	files, want := testFiles(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			addr := startServer(t, mode, files)
			for i := range 50 {
				c := dial(t, addr)
				if _, err := io.WriteString(c, "GET /a HTTP/1.1\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				c.(*net.TCPConn).CloseWrite()
				c.SetDeadline(time.Now().Add(2 * time.Second))
				r := bufio.NewReader(c)
				if status, body, _ := readResponse(t, r, "GET"); status != 200 || len(body) != len(want["/a"]) {
					t.Fatalf("connection %d: %d, %d bytes", i, status, len(body))
				}
				if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Fatalf("connection %d: after the response to a half-closed connection: read %d, %v; want EOF", i, n, err)
				}
				c.Close()
			}
		})
	}
}
