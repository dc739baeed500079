// Package serve is what a worker does with one accepted connection: read
// native-protocol requests, confine each path to the served root, and send
// file bytes with the configured zero-copy mode. It knows nothing of
// processes or the supervisor; the worker hands it connections and asks it
// for transfers in flight.
package serve

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/digest"
	"github.com/zfs-serve/zfs-serve/internal/accesslog"
	"github.com/zfs-serve/zfs-serve/internal/ratelog"
	"github.com/zfs-serve/zfs-serve/internal/rawcall"
	"github.com/zfs-serve/zfs-serve/wire"
)

// Options are the parts of the configuration a connection needs.
type Options struct {
	Root          string
	Mode          string // config.ModeSendfile, ...
	Chunk         int64  // bytes per send call, so one fast client cannot hog a worker
	HeaderTimeout time.Duration
	IdleTimeout   time.Duration
	SendTimeout   time.Duration
	FileCache     time.Duration // how long an opened file may be reused; 0: never
	HTTP          bool          // serve HTTP/1.1 to connections that do not start with wire.RequestMagic
	Index         []string      // HTTP: files served for a directory, first found
	Listing       bool          // directory listings (HTTP) and LIST (native)
	MaxRanges     int           // HTTP: most ranges in one request; 0: Range is ignored
	Digests       bool          // announce files' SHA-256 (serve/digest.go)
	DigestCache   string        // digests' directory; "" or config.DigestCacheMemory: memory only

	// Access writes one line per response (access_log); nil: none. Not
	// from OptionsFrom: the daemon makes it with its log's writer,
	// format, level and attributes.
	Access *accesslog.Logger

	// FileCacheValid is how long a cached file's fstat may stand in for
	// a fresh one, for files of at most Chunk bytes; 0: fstat every request.
	FileCacheValid time.Duration
	// FileCacheInactive is how long a cached file may go unrequested
	// before it is closed; less than FileCache counts as FileCache.
	FileCacheInactive time.Duration

	keepAliveWait waitMode // how kept-alive connections wait (wait.go); tests set it
}

// OptionsFrom extracts Options from a resolved configuration.
func OptionsFrom(c *config.Config) Options {
	return Options{
		Root:          c.Root,
		Mode:          c.ZeroCopy,
		Chunk:         int64(c.SendChunk),
		HeaderTimeout: c.HeaderTimeout.D(),
		IdleTimeout:   c.IdleTimeout.D(),
		SendTimeout:   c.SendTimeout.D(),
		FileCache:     c.OpenFileCache.D(),
		HTTP:          c.HTTP,
		Index:         c.Index,
		Listing:       c.Listing,
		MaxRanges:     c.MaxRanges,
		Digests:       c.Digests,
		DigestCache:   c.DigestCache,

		FileCacheValid: c.OpenFileCacheValid.D(),

		FileCacheInactive: c.OpenFileCacheInactive.D(),
	}
}

// Server serves connections from one root.
type Server struct {
	opts   Options
	root   *rootDir // every open is relative to it
	files  *fileCache
	log    *slog.Logger
	sender sender

	draining atomic.Bool
	mu       sync.Mutex
	conns    map[*conn]struct{}
	wg       sync.WaitGroup
	park     parker // idle connections without a goroutine (park.go)
	run      runners

	totalConns atomic.Uint64
	attaches   atomic.Uint64 // connections that joined the runtime poller (attach.go)
	peeks      atomic.Uint64 // looks for request bytes waiting in a socket (pending)
	emptyReads atomic.Uint64 // reads that found the socket empty (EAGAIN)
	// times the leader handed its place to another goroutine (leader.go; tests)
	leadHandoffs atomic.Uint64
	// sendfile calls made without the scheduler and with it (tests)
	rawSendfiles, plainSendfiles atomic.Uint64
	bytesSent                    atomic.Uint64 // body bytes of finished sends and of sends in flight

	pipes      chan *pipe    // splice mode: idle pipes, see getPipe
	listBytes  atomic.Int64  // listing bodies being sent, bounded by maxListBytes (listmem.go)
	listBuilds chan struct{} // a token per listing being built, see buildListing
	listSizes  listSizes     // the size each listing had when last built (listmem.go)

	nativeRequests atomic.Uint64
	httpRequests   atomic.Uint64
	httpBytes      atomic.Uint64 // body bytes sent in HTTP responses (bytesSent counts all)
	nativeResp     classCounts   // responses by status class (metrics.go)
	httpResp       classCounts
	date           httpDate

	digests    *digest.Cache // nil: digests = false
	digestDisk *digest.Disk

	admit    func(id uint64, client string) string // see SetAdmit (proxy.go)
	proxyLog ratelog.Limiter                       // refused PROXY headers

	rootStop    chan struct{} // ends watchRoot (root.go)
	rootDone    chan struct{} // closed when watchRoot has returned
	rootRefused [2]uint64     // the directory followRoot last warned it cannot serve (device, inode)
}

// New opens the root and returns a Server for it.
func New(opts Options, log *slog.Logger) (*Server, error) {
	// O_RDONLY, not O_PATH: opening must prove this process (a worker,
	// perhaps with dropped privileges) can read the root, and a lookup of
	// "." that it can search it, so a root it cannot serve fails the start
	// instead of every request.
	fd, r, err := openRootDir(opts.Root)
	if err != nil {
		if _, ok := err.(*reqError); ok { // readable, not searchable
			return nil, fmt.Errorf("search root %s: %w", opts.Root, err)
		}
		return nil, fmt.Errorf("open root %s: %w", opts.Root, err)
	}
	root := &rootDir{fd: fd, r: r, log: log}
	root.probeLocal()
	if dot, _, err := openAt(root, ".", unix.O_PATH); err != nil {
		root.close()
		return nil, fmt.Errorf("search root %s: %w", opts.Root, err)
	} else {
		unix.Close(dot)
	}
	snd, err := newSender(opts.Mode)
	if err != nil {
		root.close()
		return nil, err
	}
	if opts.Chunk <= 0 {
		opts.Chunk = 512 << 10
	}
	if opts.keepAliveWait == waitDefault {
		if envWaitErr != nil {
			log.Warn("ignoring an unknown keep-alive wait mode", "err", envWaitErr)
		}
		opts.keepAliveWait = envWait
	}
	if opts.Mode == config.ModeSendfile || opts.Mode == "" {
		switch err := rawcall.ProbeCachestat(); {
		case errors.Is(err, unix.EPERM):
			log.Warn("cachestat(2) is forbidden (a seccomp filter?): every sendfile takes the scheduler's slower path; allow cachestat", "err", err)
		case err != nil:
			log.Info("cachestat(2) is unavailable (Linux 6.5 has it): every sendfile takes the scheduler's slower path", "err", err)
		}
	}
	statValid := opts.FileCacheValid
	if opts.Mode == config.ModeMmap {
		// A mapping reads zeros past the end of a file up to its page's
		// end: a file shrunk since its stat would be padded, not cut short.
		statValid = 0
	}
	s := &Server{opts: opts, root: root, log: log, sender: snd, files: newFileCache(opts.FileCache, opts.FileCacheInactive, statValid, opts.Chunk, min(inlineMax, opts.Chunk)),
		conns: make(map[*conn]struct{}), pipes: make(chan *pipe, pipePoolSize), listBuilds: make(chan struct{}, maxListBuilds),
		run: runners{q: make(chan runJob), stop: make(chan struct{})}}
	s.digests, s.digestDisk = newDigests(opts, root, log)
	// The set of parked connections is made now, not at the first park,
	// so that a worker's descriptors are what they will stay from its
	// start (an operator, or a test, watching them sees no step later).
	if _, err := s.epoll(); err != nil {
		s.Close()
		return nil, err
	}
	s.rootStop, s.rootDone = make(chan struct{}), make(chan struct{})
	go s.watchRoot(s.rootStop, s.rootDone)
	return s, nil
}

// Close releases the root and the idle pipes. Call it after Wait.
func (s *Server) Close() error {
	if s.rootStop != nil {
		close(s.rootStop)
		<-s.rootDone // before the root closes: it may be following it
		s.rootStop = nil
	}
	s.run.close()
	s.park.close()
	s.closeDigests()
	s.files.close()
	for len(s.pipes) > 0 { // nothing else uses them after Wait
		p := <-s.pipes
		unix.Close(p.r)
		unix.Close(p.w)
	}
	return s.root.close()
}

func (r *rootDir) close() error {
	r.r.Close()
	if f := r.followed.Load(); f != nil {
		f.Close()
	}
	return unix.Close(r.fd)
}

// Outcome says how a connection ended.
type Outcome string

// Outcomes.
const (
	OutcomeClosed     Outcome = "closed"       // the client closed between requests
	OutcomeIdle       Outcome = "idle"         // idle or header timeout
	OutcomeDrained    Outcome = "drained"      // closed by a drain between requests
	OutcomeBadRequest Outcome = "bad-request"  // protocol violation; told the client why
	OutcomeClientGone Outcome = "client-gone"  // reset, EPIPE, or send timeout mid-response
	OutcomeShrank     Outcome = "file-shrank"  // the file got shorter while being sent
	OutcomeChanged    Outcome = "file-changed" // the file changed while being sent: the body was cut short
	OutcomeError      Outcome = "error"        // a local error
)

// Result describes a finished connection.
type Result struct {
	Requests int
	Bytes    int64 // body bytes sent
	Outcome  Outcome
}

// Protocols, as Transfer.Protocol names them.
const (
	ProtoNative = "native"
	ProtoHTTP   = "http"
)

// Transfer is one response body being sent right now.
type Transfer struct {
	Protocol string
	Client   string
	Path     string
	Offset   int64
	Total    int64 // body bytes this response will send
	Sent     int64
	Start    time.Time
}

type transfer struct {
	proto  string
	path   string
	offset int64
	total  int64
	start  time.Time
	sent   atomic.Int64
}

type conn struct {
	s      *Server
	f      *os.File
	rc     syscall.RawConn
	fd     int
	client string
	// buf[rpos:rend] holds request bytes read but not yet parsed. buf is
	// rbuf for the native protocol (header and path of a request arrive
	// together in one small read) and a larger buffer for HTTP heads.
	buf        []byte
	rbuf       [256]byte
	rpos, rend int
	headArmed  bool // header_timeout already runs for the first request (set by sniff or readProxy)
	// atimeOK: reading the body being sent leaves the file's access time
	// as it is (atimeStays), so its sendfile may be raw (send.go);
	// atimeFreshens: one ordinary read with bytes makes it so (a relatime
	// mount, the root's own). Both set by sendBody for each body.
	atimeOK       bool
	atimeFreshens bool
	proxy         bool // a PROXY header comes first (proxy.go)
	admitAsk      bool // ask s.admit about the client the header names
	id            uint64
	http          *httpConn
	// native access log
	lastStatus  wire.Status
	accessStart time.Time
	accessBytes int64
	rdl         time.Time // the read deadline last set
	wdl         time.Time // the write deadline while armed (zero: none)
	op          sockOp
	runOp       func(uintptr) bool // c.doOp, bound once attached (attach.go)
	rd          readOp
	drained     bool               // the last read was short: the socket had nothing more then
	runRead     func(uintptr) bool // c.doRead, bound once attached
	out         []byte
	state       atomic.Int32 // connBusy, connIdle, connKicked, connParking or connParked
	ready       atomic.Bool  // an event of the epoll set came since the last read (wait.go)
	hup         atomic.Bool  // the epoll set saw the client's close or an error: a short read leaves that unread (wait.go)
	cur         atomic.Pointer[transfer]
	res         Result
	// parking (park.go)
	seq       uint64        // this server's number for the connection, its epoll token
	idleTick  atomic.Uint32 // the sweep count when it last went idle (waitEpoll: parked)
	idleUntil atomic.Int64  // a parked connection's idle_timeout, Unix nanoseconds (the sweep reads it)
	isHTTP    bool          // speaks HTTP (c.http is nil while parked)
	resumed   bool          // a parked connection woken by its first bytes
	lead      *leadTurn     // the leader serving it (leader.go), or nil
	polled    bool          // in the epoll set and the registry
	done      func(Result)
}

// serve serves a new connection until it ends (false) or waits idle to be
// parked (true).
func (c *conn) serve() (park bool) {
	s := c.s
	if c.proxy && !c.readProxy() {
		return false
	}
	native, err := c.sniff()
	if err != nil {
		c.res.Outcome = c.readFailed(err)
		return false
	}
	if !native {
		if !s.opts.HTTP {
			s.log.Debug("closing a connection that is not native (http = false)", "client", c.client)
			c.res.Outcome = OutcomeBadRequest
			return false
		}
		c.startHTTP()
		return c.serveHTTP(true)
	}
	return c.serveNative(true)
}

// shrankError means the file got shorter than its size at open.
type shrankError struct {
	path        string
	sent, total int64
}

func (e *shrankError) Error() string {
	return fmt.Sprintf("file shrank while being sent: %s: sent %d of %d bytes", e.path, e.sent, e.total)
}

func (c *conn) sendFailed(q *wire.Request, err error) Outcome {
	var se *shrankError
	if errors.As(err, &se) {
		c.s.log.Warn("file shrank while being sent; closing the connection", "client", c.client,
			"path", se.path, "sent", se.sent, "expected", se.total)
		return OutcomeShrank
	}
	var ce *changedError
	if errors.As(err, &ce) {
		c.s.log.Warn("file changed while being sent; closing the connection before the last chunk", "client", c.client,
			"path", ce.path, "sent", ce.sent, "expected", ce.total, "changed", ce.what)
		return OutcomeChanged
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.s.log.Info("client accepted no bytes for send_timeout; dropped", "client", c.client,
			"path", q.Path, "send_timeout", c.s.opts.SendTimeout)
		return OutcomeClientGone
	}
	if isClientGone(err) {
		c.s.log.Debug("client gone mid-response", "client", c.client, "path", q.Path, "err", err)
		return OutcomeClientGone
	}
	c.s.log.Error("response failed", "client", c.client, "op", q.Op, "path", q.Path, "err", err)
	return OutcomeError
}

func isClientGone(err error) bool {
	return errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) ||
		errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, unix.ETIMEDOUT) ||
		errors.Is(err, unix.EHOSTUNREACH) || errors.Is(err, unix.ENETUNREACH)
}

// progress records n more body bytes sent.
func (t *transfer) progress(s *Server, n int) {
	if t == nil {
		return // not a file's bytes (writeInline of an error's text)
	}
	t.sent.Add(int64(n))
	s.addSent(t.proto, n)
}

// countSent records n bytes of fb sent without a transfer (writeInline).
func (s *Server) countSent(fb *fileBody, n int) {
	if fb != nil {
		s.addSent(fb.proto, n)
	}
}

// addSent adds n body bytes of a response in protocol proto to the totals.
func (s *Server) addSent(proto string, n int) {
	s.bytesSent.Add(uint64(n))
	if proto == ProtoHTTP {
		s.httpBytes.Add(uint64(n))
	}
}

// writeHeader sends a response header. more=true tells the kernel a body
// follows (MSG_MORE), so header and first body bytes leave in one segment.
func (c *conn) writeHeader(r *wire.Response, more bool) error {
	return c.write(c.appendHeader(r), more)
}

// appendHeader counts the response r and returns its encoding.
func (c *conn) appendHeader(r *wire.Response) []byte {
	c.lastStatus = r.Status
	c.s.nativeResp.add(NativeStatusCode(r.Status))
	if c.out == nil {
		// Room for a header and a digest: one allocation, not the
		// appends' several.
		c.out = make([]byte, 0, wire.ResponseHeaderLen+wire.DigestLen)
	}
	c.out = wire.AppendResponse(c.out[:0], r)
	return c.out
}

// write sends b completely (more: MSG_MORE on every part).
func (c *conn) write(b []byte, more bool) error {
	_, err := c.writeCounted(b, more)
	return err
}

// writeCounted is write that also says how much was sent before an error.
// b is the worker's own memory: the sends are raw (internal/rawcall).
func (c *conn) writeCounted(b []byte, more bool) (int, error) {
	return c.writeBytes(b, more, true)
}

// writeBytes is writeCounted; raw is false when b is a file mapping, whose
// pages may fault in from disk.
func (c *conn) writeBytes(b []byte, more, raw bool) (int, error) {
	flags := unix.MSG_NOSIGNAL | unix.MSG_DONTWAIT
	if more {
		flags |= unix.MSG_MORE
	}
	sent := 0
	for len(b) > 0 {
		c.op = sockOp{kind: opSendmsg, buf: b, flags: flags, raw: raw}
		n, err := c.send()
		c.op.buf = nil
		if err != nil {
			return sent, err
		}
		b = b[n:]
		sent += n
	}
	return sent, nil
}
