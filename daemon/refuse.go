package daemon

import (
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/wire"
)

// A connection the supervisor cannot hand to a worker (no worker ready,
// max_connections, draining) is answered by the supervisor in the
// client's protocol: the native refusal for a native client, "503 Service
// Unavailable" with Retry-After and Connection: close for HTTP. Deferring
// the refusal to a worker would need a worker, and the case that matters
// most (none is ready) has none. So the supervisor looks at the first two
// bytes with MSG_PEEK: it never consumes or interprets a request, only
// tells "ZQ" from anything else. A client that has sent nothing yet is
// given up to refuseWait to send its first bytes, on a bounded number of
// goroutines; past the bound, or with nothing sent in time, the
// connection is closed without an answer (both zfetch and a retrying HTTP
// client treat that as a failed attempt).

const (
	refuseWait    = time.Second
	maxRefuseWait = 256 // connections waiting for first bytes to be refused
)

// refuseWaiting counts the refusals waiting for their client to speak.
var refuseWaiting atomic.Int32

// refuse answers fd's client with st and msg in its protocol and closes
// fd, now or once it has sent its first bytes. http says whether HTTP is
// served at all (config http): when it is not, a non-native client is
// just closed.
func refuse(fd int, st wire.Status, msg string, http bool) {
	if peekProto(fd) != protoUnknown {
		reply(fd, st, msg, http)
		unix.Close(fd)
		return
	}
	if refuseWaiting.Add(1) > maxRefuseWait {
		refuseWaiting.Add(-1)
		unix.Close(fd)
		return
	}
	go func() {
		defer refuseWaiting.Add(-1)
		// Wait in the runtime's poller: a goroutine waiting there holds
		// no thread, whereas one blocked in poll(2) would, and the
		// runtime never lets a thread go once it has one, so a flood of
		// silent connections would leave the supervisor with
		// maxRefuseWait threads for good. f owns fd from here.
		f := os.NewFile(uintptr(fd), "refused connection") // non-blocking: in the poller
		defer f.Close()
		rc, err := f.SyscallConn()
		if err != nil {
			return
		}
		f.SetReadDeadline(time.Now().Add(refuseWait))
		rc.Read(func(fd uintptr) bool {
			var b [1]byte
			_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			return err != unix.EAGAIN // bytes, the end, or an error
		})
		rc.Control(func(fd uintptr) { reply(int(fd), st, msg, http) })
	}()
}

// reply answers fd's client with st and msg in the protocol it speaks,
// and nothing if it has not spoken yet (or speaks HTTP and http is
// false). It leaves fd open.
func reply(fd int, st wire.Status, msg string, http bool) {
	switch peekProto(fd) {
	case protoNative:
		send(fd, wire.AppendResponse(nil, &wire.Response{Status: st, Message: msg}))
	case protoHTTP:
		if http {
			send(fd, http503(msg, peekHead(fd)))
		} else {
			send(fd, nil)
		}
	}
}

type proto int

const (
	protoUnknown proto = iota // nothing sent yet (or the peer is gone)
	protoNative
	protoHTTP
)

// peekProto tells a native client (its requests start with the magic
// "ZQ") from an HTTP one by peeking at what it sent, without consuming it.
func peekProto(fd int) proto {
	var b [2]byte
	for {
		n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		switch {
		case err != nil || n <= 0:
			return protoUnknown
		case b[0] != wire.RequestMagic[0] || (n == 2 && b[1] != wire.RequestMagic[1]):
			return protoHTTP
		case n == 2:
			return protoNative
		}
		// One byte, "Z": no HTTP method starts so, and native is likelier.
		return protoNative
	}
}

// peekHead reports whether an HTTP client's request is a HEAD, by
// peeking at its first bytes like peekProto.
func peekHead(fd int) bool {
	var b [5]byte
	for {
		n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		return err == nil && string(b[:max(n, 0)]) == "HEAD "
	}
}

// http503 is the HTTP refusal; head says the request is a HEAD, whose
// response has no body (RFC 9110 section 9.3.2).
func http503(msg string, head bool) []byte {
	body := msg + "\n"
	b := make([]byte, 0, 160+len(body))
	b = append(b, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	if head {
		return b
	}
	return append(b, body...)
}

// send sends b without blocking and ends the connection's sending side.
// The request it refused is discarded first (MSG_TRUNC, not copied):
// closing a socket with unread bytes would reset the connection, and a
// reset can reach the client before it has read the answer.
func send(fd int, b []byte) {
	if len(b) > 0 {
		unix.SendmsgN(fd, b, nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
	}
	unix.Shutdown(fd, unix.SHUT_WR)
	for range 4 {
		if n, _, err := unix.Recvfrom(fd, nil, unix.MSG_TRUNC|unix.MSG_DONTWAIT); err != nil || n <= 0 {
			break
		}
	}
}
