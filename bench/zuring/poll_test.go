package main

import (
	"bufio"
	"bytes"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
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
			c := dialSmallReceive(t, addr)
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

// TestPollAcceptAfterEMFILE: connections that wait in the listen queue
// while the server is out of descriptors are accepted once descriptors
// are free again, without another connection arriving to wake the
// listener (epoll reports a listener with a queue every time; a multishot
// poll reported it once).
func TestPollAcceptAfterEMFILE(t *testing.T) {
	files, _ := testFiles(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			addr := startServer(t, mode, files)
			ap := netip.MustParseAddrPort(addr)
			sa := &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
			// B: sockets made now, connected once no descriptor is left.
			var b []int
			for range 3 {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { unix.Close(fd) })
				unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})
				b = append(b, fd)
			}
			// A: connections the server has accepted, holding its
			// descriptors, closed once B waits in the queue.
			var a []net.Conn
			for range 3 {
				c := dial(t, addr)
				io.WriteString(c, "HEAD /a HTTP/1.1\r\n\r\n")
				if status, _, _ := readResponse(t, bufio.NewReader(c), "HEAD"); status != 200 {
					t.Fatal(status)
				}
				a = append(a, c)
			}
			// No descriptor left for anyone in this process: the
			// limit is the lowest free number.
			probe, err := unix.Dup(b[0])
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(probe)
			var lim unix.Rlimit
			unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
			low := lim
			low.Cur = uint64(probe)
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
				t.Fatal(err)
			}
			restored := false
			restore := func() {
				if !restored {
					restored = true
					unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
				}
			}
			defer restore()
			for _, fd := range b {
				if err := unix.Connect(fd, sa); err != nil {
					t.Fatal(err)
				}
				if _, err := unix.Write(fd, []byte("HEAD /a HTTP/1.1\r\n\r\n")); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(100 * time.Millisecond) // the server tries to accept them: EMFILE
			for _, c := range a {
				c.Close() // the server reads the end and closes its descriptors
			}
			time.Sleep(100 * time.Millisecond)
			restore() // the limit back: the server may take descriptors above it too
			for i, fd := range b {
				buf := make([]byte, 512)
				n, err := unix.Read(fd, buf)
				if err != nil || !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200 OK")) {
					t.Fatalf("queued connection %d: read %q, %v; want a 200", i, buf[:max(n, 0)], err)
				}
			}
		})
	}
}

// TestPollRawWaitGC: with -rawwait, a garbage collection that starts while
// the loop waits (the runtime forces one every two minutes on an idle
// process) must not wait for the next connection: the first process's
// signal handling, and so the stopping of its children, waits with it.
// epoll_wait returns EINTR to the loop when the runtime's preemption
// signal arrives, and the loop's next call is a preemption point; the
// ring's wait retried EINTR inside block, in raw calls only.
func TestPollRawWaitGC(t *testing.T) {
	files, _ := testFiles(t)
	for _, mode := range modes {
		if mode != "epoll" && mode != "uring-poll" {
			continue // their waits are not raw
		}
		t.Run(mode, func(t *testing.T) {
			addr := startServerWait(t, mode, true, files)
			dial(t, addr).Close()              // the loop has run
			time.Sleep(100 * time.Millisecond) // and waits
			// Nothing in this process runs while a collection stops
			// the world: a shell connects after 2 s, from outside.
			ap := netip.MustParseAddrPort(addr)
			release := exec.Command("bash", "-c", fmt.Sprintf("sleep 2; exec 3<>/dev/tcp/%s/%d", ap.Addr(), ap.Port()))
			if err := release.Start(); err != nil {
				t.Skip(err)
			}
			defer func() { // its connection is not needed once the collection is over
				release.Process.Kill()
				release.Wait()
			}()
			start := time.Now()
			runtime.GC()
			if d := time.Since(start); d > time.Second {
				t.Fatalf("a garbage collection took %v: it waited for the loop's raw wait to end", d.Round(time.Millisecond))
			}
		})
	}
}
