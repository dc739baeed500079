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
	"runtime"
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
	return c
}

// Close stops the hashing goroutine (a hash in progress stops at its next
// chunk) and closes the queued files' descriptors. It does not close the
// Disk.
func (c *Cache) Close() {
	close(c.stop)
	<-c.done
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

func (c *Cache) run() {
	defer close(c.done)
	for {
		select { // Compute's jobs first
		case j := <-c.urgent:
			j.res <- c.compute(j)
			continue
		default:
		}
		select {
		case <-c.stop:
			for {
				select {
				case j := <-c.jobs:
					unix.Close(j.fd)
				default:
					return
				}
			}
		case j := <-c.urgent:
			j.res <- c.compute(j)
		case j := <-c.jobs:
			c.background(j)
		}
	}
}

// background handles a queued miss: from memory (a Compute or Learn got
// there first), from disk, or by hashing; a file that is too fresh, or
// being hashed by another process, is left for a later request.
func (c *Cache) background(j job) {
	defer unix.Close(j.fd)
	defer func() {
		c.mu.Lock()
		delete(c.pending, j.key.id())
		c.mu.Unlock()
	}()
	var st unix.Stat_t
	if err := fstat(j.fd, &st); err != nil {
		return
	}
	k := KeyOf(&st) // the file may have changed since it was queued: hash what it is now
	if _, ok := c.mem.get(k); ok || c.load(k, j.path) {
		return
	}
	now := time.Now()
	if !settled(k, now, c.opts.Settle) {
		c.retryAfter(k, time.Unix(0, k.CTime).Add(c.opts.Settle))
		return
	}
	unlock, ok := c.lock(k)
	if !ok {
		c.retryAfter(k, now.Add(lockRetry)) // another worker: its digest will be on disk
		return
	}
	defer unlock()
	if c.load(k, j.path) {
		return
	}
	if _, err := c.hashAndStore(j.fd, k, j.path); err != nil {
		c.retryAfter(k, time.Now().Add(c.opts.Settle))
	}
}

// compute is Compute's job, run by the hashing goroutine.
func (c *Cache) compute(j job) Result {
	fd, err := c.opts.Open(j.path)
	if err != nil {
		return Result{Err: err}
	}
	defer unix.Close(fd)
	const maxChanges = 5
	changes := 0
	for {
		var st unix.Stat_t
		if err := fstat(fd, &st); err != nil {
			return Result{Err: fmt.Errorf("%s: stat: %w", j.path, err)}
		}
		k := KeyOf(&st)
		if s, ok := c.mem.get(k); ok {
			return Result{Key: k, Sum: s}
		}
		if c.load(k, j.path) {
			s, _ := c.mem.get(k)
			return Result{Key: k, Sum: s}
		}
		if !settled(k, time.Now(), c.opts.Settle) {
			if changes++; changes > maxChanges {
				return Result{Err: fmt.Errorf("%s: keeps changing; try again once it is complete", j.path)}
			}
			if err := c.sleep(j.ctx, time.Until(time.Unix(0, k.CTime).Add(c.opts.Settle))); err != nil {
				return Result{Err: fmt.Errorf("%s: waiting for it to settle: %w", j.path, err)}
			}
			continue
		}
		unlock, ok := c.lock(k)
		if !ok {
			if err := c.sleep(j.ctx, lockRetry); err != nil {
				return Result{Err: fmt.Errorf("%s: waiting for another worker hashing it: %w", j.path, err)}
			}
			continue
		}
		if c.load(k, j.path) {
			unlock()
			s, _ := c.mem.get(k)
			return Result{Key: k, Sum: s}
		}
		s, err := c.hashAndStore(fd, k, j.path)
		unlock()
		if errors.Is(err, errChanged) {
			if changes++; changes <= maxChanges {
				continue
			}
		}
		if err != nil {
			return Result{Err: fmt.Errorf("%s: %w", j.path, err)}
		}
		return Result{Key: k, Sum: s}
	}
}

// sleep waits d, or until ctx ends or the Cache closes.
func (c *Cache) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.stop:
		return ErrClosed
	}
}

// load moves k's digest from disk to memory, if the disk has it.
func (c *Cache) load(k Key, path string) bool {
	if c.disk == nil {
		return false
	}
	s, ok, err := c.disk.Load(k)
	if err != nil {
		c.log.Warn("ignoring a damaged digest cache entry", "path", path, "err", err)
		return false
	}
	if !ok {
		return false
	}
	c.mem.put(k, s)
	c.loaded.Add(1)
	c.log.Debug("digest loaded from the cache", "path", path, "sha256", s.String())
	return true
}

// lock takes k's file's lock in the on-disk cache (always granted without
// one). ok is false while another process holds it.
func (c *Cache) lock(k Key) (unlock func(), ok bool) {
	if c.disk == nil {
		return func() {}, true
	}
	unlock, ok, err := c.disk.TryLock(k)
	if err != nil {
		c.log.Warn("digest cache lock failed; hashing without it", "err", err)
		return func() {}, true
	}
	return unlock, ok
}

// hashAndStore hashes fd, whose key was k before, and records the digest
// in memory and on disk.
func (c *Cache) hashAndStore(fd int, k Key, path string) (Sum, error) {
	start := time.Now()
	s, err := c.hash(fd, k)
	if err != nil {
		c.failed.Add(1)
		c.log.Info("no digest", "path", path, "err", err)
		return s, err
	}
	c.mem.put(k, s)
	c.hashed.Add(1)
	c.hashedBytes.Add(uint64(k.Size))
	d := time.Since(start)
	c.log.Info("digest computed", "path", path, "size", k.Size, "duration", d.Round(time.Millisecond), "sha256", s.String())
	if c.disk != nil {
		if err := c.disk.Store(k, s); err != nil {
			c.mu.Lock()
			first := !c.diskErr
			c.diskErr = true
			c.mu.Unlock()
			if first {
				c.log.Warn("cannot write the digest cache; digests stay in memory (logged once)", "err", err)
			}
		}
	}
	return s, nil
}

// hash reads fd from 0 to k.Size with pread in chunks, yielding the
// processor between chunks so that connections on the same worker are
// not held up for more than one chunk's hashing (well under a
// millisecond). The file must end where k says and have k's key after.
func (c *Cache) hash(fd int, k Key) (Sum, error) {
	h := sha256.New()
	for off := int64(0); off < k.Size; {
		select {
		case <-c.stop:
			return Sum{}, ErrClosed
		default:
		}
		b := c.buf[:min(int64(len(c.buf)), k.Size-off)]
		n, err := pread(fd, b, off)
		if err != nil {
			return Sum{}, fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			return Sum{}, fmt.Errorf("shrank: %w", errChanged)
		}
		h.Write(b[:n])
		off += int64(n)
		if c.afterChunk != nil {
			c.afterChunk()
		}
		runtime.Gosched()
	}
	var st unix.Stat_t
	if err := fstat(fd, &st); err != nil {
		return Sum{}, fmt.Errorf("stat: %w", err)
	}
	if KeyOf(&st) != k {
		return Sum{}, errChanged
	}
	var s Sum
	h.Sum(s[:0])
	return s, nil
}

// settled reports whether a file whose key is k may be hashed at now: its
// last change must be at least settle in the past. File timestamps come
// from a coarse clock (a jiffy; a second or two on some file systems), so
// a change right after the key was taken could leave the ctime as it was,
// and a digest of the old bytes would pass for the new ones. A change
// after now stamps a ctime of at least now minus the granularity, which is
// after k.CTime when settle exceeds the granularity: the fstat after the
// hash (or any later lookup) sees a different key.
func settled(k Key, now time.Time, settle time.Duration) bool {
	return now.UnixNano()-k.CTime >= int64(settle)
}

func fstat(fd int, st *unix.Stat_t) error {
	for {
		err := unix.Fstat(fd, st)
		if err != unix.EINTR {
			return err
		}
	}
}

func pread(fd int, b []byte, off int64) (int, error) {
	for {
		n, err := unix.Pread(fd, b, off)
		if err != unix.EINTR {
			return n, err
		}
	}
}
