// Package digest knows the SHA-256 of the files a worker serves, so that
// responses can announce it (HTTP Repr-Digest, the native protocol's
// FlagDigest) without ever hashing on a request's path.
//
// A digest belongs to one version of a file, its Key: device, inode, size,
// mtime and ctime. The ctime is what makes it safe: no system call sets
// it, every change of the bytes moves it, so a file with the same key has
// the same bytes. A lookup is an in-memory hit or a miss; a miss queues
// the file for the Cache's one hashing goroutine and the response goes
// out without a digest. That goroutine loads the digest from the on-disk
// cache (Disk) if another process or an earlier run computed it, and
// otherwise hashes the file with pread on its own descriptor. A file that
// changes while it is hashed gets no digest; nor does one changed less
// than Settle ago, whose ctime could still be the same after a change
// within the file system's timestamp granularity (see settled).
//
// Workers are separate processes. With a Disk, they share its entries and
// its per-file locks (open file description locks on one lock file, which
// the kernel drops when a process dies): a file is hashed by one worker at
// a time, and the others load its digest from disk. Without one, each
// worker hashes the files it serves once for itself.
package digest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Key identifies one version of a file.
type Key struct {
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size"`
	MTime int64  `json:"mtime"` // Unix nanoseconds
	CTime int64  `json:"ctime"` // Unix nanoseconds
}

// KeyOf is the key of the file st describes.
func KeyOf(st *unix.Stat_t) Key {
	return Key{Dev: st.Dev, Ino: st.Ino, Size: st.Size,
		MTime: st.Mtim.Sec*1e9 + st.Mtim.Nsec, CTime: st.Ctim.Sec*1e9 + st.Ctim.Nsec}
}

// fileID is the part of a key that names the file rather than its version.
type fileID struct{ dev, ino uint64 }

func (k Key) id() fileID { return fileID{k.Dev, k.Ino} }

// Sum is a SHA-256 digest.
type Sum [sha256.Size]byte

// String is the digest in lower-case hex, as sha256sum prints it.
func (s Sum) String() string { return hex.EncodeToString(s[:]) }

// Defaults of Options.
const (
	DefaultEntries = 32768           // about 5 MiB of memory when full
	DefaultQueue   = 64              // files waiting to be hashed
	DefaultSettle  = 2 * time.Second // see settled
	chunk          = 256 << 10       // bytes hashed between two yields
	lockRetry      = 100 * time.Millisecond
)

// Options configure a Cache.
type Options struct {
	// Disk is the on-disk cache shared with other processes; nil keeps
	// digests in memory only.
	Disk *Disk
	// Open opens a path (Compute's) for reading, confined as the server
	// confines requests; it must refuse what is not a regular file.
	Open    func(path string) (fd int, err error)
	Entries int           // digests kept in memory; 0: DefaultEntries
	Queue   int           // background hashes waiting; 0: DefaultQueue
	Settle  time.Duration // 0: DefaultSettle
	Log     *slog.Logger  // nil: no logging
	// Walk walks the served tree, for pruning Disk once every PruneEvery
	// (prune.go); nil: Disk is never pruned.
	Walk Walk
}

// Stats are a Cache's running totals.
type Stats struct {
	Hashed      uint64 // digests computed by hashing a file
	HashedBytes uint64 // bytes read to compute them
	Loaded      uint64 // digests loaded from the on-disk cache
	Failed      uint64 // hashes abandoned: the file changed, or an I/O error
	Dropped     uint64 // misses not queued because the queue was full
}

// Cache is a worker's digests: memory, the on-disk cache and the hashing
// goroutine. Its methods may be called from any goroutine.
type Cache struct {
	opts Options
	log  *slog.Logger
	mem  memory
	disk *Disk

	jobs   chan job // background hashes; a miss is dropped when it is full
	urgent chan job // Compute's, served first
	stop   chan struct{}
	done   chan struct{}

	pruneWG sync.WaitGroup // the pruner (prune.go), with Disk and Walk

	mu      sync.Mutex
	pending map[fileID]struct{}  // queued background jobs
	later   map[fileID]time.Time // not queued again before then
	diskErr bool                 // a Store failed (logged once)

	hashed, hashedBytes, loaded, failed, dropped atomic.Uint64

	buf        []byte
	afterChunk func() // tests: runs after each chunk is hashed
}

// maxLater bounds the files remembered as "not before"; when full it is
// cleared (the worst outcome is an early retry).
const maxLater = 4096

// New returns a Cache and starts its hashing goroutine; Close stops it.
func New(opts Options) *Cache {
	if opts.Entries <= 0 {
		opts.Entries = DefaultEntries
	}
	if opts.Queue <= 0 {
		opts.Queue = DefaultQueue
	}
	if opts.Settle <= 0 {
		opts.Settle = DefaultSettle
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cache{opts: opts, log: log, disk: opts.Disk, mem: memory{max: opts.Entries, index: map[fileID]int32{}},
		jobs: make(chan job, opts.Queue), urgent: make(chan job), stop: make(chan struct{}), done: make(chan struct{}),
		pending: map[fileID]struct{}{}, later: map[fileID]time.Time{}, buf: make([]byte, chunk)}
	go c.run()
	if c.disk != nil && opts.Walk != nil {
		c.pruneWG.Add(1)
		go c.pruner()
	}
	return c
}

// Close stops the hashing goroutine (a hash in progress stops at its next
// chunk) and the pruner (a walk stops at its next file, removing nothing),
// and closes the queued files' descriptors. It does not close the Disk.
func (c *Cache) Close() {
	close(c.stop)
	<-c.done
	c.pruneWG.Wait()
}

// Stats returns the running totals.
func (c *Cache) Stats() Stats {
	return Stats{Hashed: c.hashed.Load(), HashedBytes: c.hashedBytes.Load(), Loaded: c.loaded.Load(),
		Failed: c.failed.Load(), Dropped: c.dropped.Load()}
}

// Lookup returns the digest of the file fd whose fstat is st, if known.
// It never blocks on I/O: a hit is a map lookup; on a miss fd is
// duplicated and queued for the hashing goroutine (unless it is queued
// already, the queue is full, or the file failed recently), and path is
// only what the log will call it.
func (c *Cache) Lookup(fd int, st *unix.Stat_t, path string) (Sum, bool) {
	k := KeyOf(st)
	if s, ok := c.mem.get(k); ok {
		return s, true
	}
	c.want(fd, k, path)
	return Sum{}, false
}

// Known returns the digest of the file st describes, if known, without
// queueing anything on a miss.
func (c *Cache) Known(st *unix.Stat_t) (Sum, bool) { return c.mem.get(KeyOf(st)) }

// Learn records a digest computed elsewhere (another worker, through the
// supervisor).
func (c *Cache) Learn(k Key, s Sum) { c.mem.put(k, s) }

func (c *Cache) want(fd int, k Key, path string) {
	id := k.id()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pending[id]; ok {
		return
	}
	if len(c.jobs) == cap(c.jobs) {
		c.dropped.Add(1)
		return
	}
	if t, ok := c.later[id]; ok {
		if time.Now().Before(t) {
			return
		}
		delete(c.later, id)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return // out of descriptors: the next request tries again
	}
	c.pending[id] = struct{}{}
	c.jobs <- job{fd: dup, key: k, path: path} // cannot block: only want sends, under mu, and there was room
}

// retryAfter keeps k's file from being queued again before t.
func (c *Cache) retryAfter(k Key, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.later) >= maxLater {
		clear(c.later)
	}
	c.later[k.id()] = t
}

// Result is Compute's answer for one path.
type Result struct {
	Key Key
	Sum Sum
	Err error
}

// ErrClosed is Compute's error once Close has been called.
var ErrClosed = errors.New("digest cache closed")

// errChanged means a file changed while it was being hashed.
var errChanged = errors.New("changed while being hashed")

// Compute returns the digest of the file at path (opened with Options.Open),
// hashing it if needed, ahead of the background queue. It waits while the
// file changes (up to a few times), for Settle after its last change, and
// while another process holds its lock; ctx bounds those waits. A hash
// that has begun is finished and cached even if ctx ends meanwhile.
func (c *Cache) Compute(ctx context.Context, path string) Result {
	j := job{fd: -1, path: path, ctx: ctx, res: make(chan Result, 1)}
	select {
	case c.urgent <- j:
	case <-ctx.Done():
		return Result{Err: fmt.Errorf("%s: %w", path, ctx.Err())}
	case <-c.stop:
		return Result{Err: ErrClosed}
	}
	select {
	case r := <-j.res:
		return r
	case <-ctx.Done():
		return Result{Err: fmt.Errorf("%s: %w", path, ctx.Err())}
	}
}

type job struct {
	fd   int    // background: a duplicate of the served descriptor
	key  Key    // background: the key it was queued for
	path string // background: for the log; Compute: what to open
	ctx  context.Context
	res  chan Result // Compute only
}
