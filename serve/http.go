package serve

import (
	"bytes"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/httpx"
	"github.com/zfs-serve/zfs-serve/internal/accesslog"
	"github.com/zfs-serve/zfs-serve/internal/rawcall"
	"github.com/zfs-serve/zfs-serve/wire"
)

// HTTP/1.1 on a worker's connections (docs/HTTP.md). A connection that
// does not start with the native magic comes here after sniff: heads are
// read into a buffer of httpx.MaxHead bytes and parsed by httpx; bodies go
// out through the same senders as native ones, so a file is sent with the
// configured zero-copy mode after its head (MSG_MORE joins the two).

// httpConn is a connection's HTTP state, made when it turns out to speak HTTP.
type httpConn struct {
	buf   [httpx.MaxHead]byte
	req   httpx.Request
	head  []byte    // response head being built
	close bool      // the connection closes after this response
	start time.Time // when the request's head was read
	// what the access log says of the response
	status int
	bytes  int64
}

// now is the request's start, the time its response reports (Date, the
// transfer's start): one clock read per request instead of one each.
func (h *httpConn) now() time.Time {
	if h.start.IsZero() {
		return time.Now()
	}
	return h.start
}

// startHTTP makes c an HTTP connection: the bytes sniff read move into
// an HTTP buffer.
func (c *conn) startHTTP() {
	b := c.buf[c.rpos:c.rend]
	c.getHTTP()
	c.rend = copy(c.buf, b)
}

// serveHTTP serves HTTP requests until the client closes, a timeout, an
// error, a refused head, a drain, or a response that ends the connection
// (false), or until it waits idle to be parked (true). first: the
// connection's first request comes next.
func (c *conn) serveHTTP(first bool) (park bool) {
	s, h := c.s, c.http
	for n := 0; ; n, first = n+1, false {
		if err := c.readHead(first); err != nil {
			if err == errPark {
				return true
			}
			c.res.Outcome = c.httpReadFailed(err)
			return false
		}
		if n > 0 {
			c.unlead() // one client's second request in the leader's turn (leader.go)
		}
		c.res.Requests++
		s.httpRequests.Add(1)
		h.start = time.Now()
		h.close = !h.req.KeepAlive || s.draining.Load()
		err := c.handleHTTP()
		s.httpResp.add(h.status)
		c.disarmWrite()
		c.accessLog()
		if err != nil {
			c.res.Outcome = c.sendFailed(&wire.Request{Op: wire.OpGet, Path: h.req.Path}, err)
			return false
		}
		if h.close {
			c.res.Outcome = OutcomeClosed
			if s.draining.Load() {
				c.res.Outcome = OutcomeDrained
			}
			if h.req.KeepAlive || (!c.quickClose() && c.pending()) {
				// The server ends a connection the client would keep,
				// or the client has sent more: linger.
				c.lingerClose()
			}
			return false
		}
	}
}

// lingerTimeout bounds how long lingerClose waits for the client to close.
const lingerTimeout = 5 * time.Second

// lingerClose ends a connection the server closes after a response: it
// sends FIN after the response (shutdown), then reads and discards what
// the client still sends until the client closes too, or lingerTimeout.
// Closing the socket at once would reset the connection if a request
// the client pipelined is unread, or arrives later; the kernel then drops
// the part of the response still queued in the socket, and the client
// gets a truncated response (nginx's lingering_close, Apache's
// lingering close). A client that asked for the close ("Connection:
// close", or HTTP/1.0 without keep-alive) and has sent nothing more is
// closed at once, as nginx does: RFC 9112 9.6 forbids it further requests
// on the connection, and it saves a new-connection client a shutdown, two
// reads and a wait in the poller.
func (c *conn) lingerClose() {
	if rawcall.Shutdown(c.fd, unix.SHUT_WR) != nil {
		return
	}
	c.setReadDeadline(time.Now().Add(lingerTimeout))
	for {
		c.rpos, c.rend = 0, 0
		if c.fill() != nil {
			return
		}
	}
}

// quickClose reports that a connection whose client asked for the close
// can be closed without looking for more bytes from it (a peek, one
// system call per connection): none are buffered, the read that brought
// the request emptied the socket (a short read), and the response went
// out without waiting (the socket never joined the poller, attach.go), so
// more could only have arrived in the microseconds since, against RFC
// 9112 9.6. nginx does not look either unless its event loop saw the
// socket readable. A response that waited (a large body, a slow client)
// leaves time for a pipelined request to arrive: that one still peeks.
// So does one whose socket the server's epoll set (wait.go) has seen
// readable since the read (ready): bytes came after it, as nginx's
// lingering close looks when its event loop saw the socket readable.
func (c *conn) quickClose() bool {
	return c.rc == nil && c.drained && c.rend == c.rpos && !c.ready.Load()
}

// readHead reads and parses the next request head. It waits like the
// native readRequest: a kept-alive connection is idle until the first
// byte (a drain may close it then), and header_timeout bounds the whole
// head from there (or, for the first request, from the connection's start).
func (c *conn) readHead(first bool) error {
	s, h := c.s, c.http
	if c.rpos == c.rend {
		c.rpos, c.rend = 0, 0
	}
	armed := first && c.headArmed
	if c.rend == c.rpos {
		var err error
		if armed, err = c.readIdle(first); err != nil {
			return err
		}
	}
	for {
		n, err := httpx.Parse(c.buf[c.rpos:c.rend], &h.req)
		if err == nil {
			c.rpos += n
			return nil
		}
		if !errors.Is(err, httpx.ErrIncomplete) {
			return err
		}
		if !armed {
			c.setReadDeadline(time.Now().Add(s.opts.HeaderTimeout))
			armed = true
		}
		if err := c.fill(); err != nil {
			return truncated(err)
		}
	}
}

// httpReadFailed ends a connection whose next head could not be read,
// answering a refused head with its status.
func (c *conn) httpReadFailed(err error) Outcome {
	var he *httpx.Error
	if !errors.As(err, &he) {
		return c.readFailed(err)
	}
	h := c.http
	c.s.log.Info("bad HTTP request", "client", c.client, "status", he.Status, "err", he.Msg)
	h.close = true
	h.req.Method = ""
	if isHead(c.buf[c.rpos:c.rend]) {
		h.req.Method = "HEAD" // the refusal has no body either
	}
	h.start = time.Now()
	h.status, h.bytes = 0, 0 // the access log's, for this response alone (handleHTTP's reset)
	err = c.httpError(he.Status, he.Msg)
	c.s.httpResp.add(h.status)
	c.disarmWrite()
	c.accessLog()
	if err == nil {
		c.lingerClose()
	}
	return OutcomeBadRequest
}

// isHead reports whether the request head at the start of b, refused by
// httpx.Parse, is a HEAD request: its request line, after the empty lines
// Parse skips, starts with "HEAD ". A response to HEAD never has content
// (RFC 9110 section 9.3.2), a refusal included: a client reads none, and
// would take the bytes for the next response.
func isHead(b []byte) bool {
	for range 2 {
		if !bytes.HasPrefix(b, []byte("\r\n")) {
			break
		}
		b = b[2:]
	}
	return bytes.HasPrefix(b, []byte("HEAD "))
}

// accessLog writes the response's access-log line, when configured.
func (c *conn) accessLog() {
	a, h := c.s.opts.Access, c.http
	if !a.Enabled() {
		return
	}
	now := time.Now()
	a.Log(&accesslog.Entry{Time: now, Proto: ProtoHTTP, Client: c.client, Method: h.req.Method, Path: h.req.Target,
		Status: h.status, Bytes: h.bytes, Duration: now.Sub(h.start).Round(time.Microsecond)})
}

// httpDate is the Date header's value for the current second, formatted
// once a second per worker, not per response. The second and its value
// are stored together: a response's Date is its request's start
// (httpConn.now), so goroutines ask for different seconds at once, and a
// second stored apart from its value could be paired with another's.
type httpDate struct {
	cur atomic.Pointer[dateValue]
}

type dateValue struct {
	sec int64
	val []byte
}

func (d *httpDate) get(now time.Time) []byte {
	sec := now.Unix()
	if v := d.cur.Load(); v != nil && v.sec == sec {
		return v.val
	}
	v := &dateValue{sec: sec, val: httpx.AppendHTTPDate(nil, now)}
	d.cur.Store(v)
	return v.val
}

// statusText is the reason phrase for the statuses this server sends.
func statusText(code int) string {
	switch code {
	case 200:
		return "OK"
	case 206:
		return "Partial Content"
	case 301:
		return "Moved Permanently"
	case 304:
		return "Not Modified"
	case 400:
		return "Bad Request"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 408:
		return "Request Timeout"
	case 411:
		return "Length Required"
	case 412:
		return "Precondition Failed"
	case 413:
		return "Content Too Large"
	case 414:
		return "URI Too Long"
	case 416:
		return "Range Not Satisfiable"
	case 431:
		return "Request Header Fields Too Large"
	case 500:
		return "Internal Server Error"
	case 501:
		return "Not Implemented"
	case 503:
		return "Service Unavailable"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Status " + strconv.Itoa(code)
}
