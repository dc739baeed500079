package serve

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/zfs-serve/zfs-serve/proxyproto"
	"github.com/zfs-serve/zfs-serve/wire"
)

// The PROXY protocol on a worker's connections (docs/PROXY.md). On a
// listener written proxy:ADDR every connection starts with a header that
// HAProxy (send-proxy, send-proxy-v2) writes; the worker reads it before
// anything else, within header_timeout, and from then on the client is
// the address the header names. The header is read into the connection's
// own 256-byte request buffer, so a proxied connection costs no more
// memory than another: v1 lines (at most 107 bytes) and the v2 headers
// HAProxy usually sends (28 or 52 bytes, a few TLVs) fit with room to
// spare, and bytes read past the header are the request's first ones.
// Only a v2 header longer than the buffer (up to proxyproto.MaxHeader) is
// completed in a buffer of its own, read to exactly the header's end.

// ConnInfo says how to serve one connection.
type ConnInfo struct {
	// Client is the peer's address as accepted.
	Client string
	// ID is the supervisor's id of the connection, passed to the
	// admission hook.
	ID uint64
	// Proxy says the connection starts with a PROXY header, which is
	// required, and names the client.
	Proxy bool
	// Admit asks the admission hook (SetAdmit) about the client a PROXY
	// header names before serving it.
	Admit bool
	// Nonblocking says the caller made the socket non-blocking itself
	// (accept4 with SOCK_NONBLOCK), so Run need not check it.
	Nonblocking bool
}

// SetAdmit sets the hook asked about each proxied connection served with
// ConnInfo.Admit, with the client address its header gave: a non-empty
// answer refuses the connection busy with that message. A LOCAL header
// (the proxy's own health check) is not asked about. Call it before
// serving.
func (s *Server) SetAdmit(f func(id uint64, client string) (refusal string)) { s.admit = f }

// OutcomeBusy is a proxied connection the admission hook refused: it was
// answered busy in its protocol.
const OutcomeBusy Outcome = "busy"

// OutcomeBadProxy is a connection on a PROXY listener whose header was
// missing, malformed, too long or late: it was closed without an answer.
const OutcomeBadProxy Outcome = "bad-proxy-header"

// readProxy reads and applies the PROXY header that starts the
// connection. It arms header_timeout, which from here bounds the header
// and the first request together, as it bounds the first request alone
// on other listeners. It reports false when the connection must close
// (c.res.Outcome then says why).
func (c *conn) readProxy() bool {
	s := c.s
	c.setReadDeadline(time.Now().Add(s.opts.HeaderTimeout))
	c.headArmed = true
	for {
		if err := c.fill(); err != nil {
			c.proxyReadFailed(err)
			return false
		}
		h, n, err := proxyproto.Parse(c.buf[:c.rend])
		if errors.Is(err, proxyproto.ErrIncomplete) && c.rend == len(c.buf) {
			// Only a v2 header fills the buffer and is not done (a v1
			// line is shorter): Parse has checked its length against
			// MaxHeader.
			var rerr error
			if h, err, rerr = c.readLongProxy(); rerr != nil {
				c.proxyReadFailed(rerr)
				return false
			}
			n = 0 // the header was read into a buffer of its own; c.buf is empty
		}
		switch {
		case err == nil:
			c.rpos = n
			return c.useProxy(&h)
		case errors.Is(err, proxyproto.ErrIncomplete):
			continue
		}
		c.badProxy(err.Error())
		return false
	}
}

// readLongProxy completes a v2 header longer than the request buffer,
// which holds its first bytes: in a buffer of its own, reading exactly to
// the header's end, so that nothing past it is consumed, and leaves the
// request buffer empty. rerr is a failed read.
func (c *conn) readLongProxy() (h proxyproto.Header, err, rerr error) {
	size := 16 + int(binary.BigEndian.Uint16(c.buf[14:16]))
	b := make([]byte, size)
	have := copy(b, c.buf[:c.rend])
	c.rpos = 0 // c.rend stays: bytes of the header were read
	c.attach()
	if _, rerr := io.ReadFull(c.f, b[have:]); rerr != nil {
		if rerr == io.ErrUnexpectedEOF {
			rerr = io.EOF
		}
		return h, nil, rerr
	}
	c.rend = 0
	h, used, err := proxyproto.Parse(b)
	if err == nil && used != size {
		err = errors.New("v2 header length mismatch") // cannot happen: Parse reads the same length field
	}
	return h, err, nil
}

// proxyReadFailed ends a connection whose header could not be read.
func (c *conn) proxyReadFailed(err error) {
	switch {
	case err == io.EOF && c.rend == 0:
		// Closed before sending anything, like a TCP health check.
		c.res.Outcome = OutcomeClosed
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.badProxy("no complete PROXY header within header_timeout")
		c.res.Outcome = OutcomeIdle
	case err == io.EOF:
		c.badProxy("connection closed inside the PROXY header")
	default:
		c.res.Outcome = OutcomeClientGone
	}
}

// badProxy logs (at most once a second: whoever reaches the port can
// cause it) and closes a connection whose header is refused. It gets no
// answer: a peer without a valid header is not a proxy we speak to.
func (c *conn) badProxy(why string) {
	c.res.Outcome = OutcomeBadProxy
	c.s.proxyLog.Log(c.s.log, time.Now(), slog.LevelInfo, "PROXY header refused; connection closed", "client", c.client, "err", why)
}

// useProxy makes the header's source the client, and asks the admission
// hook about it when told to.
func (c *conn) useProxy(h *proxyproto.Header) bool {
	if h.Local {
		return true // the proxy itself (a health check): the socket's peer is the client
	}
	src := netip.AddrPortFrom(h.Source.Addr().Unmap(), h.Source.Port())
	c.client = src.String()
	if !c.admitAsk || c.s.admit == nil {
		return true
	}
	if msg := c.s.admit(c.id, c.client); msg != "" {
		c.refuseBusy(msg)
		return false
	}
	return true
}

// refuseBusy answers the first request busy with msg in its protocol
// (native, or HTTP 503 with Retry-After), then closes the connection.
func (c *conn) refuseBusy(msg string) {
	c.s.log.Debug("proxied connection refused", "client", c.client, "msg", msg)
	native, err := c.sniff()
	if err != nil {
		c.res.Outcome = c.readFailed(err)
		return
	}
	c.res.Outcome = OutcomeBusy
	switch {
	case native:
		c.writeHeader(&wire.Response{Status: wire.StatusBusy, Message: msg}, false)
	case c.s.opts.HTTP:
		body := msg + "\n"
		b := append(c.out[:0], "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n\r\n"...)
		if !bytes.HasPrefix(c.buf[c.rpos:c.rend], []byte("HEAD ")) { // a HEAD response has no body
			b = append(b, body...)
		}
		c.out = b
		c.s.httpResp.add(503)
		c.write(b, false)
	default:
		return
	}
	c.lingerClose()
}
