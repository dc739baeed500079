package serve

import (
	"errors"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/httpx"
	"github.com/zfs-serve/zfs-serve/internal/rawcall"
	"github.com/zfs-serve/zfs-serve/wire"
)

// fileCache keeps the descriptors of recently served files open for a
// short while (open_file_cache), so a hot file costs no openat2 + fstat +
// close per request, like nginx's open_file_cache.
//
// What it may serve stale, and for how long. A descriptor is reused for
// up to valid (open_file_cache) after its open or its last revalidation;
// the first request after that looks the path up again (an O_PATH
// openat2 and its fstat) and keeps the descriptor if the path still names
// its file, else opens the new one; an entry not requested for
// inactive (open_file_cache_inactive, or a whole period if that is
// longer) is closed by the sweep. Within the period, a hit fstats
// the descriptor again unless its last fstat is younger than statValid
// (open_file_cache_valid) and the file was at most statMax bytes (one
// send chunk) then; a file deleted or renamed over (no links left) is a
// miss at that fstat. So, with statValid = 0 every hit sees the file's
// current size and mtime, and a rename over it at once; otherwise:
//   - a file renamed over, deleted, or replaced by a repointed symlink is
//     seen within min(statValid, valid) (within valid if another hard
//     link keeps the old file);
//   - a small file changed in place within the window, and not kept in
//     memory (inline.go), is announced with its last-seen size and validators (ETag, Last-Modified, digest),
//     while the sender reads its current bytes: if it shrank, the body
//     ends early and the connection closes (a length is never padded:
//     errShort), and the entry is revalidated (staleAfter) so the next
//     request sees the new size; if it grew, the announced size is sent
//     (a prefix of the new bytes). A client that checks the digest sees
//     such a mix; so does one that checks the file again afterwards
//     (native STAT and HTTP HEAD never use the cache: httpfile.go
//     openHTTP).
//   - larger files are fstat'ed on every hit: their body dwarfs the
//     fstat, and sendBody's check before the last chunk then compares
//     with a fresh stat.
//
// Server.New sets statValid to 0 in mmap mode, where a mapping reads
// zeros past a shrunk file's end up to the end of its page.
//
// Entries are keyed by the cleaned path, so "/a", "a" and "//./a" share
// one descriptor; when the cache is full the new file replaces an
// arbitrary entry, so a client cannot pin descriptors with spellings of
// one path nor keep hot files out.
type fileCache struct {
	valid time.Duration // 0: no caching
	// inactive: an entry not requested for this long is closed
	// (open_file_cache_inactive, at least valid). A kept entry past its
	// period is looked up again at its next request, so this bounds only
	// how long a descriptor (of a file deleted meanwhile, say) stays
	// open, not what is served.
	inactive   time.Duration
	statValid  time.Duration // how long a hit may reuse the last fstat; 0: fstat every hit
	statMax    int64         // only for files of at most this many bytes
	inlineMax  int64         // files of at most this many bytes are kept in memory too (inline.go); 0: none
	inlineUsed int64         // bytes of files kept in memory
	max        int           // entries (descriptors) at most
	now        func() time.Time
	mu         sync.Mutex
	m          map[string]*cachedFile
	dirs       map[string]time.Time // names found to be folders, until when (dircache.go)
	stop       chan struct{}
	rawLookups atomic.Uint64 // revalidations made without the scheduler (lookupRaw; tests)
	rawOpens   atomic.Uint64 // misses opened without the scheduler (openCached; tests)
	rawReads   atomic.Uint64 // small files' reads made without the scheduler (readInline; tests)
}

type cachedFile struct {
	fd       int
	dev, ino uint64      // the file's identity, fixed
	expires  time.Time   // when the path must be looked up again (revalidate)
	used     time.Time   // the last request for it; the sweep closes the unused
	st       unix.Stat_t // the last fstat of fd
	checked  time.Time   // when st was taken; zero: revalidate at the next hit
	ctype    string      // the media type its name says (HTTP's Content-Type), fixed
	ownMount bool        // on the root's own mount, which is local: revalidated raw (lookupRaw)
	body     []byte      // the file's bytes, read under bodySt (inline.go); nil: none
	bodySt   unix.Stat_t
	refs     int  // requests using fd now
	evicted  bool // out of the map; closed when refs drops to 0
}

// fileCacheMax bounds the descriptors a worker keeps open for the cache;
// it also keeps to a quarter of the open-file limit, leaving the rest to
// connections.
const fileCacheMax = 4096

// fileCacheSize is the cache's bound for an open-file limit of limit.
func fileCacheSize(limit int) int {
	return max(min(fileCacheMax, limit/4), 1)
}

func newFileCache(valid, inactive, statValid time.Duration, statMax, inlineMax int64) *fileCache {
	n := fileCacheMax
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		n = fileCacheSize(int(min(lim.Cur, 1<<30)))
	}
	fc := &fileCache{valid: valid, inactive: max(valid, inactive), statValid: statValid, statMax: statMax, inlineMax: inlineMax, max: n, now: time.Now,
		m: map[string]*cachedFile{}, dirs: map[string]time.Time{}, stop: make(chan struct{})}
	if valid > 0 {
		go fc.sweep()
	}
	return fc
}

// hit is open's answer for a fresh entry of key (cacheKey), which needs
// no system call: the descriptor, and the stat it stands in for (fresh).
// ok is false for anything else, which open handles.
func (fc *fileCache) hit(key string) (fd int, st unix.Stat_t, e *cachedFile, ok bool) {
	now := fc.now()
	fc.mu.Lock()
	e = fc.m[key]
	if e == nil || !now.Before(e.expires) || !fc.fresh(e, now) {
		fc.mu.Unlock()
		return -1, st, nil, false
	}
	e.refs++
	e.used = now
	st = e.st
	fc.mu.Unlock()
	return e.fd, st, e, true
}

// open returns a descriptor of the regular file p and its current stat.
// The caller passes fd and e to release when the request is done with it.
// A fresh hit (hit) makes no system call, nor does a name the kernel's
// caches know is missing cost more than one raw lookup (openNew); before
// anything else (a revalidation, an fstat, an ordinary open or read, any
// of which may wait for a disk) open calls mayWait, if not nil: a
// connection on the leader's goroutine hands its place on there
// (conn.unlead, leader.go).
func (fc *fileCache) open(root *rootDir, p string, mayWait func()) (fd int, st unix.Stat_t, e *cachedFile, err error) {
	return fc.openAs(root, p, mayWait, false)
}

// openAs is open; dirs says whether p is a name the folders remembered
// answer and teach (openOrDir, dircache.go).
func (fc *fileCache) openAs(root *rootDir, p string, mayWait func(), dirs bool) (fd int, st unix.Stat_t, e *cachedFile, err error) {
	if mayWait == nil {
		mayWait = func() {}
	}
	key, ok := "", fc.valid > 0
	if ok {
		key, ok = cacheKey(p)
	}
	if ok {
		if fd, st, e, ok := fc.hit(key); ok {
			return fd, st, e, nil
		}
		if dirs && fc.dirHit(key) {
			return -1, st, nil, refuseKind(p, wire.KindDir)
		}
	}
	if !ok {
		fd, stp, _, err := openNew(root, p, mayWait)
		if err != nil {
			return -1, st, nil, err
		}
		return fd, *stp, nil, nil
	}
	now := fc.now()
	fc.mu.Lock()
	if e := fc.m[key]; e != nil {
		if !now.Before(e.expires) {
			// Expired: keep the descriptor if the path still names its file.
			e.refs++
			fc.mu.Unlock()
			mayWait()
			if st, ok := fc.revalidate(root, p, e); ok {
				body := fc.rereadInline(root, e, &st, now)
				fc.mu.Lock()
				e.expires, e.st, e.checked, e.used = now.Add(fc.valid), st, now, now
				fc.keepInlineLocked(e, body, &st)
				fc.mu.Unlock()
				return e.fd, st, e, nil
			}
			fc.release(e.fd, e)
			fc.mu.Lock()
		} else {
			e.refs++
			e.used = now
			fc.mu.Unlock()
			mayWait()
			if err := unix.Fstat(e.fd, &st); err == nil && st.Nlink > 0 {
				if fc.statValid > 0 {
					fc.mu.Lock()
					e.st, e.checked = st, now
					fc.mu.Unlock()
				}
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

	// A root followed elsewhere (root.go) while the miss opens makes its
	// answer this request's alone: it may be the old tree's, and the flush
	// after the follow may already be over.
	gen := root.gen.Load()
	fd, stp, own, err := openNew(root, p, mayWait)
	if err != nil {
		if dirs {
			fc.noteDir(key, err, now, func() bool { return root.gen.Load() == gen })
		}
		return -1, st, nil, err
	}
	mayWait() // for readInline, which may read the disk (a no-op if openNew waited)
	if own {
		fc.rawOpens.Add(1)
	} else if rfs := root.fs(); rfs.local {
		mnt, ok := mountID(fd)
		own = ok && mnt == rfs.mnt
	}
	body := fc.readInline(root, fd, stp, own, now)
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.m[key] != nil || root.gen.Load() != gen {
		return fd, *stp, nil, nil
	}
	if len(fc.m) >= fc.max {
		for k, old := range fc.m { // map order: an arbitrary entry
			fc.evictLocked(k, old)
			break
		}
	}
	e = &cachedFile{fd: fd, dev: stp.Dev, ino: stp.Ino, expires: now.Add(fc.valid), used: now, st: *stp, checked: now, refs: 1, ctype: httpx.ContentType(key), ownMount: own}
	fc.keepInlineLocked(e, body, stp)
	fc.m[key] = e
	return fd, *stp, e, nil
}

// openNew opens p for a miss: raw where it can (openCached), else
// openFile, after mayWait. raw says which; a file opened raw is on the
// root's own local mount (ownMount) by the lookup's RESOLVE_NO_XDEV. A
// name the raw walk found missing is not found, and what it found not to
// be a regular file is refused by its kind, without openFile.
func openNew(root *rootDir, p string, mayWait func()) (fd int, st *unix.Stat_t, raw bool, err error) {
	fd, rst, err := openCached(root, p)
	if err == nil {
		return fd, &rst, true, nil
	}
	if err == unix.EAGAIN {
		// The walk may have met a file where a folder was to be
		// ("file/index.html", for "file/"): its folder's lookup says so.
		if perr := folderMissing(root, p); perr != nil {
			err = perr
		}
	}
	if rawcall.Missing(err) {
		return -1, nil, false, openError(p, err)
	}
	if t := rst.Mode & unix.S_IFMT; err == unix.ENOTSUP && t != 0 && t != unix.S_IFREG {
		// The walk found something else than a regular file (its
		// fstat is rst), which the ordinary open refuses by its kind
		// alike, never opening it: a directory, a FIFO, a device. (A
		// regular file whose reopen said EOPNOTSUPP goes the ordinary
		// way, which gives that its answer.)
		return -1, nil, false, notRegular(p, &rst)
	}
	mayWait()
	fd, st, err = openFile(root, p)
	return fd, st, false, err
}

// folderMissing is the raw walk's answer (rawcall.Missing) for the
// folder p is in, looked up with its slash, or nil if it has none. A walk
// limited to the caches (RESOLVE_CACHED) fails with EAGAIN, not ENOTDIR,
// where a component on the way is not a directory ("file/x": the kernel
// cannot finish such a walk without leaving its lock-free mode, which
// RESOLVE_CACHED refuses), but the lookup of "file/" says ENOTDIR. The
// folder missing, p is too, with the same error the ordinary walk gives.
// One raw lookup more, only where the ordinary path comes next anyway.
func folderMissing(root *rootDir, p string) error {
	i := strings.LastIndexByte(strings.TrimRight(p, "/"), '/')
	if i <= 0 {
		return nil // in the root, which is there
	}
	fd, _, err := openCached(root, p[:i+1])
	if err == nil {
		unix.Close(fd) // cannot be: a path ending in "/" is no regular file
		return nil
	}
	if !rawcall.Missing(err) {
		return nil
	}
	return err
}

// revalidate reports whether p still names e's file, and its stat: an
// O_PATH lookup and its fstat (and a close), not a new open and a new
// read of a small file's bytes.
func (fc *fileCache) revalidate(root *rootDir, p string, e *cachedFile) (unix.Stat_t, bool) {
	// A file on another mount under the root (perhaps a network one, or
	// autofs, whose walk may wait before RESOLVE_NO_XDEV stops it) is
	// never looked up raw.
	if e.ownMount {
		if st, ok := lookupRaw(root, p); ok {
			fc.rawLookups.Add(1)
			return st, st.Dev == e.dev && st.Ino == e.ino
		}
	}
	fd, st, err := openRegular(root, p, unix.O_PATH)
	if err != nil {
		return unix.Stat_t{}, false
	}
	unix.Close(fd)
	return *st, st.Dev == e.dev && st.Ino == e.ino
}

// lookupRaw is revalidate's lookup without the scheduler
// (rawcall.Lookup): on a local file system, not crossing a mount, and
// only for a regular file. It reports false for anything else (a remote
// or unknown file system, a mount crossed, no openat2, any error, not a
// regular file), and revalidate then takes the ordinary path, which
// gives the error its proper answer. The path was looked up when the
// entry was opened or last revalidated, open_file_cache_valid ago, so its
// dentries are cached unless memory pressure evicted them meanwhile: then
// RESOLVE_CACHED fails the walk and the ordinary path reads the directory
// (on a kernel before 5.12, without it, the raw walk reads it while
// holding the worker's thread).
// Making it raw keeps the steady state free of ordinary system calls,
// which wake the runtime's sysmon thread for a millisecond of 20 µs
// polling each time the worker was idle (docs/ARCHITECTURE.md "Raw system
// calls").
func lookupRaw(root *rootDir, p string) (unix.Stat_t, bool) {
	var st unix.Stat_t
	rfs := root.fs()
	if !rfs.local || noOpenat2.Load() {
		return st, false
	}
	rel, err := relPath(p)
	if err != nil {
		return st, false
	}
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: resolveBeneath | unix.RESOLVE_NO_XDEV}
	if rfs.cached {
		how.Resolve |= rawcall.ResolveCached
	}
	if rawcall.Lookup(root.fd, rel, &how, &st) != nil || kindOf(&st) != wire.KindFile {
		return st, false
	}
	return st, true
}

// fresh reports whether a hit on e may use e.st without an fstat.
func (fc *fileCache) fresh(e *cachedFile, now time.Time) bool {
	return fc.statValid > 0 && !e.checked.IsZero() && e.st.Size <= fc.statMax && now.Sub(e.checked) < fc.statValid
}

// staleAfter makes the next hit on e fstat again if err, a response's
// error, says the file was shorter than, or changed from, the stat the
// response announced.
func (fc *fileCache) staleAfter(e *cachedFile, err error) {
	if e == nil || err == nil || !staleError(err) {
		return
	}
	fc.mu.Lock()
	e.checked = time.Time{}
	fc.mu.Unlock()
}

// staleError reports whether err says the file changed under a response.
// (Its own function: the targets of errors.As escape to the heap, and
// staleAfter, called after every response, should not allocate them.)
func staleError(err error) bool {
	var se *shrankError
	var ce *changedError
	return errors.As(err, &se) || errors.As(err, &ce)
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
	fc.dropInlineLocked(e) // requests using it keep their slice
	e.evicted = true
	if e.refs == 0 {
		unix.Close(e.fd)
	}
}

// sweep closes the entries that are expired and were not requested for
// a whole validity period, so an idle worker holds no descriptors of files
// it no longer serves; an expired entry still in use is looked up again
// by its next request instead (revalidate).
func (fc *fileCache) sweep() {
	tickUntil(fc.stop, max(fc.valid, 100*time.Millisecond), func() { fc.sweepOnce(fc.now()) })
}

func (fc *fileCache) sweepOnce(now time.Time) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for p, e := range fc.m {
		if !now.Before(e.expires) && now.Sub(e.used) >= fc.inactive {
			fc.evictLocked(p, e)
		}
	}
	fc.sweepDirsLocked(now)
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
	clear(fc.dirs)
	fc.mu.Unlock()
}

// flush evicts everything (the root now names another directory:
// root.go); descriptors in use close when released.
func (fc *fileCache) flush() {
	fc.mu.Lock()
	for p, e := range fc.m {
		fc.evictLocked(p, e)
	}
	clear(fc.dirs)
	fc.mu.Unlock()
}

// len is the number of cached files, for tests.
func (fc *fileCache) len() int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return len(fc.m)
}
