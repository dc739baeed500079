// Package fetch is the zfs-serve download client. It speaks the native wire
// protocol (package wire) and knows nothing of the daemon; zfetch is its
// command line.
//
// A Client downloads files (Client.Fetch) and batches of files and
// directory trees (a Plan, run by Client.FetchPlan) with:
//
//   - resume: a file is written to NAME.part, with its resume state (the
//     server's size and mtime, and which byte ranges are done) beside it in
//     NAME.part.state; it is renamed to NAME only once complete and
//     verified, with the server's mtime;
//   - retry: connection errors, connection refused and busy/draining
//     answers are retried with exponential backoff and jitter, each attempt
//     resuming from the bytes already written; a file whose size or mtime
//     changed on the server (seen in a response, or asked once more with
//     STAT before the rename) is fetched again from the start, never
//     joined; an attempt slower than a speed floor (Options.SpeedLimit)
//     ends and is retried;
//   - ranges: one file over several connections, each writing its ranges in
//     place with pwrite (or splice, or through mmap);
//   - receive modes: copy (read then pwrite), splice (socket -> pipe ->
//     file) and mmap (receive straight into a mapping of the output);
//   - progress: Events (start, progress, retry, restart, done, error) for a
//     renderer such as package fetch/progress.
//
// Errors are returned, never logged; their types (StatusError, LocalError,
// VerifyError, GiveUpError) say what went wrong for exit codes.
package fetch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/wire"
)

// StatusError is a refusal from the server. Busy and draining are
// retryable (see Status.Retryable); the others are final.
type StatusError struct {
	Status  wire.Status
	Path    string
	Message string
	// HTTP is the HTTP status code for an HTTP server's refusal, 0 for a
	// native one; RetryAfter the delay its Retry-After asked for.
	HTTP       int
	RetryAfter time.Duration
}

// Retryable reports whether another attempt may succeed: busy or draining
// (native), or an HTTP 408, 429 or 5xx.
func (e *StatusError) Retryable() bool {
	if e.HTTP != 0 {
		return e.HTTP == 408 || e.HTTP == 429 || e.HTTP >= 500
	}
	return e.Status.Retryable()
}

func (e *StatusError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return e.Status.String() + ": " + e.Path
}

// Conn is one connection to a server; requests on it are sequential and a
// response's body must be read completely before the next request. It reads
// the socket without buffering, so the receive modes can take a body
// straight from the socket (splice, or read into a mapping).
type Conn struct {
	c      net.Conn
	key    string // the pool's key (endpoint.key)
	reused bool   // taken from the pool: a failure before any header may be a stale connection
	pre    []byte // HTTP: bytes read past a response head, the start of its body

	responses int // response headers read

	// A blocking receive (block.go) replaces c (under mu, which Close
	// takes), and Close shuts blockFD down while inBlock.
	mu      sync.Mutex
	closed  bool
	inBlock bool
	blockFD int
	broken  bool // lost its socket in a blocking receive: not to be kept alive
}

// Dial connects to addr.
func Dial(ctx context.Context, addr string) (*Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Conn{c: c}, nil
}

// Close closes the connection. It may be called during a receive (to
// cancel it), which then ends promptly.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.closed = true
	if c.inBlock {
		// A blocking receive is waiting in the kernel: closing the
		// descriptor would not wake it, shutting the socket down does.
		// (blocking closes the descriptor only after unregistering it.)
		unix.Shutdown(c.blockFD, unix.SHUT_RDWR)
	}
	nc := c.c
	c.mu.Unlock()
	return nc.Close()
}

// SetDeadline bounds the next request (and its body reads).
func (c *Conn) SetDeadline(t time.Time) error { return c.c.SetDeadline(t) }

func (c *Conn) roundTrip(q *wire.Request) (wire.Response, error) {
	if err := wire.WriteRequest(c.c, q); err != nil {
		var we *wire.Error
		if errors.As(err, &we) {
			return wire.Response{}, fmt.Errorf("%v %s: %w", q.Op, q.Path, err)
		}
		return wire.Response{}, &connError{fmt.Errorf("%v %s: sending the request: %w", q.Op, q.Path, err)}
	}
	r, err := wire.ReadResponse(c.c)
	if err != nil {
		var we *wire.Error
		if errors.As(err, &we) {
			return r, protocolError(q, we)
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return r, &connError{fmt.Errorf("%v %s: reading the response: %w", q.Op, q.Path, err)}
	}
	c.responses++
	if r.Status != wire.StatusOK {
		return r, &StatusError{Status: r.Status, Path: q.Path, Message: r.Message}
	}
	if q.Op == wire.OpStat && r.BodyLen != 0 {
		// STAT has no body (docs/PROTOCOL.md): read as the next
		// response's header, it would be blamed on that request.
		return r, protocolError(q, &wire.Error{Status: wire.StatusBadRequest, Msg: fmt.Sprintf("a STAT response announces a %d-byte body", r.BodyLen)})
	}
	return r, nil
}

// protocolError is we, the server's violation of the protocol in its
// answer to q, with what the user can do about it.
func protocolError(q *wire.Request, we *wire.Error) error {
	if we.HTTP {
		return fmt.Errorf("%v %s: %w (an HTTP server: fetch it with an http:// or https:// URL)", q.Op, q.Path, we)
	}
	return fmt.Errorf("%v %s: protocol error (is this a zfs-serve server?): %w", q.Op, q.Path, we)
}

// Stat describes path.
func (c *Conn) Stat(path string) (wire.Response, error) {
	return c.StatFlags(path, 0)
}

// StatFlags describes path, with request flags (wire.FlagDigest asks for
// the file's SHA-256; a version 1 server refuses it with
// StatusUnsupportedVersion and closes the connection).
func (c *Conn) StatFlags(path string, flags wire.Flags) (wire.Response, error) {
	return c.roundTrip(&wire.Request{Op: wire.OpStat, Path: path, Flags: flags})
}

// List returns a directory's entries.
func (c *Conn) List(path string) ([]wire.Entry, error) {
	r, err := c.roundTrip(&wire.Request{Op: wire.OpList, Path: path})
	if err != nil {
		return nil, err
	}
	if r.BodyLen > wire.MaxListBody {
		return nil, fmt.Errorf("LIST %s: %d-byte list exceeds the protocol limit", path, r.BodyLen)
	}
	es, err := wire.ReadList(bufio.NewReaderSize(&exactReader{r: c.c, n: r.BodyLen}, 64<<10), r.BodyLen)
	if err != nil {
		var we *wire.Error
		if !errors.As(err, &we) {
			err = &connError{err}
		}
		return nil, fmt.Errorf("LIST %s: %w", path, err)
	}
	return es, nil
}

// Get asks for [off, off+length) of path (length 0 = to the end) and
// returns the response header. BodyLen bytes follow on the connection;
// read them all (a receive mode) before the next request.
func (c *Conn) Get(path string, off, length int64) (wire.Response, error) {
	return c.GetFlags(path, off, length, 0)
}

// GetFlags is Get with request flags (see StatFlags).
func (c *Conn) GetFlags(path string, off, length int64, flags wire.Flags) (wire.Response, error) {
	r, err := c.roundTrip(&wire.Request{Op: wire.OpGet, Path: path, Offset: off, Length: length, Flags: flags})
	if err != nil {
		return r, err
	}
	want := r.Size - off
	if length > 0 && length < want {
		want = length
	}
	if r.Kind != wire.KindFile || want < 0 || r.BodyLen != want {
		return r, fmt.Errorf("GET %s: inconsistent response (kind %v, size %d, body %d for offset %d)", path, r.Kind, r.Size, r.BodyLen, off)
	}
	return r, nil
}

// exactReader reads exactly n bytes from r, in reads as large as asked,
// and reports a connection closed early as io.ErrUnexpectedEOF.
type exactReader struct {
	r io.Reader
	n int64
}

func (b *exactReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	if err == io.EOF && b.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
