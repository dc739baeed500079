package fetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// Options configure a Client. The zero value is usable: DefaultRecv, one
// connection per file, no retries, no rate limit.
type Options struct {
	// Recv is the receive mode; "" means DefaultRecv.
	Recv RecvMode
	// Conns is how many connections fetch one file by ranges (zfetch -x);
	// files under 2*MinSplit use one. Streams (Job.Out) always use one.
	Conns int
	// Retries is how many times in a row a failed attempt is retried (with
	// no byte received in between) before giving up: Retries+1 attempts;
	// negative means no limit.
	Retries int
	// RetryFor, if set, gives up once no byte has arrived for that long. It
	// also bounds StallTimeout and the time to connect, so that a server
	// that accepts and then says nothing cannot hold an attempt longer.
	RetryFor time.Duration
	// RateLimit caps the bytes per second of all transfers together.
	RateLimit int64
	// SpeedLimit and SpeedTime set a speed floor: an attempt whose body
	// arrives slower than SpeedLimit bytes per second over SpeedTime ends,
	// and is retried, without counting as progress. Zero: no floor.
	SpeedLimit int64
	SpeedTime  time.Duration
	// StallTimeout ends an attempt (to retry it) when no byte arrives for
	// that long. Default 30s.
	StallTimeout time.Duration
	// ProgressEvery is the period of Progress events. Default 100ms.
	ProgressEvery time.Duration
	// CheckpointEvery is how often a preallocated .part's resume state is
	// saved. Default 500ms.
	CheckpointEvery time.Duration
	// Events, if set, receives every Event, one call at a time.
	Events func(Event)
	// Now is the clock for events and retry limits. Default time.Now.
	Now func() time.Time
	// Dial connects to a server. Default Dial.
	Dial func(ctx context.Context, addr string) (*Conn, error)
	// TLS configures https:// connections (nil: the system's roots). Its
	// ServerName is set from each URL.
	TLS *tls.Config
	// NoVerify: do not check the content against digests the servers
	// announce (Job.SHA256 is still checked).
	NoVerify bool
}

// DefaultRetryFor is zfetch's Options.RetryFor unless told otherwise: a
// client keeps retrying refused connections and "draining" answers for
// longer than a server's drain (drain_timeout, 60 s by default) and the
// start of the instance that replaces it.
const DefaultRetryFor = 90 * time.Second

// MinSplit is the smallest range a connection is given when a file is
// split over several (Options.Conns).
const MinSplit = 4 << 20

// maxRestarts bounds how often one download starts over because the file
// keeps changing on the server.
const maxRestarts = 3

// Client downloads files. Its methods may be called concurrently; it keeps
// idle connections for reuse until Close.
type Client struct {
	opts Options
	pool *pool
	lim  *limiter
	rnd  func() float64

	backoffBase, backoffCap time.Duration // tests shorten them
	blockMin                int64         // bodies received on a blocking socket (block.go); tests change it
	noSteal                 bool          // tests: no work stealing, ranges stay as planned
	v1                      sync.Map      // endpoint keys of version 1 servers (no flags)

	emitMu   sync.Mutex
	silenced bool // Silence: no more events
}

// New returns a Client.
func New(o Options) *Client {
	if o.Recv == "" {
		o.Recv = DefaultRecv
	}
	if o.Conns < 1 {
		o.Conns = 1
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 30 * time.Second
	}
	if o.RetryFor > 0 {
		o.StallTimeout = min(o.StallTimeout, max(o.RetryFor, time.Second))
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 100 * time.Millisecond
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = 500 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Dial == nil {
		o.Dial = Dial
	}
	c := &Client{opts: o, lim: newLimiter(o.RateLimit, o.Now), rnd: defaultRand,
		backoffBase: backoffBase, backoffCap: backoffCap, blockMin: blockMin}
	// Connecting (and the TLS handshake) is part of an attempt that may
	// hear nothing: the same bound.
	stall := o.StallTimeout
	c.pool = newPool(16, func(ctx context.Context, ep endpoint) (*Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, stall)
		defer cancel()
		return c.dialEndpoint(ctx, ep)
	})
	return c
}

// Close closes the idle connections.
func (c *Client) Close() error {
	c.pool.close()
	return nil
}

func (c *Client) emit(e Event) {
	if c.opts.Events == nil {
		return
	}
	c.emitMu.Lock()
	defer c.emitMu.Unlock()
	if !c.silenced {
		c.opts.Events(e)
	}
}

// Silence stops the events: once it returns, Options.Events is not called
// again. For a caller that gives up on a download it cannot stop (one
// blocked writing into a stream whose reader stopped reading) and reports
// the outcome itself.
func (c *Client) Silence() {
	c.emitMu.Lock()
	c.silenced = true
	c.emitMu.Unlock()
}

// Job is one file to fetch.
type Job struct {
	ID     int    // copied into its Events
	Name   string // for Events: the local path, or "-"
	Src    Target
	Dst    string   // local path; the download goes to PartName()
	Out    *os.File // when Dst is "": write the file here in order (stdout)
	Resume bool     // continue PartName(), or accept a complete Dst (zfetch -c)
	// Part is the file the download goes to before it is renamed to Dst,
	// "" for Dst+".part". Plan.AddTree sets it when a directory of the
	// tree has that name.
	Part   string
	SHA256 string // lower-case hex digest to check the content against; "" for none
	// Mirrors are other URLs of the same file: its bytes are fetched from
	// all of them (and Src) at once.
	Mirrors []Target
	// OpenOut, when Dst and Out are unset, opens the stream to write the
	// file into, once the server has said it has the file: a FIFO's open
	// waits for its reader, and an error (a 404) is not held up by that.
	OpenOut func(context.Context) (*os.File, error)
}

// Result describes a finished (or failed) Fetch.
type Result struct {
	Size     int64  // the file's size on the server (-1 if never learnt)
	Done     int64  // bytes of it in place
	Resumed  int64  // bytes a .part already had when this run started
	Received int64  // bytes received over the network by this run
	Skipped  bool   // Dst was complete already: nothing was transferred
	Part     string // on failure, the .part kept for a later -c ("" if none)
}

// withConn runs fn on a pooled connection, bounded by ctx and the stall
// timeout, and returns the connection to the pool if fn succeeded. A reused
// idle connection that fails before any response header was probably closed
// by the server meanwhile; fn then runs once more on a new one. So does one
// whose answer does not begin as a response (a protocol error before any
// header: bytes a server sent after the last body, on a connection it then
// closed), which a new connection tells from a server that speaks
// another protocol. The second try is on a connection dialled for it, not
// on another idle one: after -x, several idle connections to a server are
// often spoilt alike.
func (c *Client) withConn(ctx context.Context, ep endpoint, fn func(*Conn) error) error {
	for try := 0; ; try++ {
		get := c.pool.get
		if try > 0 {
			get = c.pool.dialNew
		}
		conn, err := get(ctx, ep)
		if err != nil {
			return err
		}
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		conn.SetDeadline(time.Now().Add(c.opts.StallTimeout))
		before := conn.responses
		err = fn(conn)
		if !stop() || ctx.Err() != nil {
			conn.Close()
			return ctx.Err()
		}
		if err == nil {
			c.pool.put(conn)
			return nil
		}
		conn.Close()
		if conn.reused && conn.responses == before && try == 0 && (Retryable(err) || isProtocolError(err)) {
			continue
		}
		return err
	}
}

// retry runs op until it succeeds, fails for good, or the retry budget is
// spent, waiting with backoff in between and reporting each retry. op says
// whether it received data, which resets the budget.
func (c *Client) retry(ctx context.Context, report func(Event), op func() (progressed bool, err error)) error {
	fails := 0
	last := c.opts.Now()
	for {
		progressed, err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if progressed {
			fails, last = 0, c.opts.Now()
		}
		if !Retryable(err) {
			return err
		}
		fails++
		delay := max(backoff(fails, c.backoffBase, c.backoffCap, c.rnd), retryAfter(err))
		if c.opts.RetryFor > 0 {
			left := c.opts.RetryFor - c.opts.Now().Sub(last)
			if left <= 0 {
				return &GiveUpError{Attempts: fails, Err: err}
			}
			delay = min(delay, left)
		}
		if c.opts.Retries >= 0 && fails > c.opts.Retries {
			return &GiveUpError{Attempts: fails, Err: err}
		}
		report(Event{Kind: EventRetry, Attempt: fails, Delay: delay, Err: err})
		if err := sleep(ctx, delay); err != nil {
			return err
		}
	}
}

// Stat describes t on its server, with retries, each reported to
// Options.Events as an EventRetry with File -1 (no file of the batch yet).
func (c *Client) Stat(ctx context.Context, t Target) (wire.Response, error) {
	return c.stat(ctx, t, c.treeReport(t, c.emit))
}

// Fetch downloads one file. Its Events carry j.ID and j.Name; on failure
// Result.Part names the .part kept for a later Resume.
func (c *Client) Fetch(ctx context.Context, j Job) (Result, error) {
	d := &download{c: c, j: j, mode: c.opts.Recv}
	if d.mode == RecvAuto && j.Dst != "" {
		d.mode = RecvSplice
	}
	res, err := d.fetch(ctx)
	if err != nil {
		if ctx.Err() != nil {
			// Whatever broke, it broke because we were told to stop.
			err = Stopped(ctx)
		}
		d.emit(Event{Kind: EventError, Done: res.Done, Err: err})
	}
	return res, err
}

// Stopped says why ctx is done: "interrupted" when it was canceled (Ctrl-C),
// or the cause its deadline was given (context.WithTimeoutCause), such as
// zfetch's --max-time.
func Stopped(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		if cause := context.Cause(ctx); cause != ctx.Err() {
			return fmt.Errorf("stopped: %w", cause)
		}
	}
	return fmt.Errorf("interrupted: %w", ctx.Err())
}

// errNotFile phrases a STAT of something that is not a regular file.
func errNotFile(path string, k wire.Kind) error {
	msg := fmt.Sprintf("not a regular file: %s is a %v", path, k)
	if k == wire.KindDir {
		msg = fmt.Sprintf("%s is a directory (use -r to fetch a tree)", path)
	}
	return &StatusError{Status: wire.StatusNotRegular, Path: path, Message: msg}
}

// errorsAsChanged unwraps a changedError.
func errorsAsChanged(err error) (*changedError, bool) {
	var ce *changedError
	ok := errors.As(err, &ce)
	return ce, ok
}

// isProtocolError reports a protocol violation by the server: a malformed
// native or HTTP response.
func isProtocolError(err error) bool {
	var we *wire.Error
	var he *httpError
	return errors.As(err, &we) || errors.As(err, &he)
}
