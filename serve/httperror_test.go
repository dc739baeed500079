package serve

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// errorBytesLogged returns the bytes the access log's line for the
// response of status says were sent.
func errorBytesLogged(t *testing.T, ts *testServer, status int) int {
	t.Helper()
	m := regexp.MustCompile(`msg=access .* status=` + strconv.Itoa(status) + ` bytes=(\d+)`).FindStringSubmatch(ts.logs.String())
	if m == nil {
		t.Fatalf("no access log line for %d in %q", status, ts.logs.String())
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestHTTPErrorToSlowClient: an error's head and text, sent in one
// sendmsg, reach a client that reads slowly whole, the text after the
// rest of the head, and the access log counts the text's bytes; for a
// client that resets the connection midway the access log counts the
// bytes of the text that were sent, neither all of them nor none (here
// about half: the sockets hold 4 KiB of the 8 KiB text).
func TestHTTPErrorToSlowClient(t *testing.T) {
	long := "/" + strings.Repeat("x", 8000) // a text longer than the sockets hold
	text := "404 Not Found: not found: " + long + ": a name in it is too long\n"
	for _, reset := range []bool{false, true} {
		t.Run("reset "+strconv.FormatBool(reset), func(t *testing.T) {
			ts := newHTTPServer(t, withAccessLog)
			ts.client.Close()
			<-ts.result
			// The smallest buffers on both sides: the response cannot
			// leave in one sendmsg.
			d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
				return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 1) })
			}}
			c, fd := loopbackDial(t, d)
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1); err != nil {
				t.Fatal(err)
			}
			ts.runOn(c, fd, ConnInfo{})
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, "GET "+long+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			if reset {
				// The head and some of the text are here: then a reset.
				if _, err := br.Peek(1); err != nil {
					t.Fatal(err)
				}
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
				if r := <-ts.result; r.Outcome != OutcomeClientGone {
					t.Fatalf("outcome %v, want client gone", r.Outcome)
				}
				if n := errorBytesLogged(t, ts, 404); n <= 0 || n >= len(text) {
					t.Fatalf("access log: %d bytes sent, want some of the text's %d", n, len(text))
				}
				return
			}
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 404 || string(body) != text {
				t.Fatalf("%v %s, %d bytes, equal %v", err, resp.Status, len(body), string(body) == text)
			}
			c.Close()
			<-ts.result
			if n := errorBytesLogged(t, ts, 404); n != len(text) {
				t.Fatalf("access log: %d bytes sent, want %d", n, len(text))
			}
		})
	}
}
