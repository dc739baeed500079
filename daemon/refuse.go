package daemon

import (
	"errors"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/proxyproto"
	"github.com/zfs-serve/zfs-serve/wire"
)

// A connection the supervisor cannot hand to a worker (no worker ready,
// max_connections, draining) is answered by the supervisor in the
// client's protocol: the native refusal for a native client, "503 Service
// Unavailable" with Retry-After and Connection: close for HTTP. Deferring
// the refusal to a worker would need a worker, and the case that matters
// most (none is ready) has none. So the supervisor looks at the first
// bytes with MSG_PEEK: it never consumes or interprets a request, only
// tells "ZQ" from anything else, and a HEAD from other HTTP requests (its
// answer must have no body). A client that has sent nothing yet is given
// up to refuseWait to send its first bytes, on a bounded number of
// goroutines; so is one whose bytes so far are a beginning of "HEAD "
// (after the up to two empty lines httpx.Parse skips), as when the
// request line arrives in pieces: "HE" may or may not become a HEAD, and
// only a HEAD's answer has no body (when HTTP is served at all: else any
// HTTP client is closed at once). Past the bound, or without enough sent
// in time, the connection is closed without an answer (both zfetch and a
// retrying HTTP client treat that as a failed attempt).
//
// On a proxy: listener the connection starts with a PROXY header, which
// the supervisor skips without using it: it peeks at up to
// proxyproto.MaxHeader+len(headLines) bytes, decodes the header, and
// looks at the bytes after it. A balancer sends the header at once but the
// client's request only when the client sends it, so the wait goes on
// until bytes follow the header (enough of them to tell a HEAD). A
// connection whose header is refused is closed without an answer, as a
// worker would.

const (
	refuseWait    = time.Second
	maxRefuseWait = 256 // connections waiting for first bytes to be refused
)

// refuseWaiting counts the refusals waiting for their client to speak.
var refuseWaiting atomic.Int32

// refuse answers fd's client with st and msg in its protocol and closes
// fd, now or once it has sent its first bytes. http says whether HTTP is
// served at all (config http): when it is not, a non-native client is
// just closed. proxy says fd came from a proxy: listener.
func refuse(fd int, st wire.Status, msg string, http, proxy bool) {
	if p, head := peekProto(fd, proxy, http); p != protoUnknown {
		answer(fd, p, head, st, msg, http)
		unix.Close(fd)
		return
	}
	if refuseWaiting.Add(1) > maxRefuseWait {
		refuseWaiting.Add(-1)
		send(fd, nil) // what was sent (a PROXY header, "HE") is discarded: no reset
		unix.Close(fd)
		return
	}
	go func() {
		defer refuseWaiting.Add(-1)
		// Wait in the runtime's poller: a goroutine waiting there holds
		// no thread, whereas one blocked in poll(2) would, and the
		// runtime never lets a thread go once it has one, so a flood of
		// silent connections would leave the supervisor with
		// maxRefuseWait threads for good. f owns fd from here (accepted
		// non-blocking, so it goes into the poller).
		f := os.NewFile(uintptr(fd), "refused connection")
		defer f.Close()
		rc, err := f.SyscallConn()
		if err != nil {
			return
		}
		f.SetReadDeadline(time.Now().Add(refuseWait))
		rc.Read(func(fd uintptr) bool { return spoke(int(fd), proxy, http) })
		// What was sent and is not enough (a PROXY header alone) is
		// discarded by answer: no reset.
		rc.Control(func(fd uintptr) {
			p, head := peekProto(int(fd), proxy, http)
			answer(int(fd), p, head, st, msg, http)
		})
	}()
}

// spoke reports whether the wait for fd's client is over: it sent enough
// to tell its protocol, or closed its side. It never blocks; false makes
// the poller wait for more bytes (its readiness is edge-triggered, so
// bytes already there do not wake it again).
func spoke(fd int, proxy, http bool) bool {
	var b [1]byte
	n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return false
	case err != nil || n == 0:
		return true // an error, or the peer is gone
	}
	if p, _ := peekProto(fd, proxy, http); p != protoUnknown {
		return true
	}
	// Only (part of) a PROXY header, or a beginning of "HEAD ": wait for
	// more bytes, unless the peer has closed its side (a balancer's health
	// check).
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
	n, _ = unix.Poll(fds, 0)
	return n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP) != 0
}

type proto int

const (
	protoUnknown proto = iota // nothing sent yet (or the peer is gone), only (part of) a PROXY header, or a beginning of a HEAD
	protoNative
	protoHTTP
	protoBad // a proxy: listener's connection without a valid PROXY header
)

// peekProto tells a native client (its requests start with the magic
// "ZQ") from an HTTP one by peeking at what it sent, without consuming it,
// after the PROXY header on a proxy: listener. head reports an HTTP HEAD
// request, whose refusal has no body (RFC 9110 section 9.3.2); as long as
// what was sent may still become one, the protocol is unknown, unless
// http (HTTP served at all) is false: then an HTTP client is only closed,
// and whether it sends a HEAD does not matter.
func peekProto(fd int, proxy, http bool) (p proto, head bool) {
	var buf [proxyproto.MaxHeader + len(headLines)]byte
	b := buf[:len(headLines)]
	if proxy {
		b = buf[:]
	}
	var n int
	var err error
	for {
		n, _, err = unix.Recvfrom(fd, b, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil || n <= 0 {
		return protoUnknown, false
	}
	b = b[:n]
	if proxy {
		_, hn, err := proxyproto.Parse(b)
		switch {
		case errors.Is(err, proxyproto.ErrIncomplete):
			return protoUnknown, false
		case err != nil:
			return protoBad, false
		}
		b = b[hn:]
	}
	switch {
	case len(b) == 0:
		return protoUnknown, false
	case b[0] != wire.RequestMagic[0] || (len(b) >= 2 && b[1] != wire.RequestMagic[1]):
		if !http {
			return protoHTTP, false
		}
		head, known := isHead(b)
		if !known {
			return protoUnknown, false
		}
		return protoHTTP, head
	}
	// "ZQ", or one byte "Z": no HTTP method starts so, and native is likelier.
	return protoNative, false
}

// headLines is the longest start of a HEAD request that httpx.Parse takes:
// the method after two empty lines (RFC 9112 section 2.2).
const headLines = "\r\n\r\nHEAD "

// isHead reports whether b, the first bytes of an HTTP request, starts a
// HEAD, and whether that is known: not when b is a beginning of one (a
// request line sent in pieces) that may go on either way, as "HE" or
// "\r\n" may.
func isHead(b []byte) (head, known bool) {
	for _, start := range [...]string{headLines[4:], headLines[2:], headLines} {
		if len(b) >= len(start) && string(b[:len(start)]) == start {
			return true, true
		}
		if len(b) < len(start) && string(b) == start[:len(b)] {
			return false, false
		}
	}
	return false, true
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

// answer sends fd's client the refusal in protocol p (nothing for an
// unknown or bad one, or HTTP when http is off). It leaves fd open.
func answer(fd int, p proto, head bool, st wire.Status, msg string, http bool) {
	switch {
	case p == protoNative:
		send(fd, wire.AppendResponse(nil, &wire.Response{Status: st, Message: msg}))
	case p == protoHTTP && http:
		send(fd, http503(msg, head))
	default:
		send(fd, nil)
	}
}

// send sends b without blocking and ends the connection's sending side.
// The request it refused is discarded first (MSG_TRUNC, not copied):
// closing a socket with unread bytes would reset the connection, and a
// reset can reach the client before it has read the answer. It leaves fd
// open.
func send(fd int, b []byte) {
	if len(b) > 0 {
		unix.SendmsgN(fd, b, nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
	}
	unix.Shutdown(fd, unix.SHUT_WR)
	for range 4 {
		if n, _, err := unix.Recvfrom(fd, discard[:], unix.MSG_TRUNC|unix.MSG_DONTWAIT); err != nil || n <= 0 {
			break
		}
	}
}

// discard is the length send asks the kernel to discard at a time. TCP
// discards with MSG_TRUNC up to the length passed, without copying into
// the buffer (so one shared by every refusal is never written); with no
// buffer, as Recvfrom(fd, nil, ...) passes, the length is 0 and nothing
// is discarded.
var discard [64 << 10]byte
