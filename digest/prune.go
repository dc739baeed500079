package digest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Pruning: the on-disk cache loses the entries of files that are gone or
// have changed since they were hashed. Entries are named by device and
// inode only, so nothing but a walk of the served tree can tell that a
// file is gone: once a day one process sharing the directory lists its
// entries, walks the tree, and removes every entry that no file of the
// tree matches in the exact version it records.

const (
	// PruneEvery is how often the cache directory is pruned, by whichever
	// process sharing it comes first.
	PruneEvery = 24 * time.Hour
	// pruneBusyRetry is when a process that found another pruning looks
	// again (by then the stamp says it was done).
	pruneBusyRetry = time.Hour
	// MaxPruneWalk bounds the files one prune looks at. A tree larger
	// than that is not pruned (removing entries needs the whole walk: a
	// file not reached might be an entry's), and the log says so.
	MaxPruneWalk = 10_000_000
	// pruneStamp is the file whose mtime is the last prune's start.
	pruneStamp = ".pruned"
	// pruneLock is the byte of the lock file held while pruning;
	// lockOffset never gives it.
	pruneLock = 1 << 62
)

// PruneStats describes one prune.
type PruneStats struct {
	Entries int // entries in the directory when it began
	Removed int // entries removed: their files are gone or changed
	Walked  int // files of the tree looked at
}

// errWalkTooBig ends a walk past MaxPruneWalk files.
var errWalkTooBig = fmt.Errorf("the tree has more than %d files; not pruned", MaxPruneWalk)

// ErrWalkStopped is a Walk's error when visit stopped it.
var ErrWalkStopped = errors.New("walk stopped")

// Walk calls visit with the lstat of every regular file under a tree; if
// visit returns false, it stops and returns ErrWalkStopped. Options.Walk
// is one; WalkDir walks a directory descriptor.
type Walk func(visit func(st *unix.Stat_t) bool) error

// Prune removes the entries whose file walk does not find in the version
// the entry records (deleted, or changed since it was hashed), and those
// that are damaged. It keeps, whatever the walk saw, the entries written
// after it began, those of files being hashed, those of file systems on
// which the walk found no file (not mounted yet, say: it cannot judge
// them), and files named like an entry that are not one (an entry's size
// and magic: the directory may hold other files if it was given as
// digest_cache by mistake). Nothing is removed if the walk fails or
// visits more than MaxPruneWalk files. It does not look at PruneEvery or
// the lock (see pruneIfDue).
func (d *Disk) Prune(walk Walk) (PruneStats, error) {
	var ps PruneStats
	start, err := d.fileClock()
	if err != nil {
		return ps, err
	}
	// The entries no file has matched yet: those left after the walk go.
	// Names are read in batches and rebuilt from the ids, not kept: a
	// million entries take about 56 MB so (measured: the map alone), in
	// a worker that serves meanwhile; every name at once would add
	// their os.DirEntry values besides.
	stale := map[fileID]struct{}{}
	dir, err := os.Open(d.dir)
	if err != nil {
		return ps, fmt.Errorf("digest cache: %w", err)
	}
	for {
		names, err := dir.Readdirnames(4096)
		for _, name := range names {
			var id fileID
			var rest string
			if n, _ := fmt.Sscanf(name, "%x-%x%s", &id.dev, &id.ino, &rest); n == 3 && name == entryName(id) {
				stale[id] = struct{}{}
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			dir.Close()
			return ps, fmt.Errorf("digest cache: %w", err)
		}
	}
	dir.Close()
	ps.Entries = len(stale)
	if len(stale) == 0 {
		return ps, nil
	}
	// The file systems the walk found files on: an entry of another can
	// be judged by this walk only if it is damaged (see removeStale).
	devs := map[uint64]bool{}
	err = walk(func(st *unix.Stat_t) bool {
		ps.Walked++
		if ps.Walked > MaxPruneWalk {
			return false
		}
		devs[st.Dev] = true
		k := KeyOf(st)
		if _, ok := stale[k.id()]; ok {
			// An entry that cannot be read (out of descriptors, say)
			// cannot be judged: only a damaged one is stale.
			if _, ok, err := d.Load(k); ok || err != nil && !errors.Is(err, errDamaged) {
				delete(stale, k.id())
			}
		}
		return true
	})
	if ps.Walked > MaxPruneWalk {
		err = errWalkTooBig
	}
	if err != nil {
		return ps, fmt.Errorf("digest cache: prune: %w", err)
	}
	// An entry is removed under its file's lock, taken through a
	// descriptor of its own so that it excludes this process's hashing
	// goroutine too: every Store is made under that lock, so none can
	// land between the look at the entry's mtime and its removal.
	lock, err := unix.Open(filepath.Join(d.dir, ".lock"), unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return ps, fmt.Errorf("digest cache: lock file: %w", err)
	}
	defer unix.Close(lock)
	for id := range stale {
		if d.removeStale(lock, id, start, devs[id.dev]) {
			ps.Removed++
		}
	}
	return ps, nil
}

// removeStale removes id's entry unless it was stored after start, its
// file is being hashed (its lock, a byte of the lock file lock, is held),
// or it is not an entry (a file of that name that has not an entry's size
// and magic: not the cache's to remove). Without judged (the walk found
// no file on the entry's file system: one not mounted yet, say) only a
// damaged entry is removed.
func (d *Disk) removeStale(lock int, id fileID, start time.Time, judged bool) bool {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: lockOffset(Key{Dev: id.dev, Ino: id.ino}), Len: 1}
	if unix.FcntlFlock(uintptr(lock), unix.F_OFD_SETLK, &lk) != nil {
		return false // being hashed: its entry is about to be replaced
	}
	defer func() {
		lk.Type = unix.F_UNLCK
		unix.FcntlFlock(uintptr(lock), unix.F_OFD_SETLK, &lk)
	}()
	p := filepath.Join(d.dir, entryName(id))
	var st unix.Stat_t
	if unix.Lstat(p, &st) != nil || !time.Unix(st.Mtim.Unix()).Before(start) {
		return false // gone, or stored since the walk began
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != entryLen {
		return false // not an entry
	}
	b, err := readFile(p, entryLen+1)
	if err != nil || len(b) != entryLen || [4]byte(b[:4]) != entryMagic {
		return false // not an entry
	}
	if _, _, err := decodeEntry(b); err == nil && !judged {
		return false
	}
	return os.Remove(p) == nil
}

// readFile reads up to n bytes of the file p.
func readFile(p string, n int) ([]byte, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b := make([]byte, n)
	got, err := unix.Pread(fd, b, 0)
	return b[:max(got, 0)], err
}

// fileClock returns the time the file system gives a file written now,
// by writing one: the kernel dates files with a coarse clock, updated
// once a tick, that lags the one time.Now reads, so an entry stored just
// after time.Now could carry an mtime before it.
func (d *Disk) fileClock() (time.Time, error) {
	f, err := os.CreateTemp(d.dir, ".tmp-prune-*")
	if err != nil {
		return time.Time{}, fmt.Errorf("digest cache: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return time.Time{}, fmt.Errorf("digest cache: %w", err)
	}
	return time.Unix(st.Mtim.Unix()), nil
}

func entryName(id fileID) string { return fmt.Sprintf("%x-%x.sha256", id.dev, id.ino) }

// pruneDue returns how long until the directory is due to be pruned
// again (0 or less: now). A stamp dated after now (the clock was wrong
// when it was written, or has stepped back since) makes it due: it would
// put pruning off until that date.
func (d *Disk) pruneDue(now time.Time) time.Duration {
	var st unix.Stat_t
	if unix.Stat(filepath.Join(d.dir, pruneStamp), &st) != nil {
		return 0
	}
	last := time.Unix(st.Mtim.Unix())
	if last.After(now) {
		return 0
	}
	return last.Add(PruneEvery).Sub(now)
}

// pruneIfDue prunes the directory unless another process is pruning it
// or it was pruned less than PruneEvery ago; it returns when to look
// again. A prune that fails is not tried again before PruneEvery either
// (its cause, a tree too big, would most likely still be there), unless
// it was stopped (the process is exiting: the next one prunes).
func (d *Disk) pruneIfDue(walk Walk, log func(msg string, args ...any)) time.Duration {
	if wait := d.pruneDue(time.Now()); wait > 0 {
		return wait
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: pruneLock, Len: 1}
	if err := unix.FcntlFlock(uintptr(d.lock), unix.F_OFD_SETLK, &lk); err != nil {
		return pruneBusyRetry // another process is pruning (or EINTR: later is fine)
	}
	defer func() {
		un := lk
		un.Type = unix.F_UNLCK
		unix.FcntlFlock(uintptr(d.lock), unix.F_OFD_SETLK, &un)
	}()
	if wait := d.pruneDue(time.Now()); wait > 0 {
		return wait // done by another process just now
	}
	now := time.Now()
	ps, err := d.Prune(walk)
	if errors.Is(err, ErrWalkStopped) {
		return PruneEvery
	}
	stamp := filepath.Join(d.dir, pruneStamp)
	if werr := os.WriteFile(stamp, nil, 0o600); werr != nil || os.Chtimes(stamp, now, now) != nil {
		log("digest cache: cannot write the prune stamp", "err", werr)
	}
	if err != nil {
		log("digest cache not pruned", "err", err, "entries", ps.Entries, "files_walked", ps.Walked)
		return PruneEvery
	}
	log("digest cache pruned", "entries", ps.Entries, "removed", ps.Removed, "files_walked", ps.Walked,
		"duration", time.Since(now).Round(time.Millisecond))
	return PruneEvery
}

// pruner prunes the on-disk cache when due, until c.stop.
func (c *Cache) pruner() {
	defer c.pruneWG.Done()
	stop := c.stop
	walk := func(visit func(st *unix.Stat_t) bool) error {
		return c.opts.Walk(func(st *unix.Stat_t) bool {
			select {
			case <-stop:
				return false
			default:
				return visit(st)
			}
		})
	}
	logf := func(msg string, args ...any) { c.log.Info(msg, args...) }
	for {
		wait := max(c.disk.pruneIfDue(walk, logf), time.Second)
		t := time.NewTimer(wait)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// WalkDir walks the tree under the directory dirfd (which it does not
// close) for Prune: it calls visit with the lstat of each regular file,
// never follows a symbolic link, and yields the processor every 256
// entries. A directory this process may not search is left out (its
// files cannot be served either); one it may search but not read ends
// the walk with an error (its files can be served but not listed), as
// does any other error.
func WalkDir(dirfd int, visit func(st *unix.Stat_t) bool) error {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the tree: %w", err)
	}
	n := 0
	_, err = walkDir(fd, ".", visit, &n)
	return err
}

// walkDir walks the directory fd (and closes it); false with an error
// ends the walk.
func walkDir(fd int, path string, visit func(st *unix.Stat_t) bool, n *int) (bool, error) {
	dir := os.NewFile(uintptr(fd), path)
	defer dir.Close()
	for {
		names, err := dir.Readdirnames(256)
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("read directory %s: %w", path, err)
		}
		for _, name := range names {
			if *n++; *n%256 == 0 {
				runtime.Gosched()
			}
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue // removed meanwhile
				}
				return false, fmt.Errorf("stat %s: %w", filepath.Join(path, name), err)
			}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				if !visit(&st) {
					return false, ErrWalkStopped
				}
			case unix.S_IFDIR:
				// No file below a directory that may not be searched can
				// be opened, so none can be served: left out. One that
				// may be searched but not read has files that can be
				// served (by name) and cannot be listed: the walk cannot
				// tell which entries are theirs.
				if err := unix.Faccessat(fd, name, unix.X_OK, unix.AT_EACCESS); errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOENT) {
					continue
				}
				sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if errors.Is(err, unix.ENOENT) {
					continue // removed meanwhile
				}
				if errors.Is(err, unix.EACCES) {
					return false, fmt.Errorf("directory %s may be searched but not read, so its files can be served and not listed", filepath.Join(path, name))
				}
				if err != nil {
					return false, fmt.Errorf("open directory %s: %w", filepath.Join(path, name), err)
				}
				if more, err := walkDir(sub, filepath.Join(path, name), visit, n); !more || err != nil {
					return false, err
				}
			}
		}
	}
}
