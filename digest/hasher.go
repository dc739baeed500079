package digest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// The hashing goroutine: one per Cache, so a worker hashes one file at a
// time, Compute's jobs first, then the background queue.

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
