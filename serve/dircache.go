package serve

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/wire"
)

// The open-file cache remembers names that turned out to be folders, as
// nginx's open_file_cache keeps directories: a link to a folder without
// its slash ("/docs", answered by a redirect to "/docs/") is then
// answered from memory for the period (open_file_cache), where each one
// cost a lookup of the folder (three system calls). What it may answer
// stale: a folder replaced by a file, or removed, is still redirected
// within the period (the redirect's target then finds what is there).

// Only the path of an HTTP request is answered from them, and only its
// misses teach them (openOrDir): that is the redirect they save. An index
// file, looked up under its folder (httpIndex), and a native GET look
// their name up (open): for a name remembered as a folder there, an
// index.html that replaced a folder of that name would be passed over
// for the folder's listing (or a 403), and a native GET would refuse as
// a folder a name that STAT, never cached, finds to be a file.

// openOrDir is open for the path of an HTTP request: a name found to be
// a folder less than a period ago is refused as one (refuseKind, which
// handleHTTP answers with its redirect) without a lookup, and a miss
// found to be one is remembered.
func (fc *fileCache) openOrDir(root *rootDir, p string, mayWait func()) (fd int, st unix.Stat_t, e *cachedFile, err error) {
	return fc.openAs(root, p, mayWait, true)
}

// dirHit reports whether key (cacheKey) was found to be a folder less
// than a period ago.
func (fc *fileCache) dirHit(key string) bool {
	now := fc.now()
	fc.mu.Lock()
	defer fc.mu.Unlock()
	until, ok := fc.dirs[key]
	if ok && !now.Before(until) {
		delete(fc.dirs, key)
		return false
	}
	return ok
}

// noteDir remembers key for a period if err, a miss's answer at now, says
// it names a folder, and same, asked under the cache's lock, says the
// root is still the one the miss looked in (openAs). The names kept are
// bounded as the files are: when full, a new one replaces an arbitrary
// one; the sweep forgets those whose period is over (sweepDirsLocked).
func (fc *fileCache) noteDir(key string, err error, now time.Time, same func() bool) {
	var re *reqError
	if !errors.As(err, &re) || re.kind != wire.KindDir {
		return
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if !same() {
		return
	}
	if _, ok := fc.dirs[key]; !ok && len(fc.dirs) >= fc.max {
		for k := range fc.dirs {
			delete(fc.dirs, k)
			break
		}
	}
	fc.dirs[key] = now.Add(fc.valid)
}

// sweepDirsLocked forgets the folders whose period is over at now (the
// sweep, every period): a name not asked for again is not kept, up to
// the cache's bound, until new ones push it out, nor does a full map
// push fresh names out for stale ones.
func (fc *fileCache) sweepDirsLocked(now time.Time) {
	for k, until := range fc.dirs {
		if !now.Before(until) {
			delete(fc.dirs, k)
		}
	}
}
