package serve

import (
	"path"
	"strings"
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
// with its current size and mtime, and a deleted file (no links left) is a
// miss. Only a file replaced under the same name (renamed over, or a
// symlink on its path repointed) keeps being served from the old inode,
// whole and consistent, until its entry expires.
//
// Entries are keyed by the cleaned path, so "/a", "a" and "//./a" share
// one descriptor; when the cache is full the new file replaces an
// arbitrary entry, so a client cannot pin descriptors with spellings of
// one path nor keep hot files out.
type fileCache struct {
	valid time.Duration // 0: no caching
	max   int           // entries (descriptors) at most
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

// fileCacheMax bounds the descriptors a worker keeps open for the cache;
// it also keeps to a quarter of the open-file limit, leaving the rest to
// connections.
const fileCacheMax = 4096

// fileCacheSize is the cache's bound for an open-file limit of limit.
func fileCacheSize(limit int) int {
	return max(min(fileCacheMax, limit/4), 1)
}

func newFileCache(valid time.Duration) *fileCache {
	n := fileCacheMax
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		n = fileCacheSize(int(min(lim.Cur, 1<<30)))
	}
	fc := &fileCache{valid: valid, max: n, m: map[string]*cachedFile{}, stop: make(chan struct{})}
	if valid > 0 {
		go fc.sweep()
	}
	return fc
}

// open returns a descriptor of the regular file p and its current stat.
// The caller passes fd and e to release when the request is done with it.
func (fc *fileCache) open(root *rootDir, p string) (fd int, st unix.Stat_t, e *cachedFile, err error) {
	key, ok := "", fc.valid > 0
	if ok {
		key, ok = cacheKey(p)
	}
	if !ok {
		fd, stp, err := openFile(root, p)
		if err != nil {
			return -1, st, nil, err
		}
		return fd, *stp, nil, nil
	}
	now := time.Now()
	fc.mu.Lock()
	if e := fc.m[key]; e != nil {
		if now.Before(e.expires) {
			e.refs++
			fc.mu.Unlock()
			if err := unix.Fstat(e.fd, &st); err == nil && st.Nlink > 0 {
				return e.fd, st, e, nil
			}
			fc.release(e.fd, e)
			fc.mu.Lock()
		}
		if fc.m[key] == e {
			fc.evictLocked(key, e)
		}
	}
	fc.mu.Unlock()

	fd, stp, err := openFile(root, p)
	if err != nil {
		return -1, st, nil, err
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.m[key] != nil {
		return fd, *stp, nil, nil
	}
	if len(fc.m) >= fc.max {
		for k, old := range fc.m { // map order: an arbitrary entry
			fc.evictLocked(k, old)
			break
		}
	}
	e = &cachedFile{fd: fd, expires: now.Add(fc.valid), refs: 1}
	fc.m[key] = e
	return fd, *stp, e, nil
}

// cacheKey is the cleaned form of a request path, without allocating for
// the usual already-clean "/a/b". ok is false for paths with ".." (they
// are refused, or legal names like "a..b" that are simply not cached), and
// for paths that can only name a directory ("a/", "a/."): cleaning would
// make them the file "a".
func cacheKey(p string) (key string, ok bool) {
	if strings.Contains(p, "..") || dirSyntax(p) {
		return "", false
	}
	if strings.HasPrefix(p, "/") {
		return path.Clean(p), true
	}
	return path.Clean("/" + p), true
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
