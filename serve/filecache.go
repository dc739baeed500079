package serve

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// fileCache keeps the descriptors of recently served files open for a
// short while (open_file_cache), so a hot file costs one fstat per request
// instead of openat2 + fstat + close, like nginx's open_file_cache.
//
// What it may serve stale, and for how long: every hit is fstat'ed afresh,
// so a file changed in place (written, truncated, appended) is seen at once,
// with its current size and mtime. Only a file replaced under the same name
// (rename over it, or delete and create) keeps being served from the old
// inode, whole and consistent, until its entry expires.
type fileCache struct {
	valid time.Duration // 0: no caching
	mu    sync.Mutex
	m     map[string]*cachedFile
	stop  chan struct{}
}

type cachedFile struct {
	fd      int
	expires time.Time
	refs    int  // requests using fd now
	evicted bool // out of the map; closed when refs drops to 0
}

// fileCacheMax bounds the descriptors a worker keeps open for the cache.
const fileCacheMax = 4096

func newFileCache(valid time.Duration) *fileCache {
	fc := &fileCache{valid: valid, m: map[string]*cachedFile{}, stop: make(chan struct{})}
	if valid > 0 {
		go fc.sweep()
	}
	return fc
}

// open returns a descriptor of the regular file p and its current stat.
// The caller passes fd and e to release when the request is done with it.
func (fc *fileCache) open(root *rootDir, p string) (fd int, st unix.Stat_t, e *cachedFile, err error) {
	if fc.valid <= 0 {
		fd, stp, err := openFile(root, p)
		if err != nil {
			return -1, st, nil, err
		}
		return fd, *stp, nil, nil
	}
	now := time.Now()
	fc.mu.Lock()
	if e := fc.m[p]; e != nil {
		if now.Before(e.expires) {
			e.refs++
			fc.mu.Unlock()
			if err := unix.Fstat(e.fd, &st); err == nil {
				return e.fd, st, e, nil
			}
			fc.release(e.fd, e)
			fc.mu.Lock()
		}
		if fc.m[p] == e {
			fc.evictLocked(p, e)
		}
	}
	fc.mu.Unlock()

	fd, stp, err := openFile(root, p)
	if err != nil {
		return -1, st, nil, err
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.m[p] != nil || len(fc.m) >= fileCacheMax {
		return fd, *stp, nil, nil
	}
	e = &cachedFile{fd: fd, expires: now.Add(fc.valid), refs: 1}
	fc.m[p] = e
	return fd, *stp, e, nil
}

// release ends a request's use of fd (e nil: fd is its own, close it).
func (fc *fileCache) release(fd int, e *cachedFile) {
	if e == nil {
		unix.Close(fd)
		return
	}
	fc.mu.Lock()
	e.refs--
	if e.evicted && e.refs == 0 {
		unix.Close(e.fd)
	}
	fc.mu.Unlock()
}

func (fc *fileCache) evictLocked(p string, e *cachedFile) {
	delete(fc.m, p)
	e.evicted = true
	if e.refs == 0 {
		unix.Close(e.fd)
	}
}

// sweep closes expired entries, so an idle worker holds no descriptors of
// files it no longer serves.
func (fc *fileCache) sweep() {
	t := time.NewTicker(max(fc.valid, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-fc.stop:
			return
		case now := <-t.C:
			fc.mu.Lock()
			for p, e := range fc.m {
				if !now.Before(e.expires) {
					fc.evictLocked(p, e)
				}
			}
			fc.mu.Unlock()
		}
	}
}

// close evicts everything; descriptors in use close when released.
func (fc *fileCache) close() {
	if fc.valid > 0 {
		close(fc.stop)
	}
	fc.mu.Lock()
	for p, e := range fc.m {
		fc.evictLocked(p, e)
	}
	fc.mu.Unlock()
}

// len is the number of cached files, for tests.
func (fc *fileCache) len() int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return len(fc.m)
}
