// Package fetch is the zfs-serve download client: it speaks the wire
// protocol and knows nothing of the daemon. zfetch is its command line.
package fetch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// DefaultPort is zfs-serve's port when a URL names none.
const DefaultPort = 7070

// Target is a parsed zfetch URL.
type Target struct {
	Addr string // host:port
	Path string // absolute, unescaped
}

func (t Target) String() string { return "zfs://" + t.Addr + t.Path }

// ParseURL accepts zfs://HOST[:PORT]/PATH and HOST[:PORT]/PATH, with
// percent-encoding in PATH.
func ParseURL(s string) (Target, error) {
	raw := s
	if rest, ok := strings.CutPrefix(s, "zfs://"); ok {
		s = rest
	} else if i := strings.Index(s, "://"); i >= 0 {
		return Target{}, fmt.Errorf("%q: unsupported scheme %q (want zfs://)", raw, s[:i])
	}
	hostport, p, _ := strings.Cut(s, "/")
	if hostport == "" {
		return Target{}, fmt.Errorf("%q: no host", raw)
	}
	p, err := url.PathUnescape("/" + p)
	if err != nil {
		return Target{}, fmt.Errorf("%q: bad percent-encoding: %v", raw, err)
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: the whole thing is the host (IPv6 in brackets allowed).
		host, port = strings.Trim(hostport, "[]"), strconv.Itoa(DefaultPort)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return Target{}, fmt.Errorf("%q: bad port %q", raw, port)
	}
	if len(p) > wire.MaxPath {
		return Target{}, fmt.Errorf("%q: path longer than %d bytes", raw, wire.MaxPath)
	}
	return Target{Addr: net.JoinHostPort(host, port), Path: p}, nil
}

// StatusError is a refusal from the server.
type StatusError struct {
	Status  wire.Status
	Message string
}

func (e *StatusError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return e.Status.String()
}

// Conn is one connection to a server; requests on it are sequential.
type Conn struct {
	c  net.Conn
	br *bufio.Reader
}

// Dial connects to addr.
func Dial(ctx context.Context, addr string) (*Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Conn{c: c, br: bufio.NewReaderSize(c, 64<<10)}, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// NetConn is the underlying connection (for receive modes that need its fd).
func (c *Conn) NetConn() net.Conn { return c.c }

func (c *Conn) roundTrip(q *wire.Request) (wire.Response, error) {
	if err := wire.WriteRequest(c.c, q); err != nil {
		return wire.Response{}, err
	}
	r, err := wire.ReadResponse(c.br)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return r, err
	}
	if r.Status != wire.StatusOK {
		return r, &StatusError{Status: r.Status, Message: r.Message}
	}
	return r, nil
}

// Stat describes path.
func (c *Conn) Stat(path string) (wire.Response, error) {
	return c.roundTrip(&wire.Request{Op: wire.OpStat, Path: path})
}

// List returns a directory's entries.
func (c *Conn) List(path string) ([]wire.Entry, error) {
	r, err := c.roundTrip(&wire.Request{Op: wire.OpList, Path: path})
	if err != nil {
		return nil, err
	}
	return wire.ReadList(c.br, r.BodyLen)
}

// Get asks for [off, off+length) of path (length 0 = to the end) and
// returns the response header and a reader for exactly BodyLen bytes. The
// body must be read completely before the next request.
func (c *Conn) Get(path string, off, length int64) (wire.Response, io.Reader, error) {
	r, err := c.roundTrip(&wire.Request{Op: wire.OpGet, Path: path, Offset: off, Length: length})
	if err != nil {
		return r, nil, err
	}
	return r, &body{c: c, n: r.BodyLen}, nil
}

// body reads a response body: first what the header read buffered, then
// straight from the socket (so large bodies skip the buffer).
type body struct {
	c *Conn
	n int64
}

func (b *body) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	var n int
	var err error
	if b.c.br.Buffered() > 0 {
		n, err = b.c.br.Read(p)
	} else {
		n, err = b.c.c.Read(p)
	}
	b.n -= int64(n)
	if err == io.EOF && b.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Buffered returns the body bytes already read into the connection's
// buffer, which a zero-copy receiver must write before using the socket.
func (b *body) Buffered() []byte {
	n := min(int64(b.c.br.Buffered()), b.n)
	p, _ := b.c.br.Peek(int(n))
	return p
}

var errShortBody = errors.New("connection closed before the whole body arrived")
