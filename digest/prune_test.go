package digest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pruneTree is a served tree and a cache with an entry for each of its
// files: keep, sub/deep and a hard link to keep stay as they were, gone
// is deleted, changed rewritten; the cache also has a damaged entry and
// files that are not entries. Entries are dated a minute back, as if
// stored before the prune.
type pruneTree struct {
	root, cache string
	d           *Disk
	rootFD      int
	entries     map[string]string // file -> its entry's name
}

func newPruneTree(t *testing.T) *pruneTree {
	t.Helper()
	pt := &pruneTree{root: t.TempDir(), cache: filepath.Join(t.TempDir(), "cache"), entries: map[string]string{}}
	pt.d = openTestDisk(t, pt.cache)
	files := []string{"keep", "gone", "changed", "sub/deep"}
	for _, f := range files {
		p := filepath.Join(pt.root, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A link changes the file's ctime: made before the entry is stored.
	os.Link(filepath.Join(pt.root, "keep"), filepath.Join(pt.root, "keep-link"))
	for _, f := range files {
		p := filepath.Join(pt.root, f)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		k := KeyOf(&st)
		if err := pt.d.Store(k, Sum{1}); err != nil {
			t.Fatal(err)
		}
		pt.entries[f] = entryName(k.id())
	}
	os.Symlink(pt.root, filepath.Join(pt.root, "loop")) // not followed
	os.Remove(filepath.Join(pt.root, "gone"))
	os.WriteFile(filepath.Join(pt.root, "changed"), []byte("changed again"), 0o644)
	damaged := appendEntry(nil, Key{Dev: 0xff, Ino: 0xff}, Sum{})
	damaged[entryLen-1] ^= 1 // its CRC
	os.WriteFile(filepath.Join(pt.cache, "ff-ff.sha256"), damaged, 0o600)
	pt.entries["damaged"] = "ff-ff.sha256"
	os.WriteFile(filepath.Join(pt.cache, "README"), nil, 0o600)
	os.WriteFile(filepath.Join(pt.cache, "1-2.sha256.bak"), nil, 0o600)
	past := time.Now().Add(-time.Minute)
	ents, _ := os.ReadDir(pt.cache)
	for _, e := range ents {
		os.Chtimes(filepath.Join(pt.cache, e.Name()), past, past)
	}
	fd, err := unix.Open(pt.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	pt.rootFD = fd
	return pt
}

func (pt *pruneTree) walk(visit func(*unix.Stat_t) bool) error { return WalkDir(pt.rootFD, visit) }

// left lists the cache directory's files.
func (pt *pruneTree) left(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(pt.cache)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if e.Name() != pruneStamp {
			names = append(names, e.Name())
		}
	}
	return names
}

func (pt *pruneTree) want(files ...string) []string {
	names := []string{".lock", "1-2.sha256.bak", "README"}
	for _, f := range files {
		names = append(names, pt.entries[f])
	}
	slices.Sort(names)
	return names
}

// TestPrune: the entries of deleted and changed files go, and damaged
// ones; those of files as they were hashed stay, and so does everything
// in the directory that is not an entry.
func TestPrune(t *testing.T) {
	pt := newPruneTree(t)
	ps, err := pt.d.Prune(pt.walk)
	if err != nil {
		t.Fatal(err)
	}
	if ps.Entries != 5 || ps.Removed != 3 || ps.Walked != 4 {
		t.Errorf("stats %+v, want 5 entries, 3 removed, 4 files walked", ps)
	}
	if got, want := pt.left(t), pt.want("keep", "sub/deep"); !slices.Equal(got, want) {
		t.Errorf("left %q, want %q", got, want)
	}
}

// TestPruneKeepsWhatItCannotJudge: a walk that fails or is stopped
// removes nothing, nor does a tree past MaxPruneWalk; an entry stored
// while the walk runs stays, whatever the walk saw.
func TestPruneKeepsWhatItCannotJudge(t *testing.T) {
	all := []string{"keep", "gone", "changed", "sub/deep", "damaged"}
	t.Run("walk fails", func(t *testing.T) {
		pt := newPruneTree(t)
		failing := func(visit func(*unix.Stat_t) bool) error {
			pt.walk(visit)
			return errors.New("EIO")
		}
		if _, err := pt.d.Prune(failing); err == nil {
			t.Error("no error")
		}
		if got, want := pt.left(t), pt.want(all...); !slices.Equal(got, want) {
			t.Errorf("left %q, want %q", got, want)
		}
	})
	t.Run("walk stopped", func(t *testing.T) {
		pt := newPruneTree(t)
		_, err := pt.d.Prune(func(visit func(*unix.Stat_t) bool) error {
			return pt.walk(func(*unix.Stat_t) bool { return false })
		})
		if !errors.Is(err, ErrWalkStopped) {
			t.Errorf("error %v, want ErrWalkStopped", err)
		}
		if got, want := pt.left(t), pt.want(all...); !slices.Equal(got, want) {
			t.Errorf("left %q, want %q", got, want)
		}
	})
	t.Run("tree too big", func(t *testing.T) {
		pt := newPruneTree(t)
		_, err := pt.d.Prune(func(visit func(*unix.Stat_t) bool) error {
			var st unix.Stat_t
			for range MaxPruneWalk + 1 {
				if !visit(&st) {
					return ErrWalkStopped
				}
			}
			return nil
		})
		if !errors.Is(err, errWalkTooBig) {
			t.Errorf("error %v, want errWalkTooBig", err)
		}
		if got, want := pt.left(t), pt.want(all...); !slices.Equal(got, want) {
			t.Errorf("left %q, want %q", got, want)
		}
	})
	t.Run("stored meanwhile", func(t *testing.T) {
		pt := newPruneTree(t)
		k := Key{Dev: 7, Ino: 8, Size: 1}
		if _, err := pt.d.Prune(func(visit func(*unix.Stat_t) bool) error {
			pt.d.Store(k, Sum{2}) // a file of the tree the walk has passed already
			return pt.walk(visit)
		}); err != nil {
			t.Fatal(err)
		}
		pt.entries["new"] = entryName(k.id())
		if got, want := pt.left(t), pt.want("keep", "sub/deep", "new"); !slices.Equal(got, want) {
			t.Errorf("left %q, want %q", got, want)
		}
	})
}

// TestPruneIfDue: once every PruneEvery, by one process at a time.
func TestPruneIfDue(t *testing.T) {
	pt := newPruneTree(t)
	logged := 0
	log := func(string, ...any) { logged++ }

	// Another process is pruning: nothing done, look again later.
	other := openTestDisk(t, pt.cache)
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: pruneLock, Len: 1}
	if err := unix.FcntlFlock(uintptr(other.lock), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	if wait := pt.d.pruneIfDue(pt.walk, log); wait != pruneBusyRetry || len(pt.left(t)) != 8 {
		t.Fatalf("while another prunes: wait %v, %d files left", wait, len(pt.left(t)))
	}
	lk.Type = unix.F_UNLCK
	unix.FcntlFlock(uintptr(other.lock), unix.F_OFD_SETLK, &lk)

	// Never pruned: due at once.
	if wait := pt.d.pruneIfDue(pt.walk, log); wait != PruneEvery || logged != 1 {
		t.Fatalf("first: wait %v, %d log lines", wait, logged)
	}
	if got, want := pt.left(t), pt.want("keep", "sub/deep"); !slices.Equal(got, want) {
		t.Fatalf("left %q, want %q", got, want)
	}
	// Pruned just now, here or by another process: not again before
	// PruneEvery.
	os.Remove(filepath.Join(pt.root, "keep"))
	os.Remove(filepath.Join(pt.root, "keep-link"))
	for _, d := range []*Disk{pt.d, other} {
		if wait := d.pruneIfDue(pt.walk, log); wait <= PruneEvery-time.Minute || wait > PruneEvery {
			t.Fatalf("again: wait %v", wait)
		}
	}
	if got, want := pt.left(t), pt.want("keep", "sub/deep"); !slices.Equal(got, want) {
		t.Fatalf("pruned again before PruneEvery: left %q", got)
	}
	// A day later: due.
	day := time.Now().Add(-PruneEvery - time.Second)
	os.Chtimes(filepath.Join(pt.cache, pruneStamp), day, day)
	if wait := other.pruneIfDue(pt.walk, log); wait != PruneEvery {
		t.Fatalf("a day later: wait %v", wait)
	}
	if got, want := pt.left(t), pt.want("sub/deep"); !slices.Equal(got, want) {
		t.Fatalf("a day later: left %q, want %q", got, want)
	}
}

// TestCachePrunes: a Cache with Disk and Walk prunes at once when due,
// and Close stops it.
func TestCachePrunes(t *testing.T) {
	pt := newPruneTree(t)
	c := New(Options{Disk: pt.d, Walk: pt.walk})
	defer c.Close()
	want := pt.want("keep", "sub/deep")
	for start := time.Now(); !slices.Equal(pt.left(t), want); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("not pruned: left %q, want %q", pt.left(t), want)
		}
	}
}

// TestPruneKeepsRestored: an entry replaced by a new version of its file
// as soon as the prune has begun stays. The kernel dates files with a
// clock that lags the one time.Now reads by up to a tick, so an entry
// stored just after the prune began may look older than its start.
func TestPruneKeepsRestored(t *testing.T) {
	for range 10 {
		pt := newPruneTree(t)
		changed := filepath.Join(pt.root, "changed")
		if _, err := pt.d.Prune(func(visit func(*unix.Stat_t) bool) error {
			if err := pt.walk(visit); err != nil {
				return err
			}
			// The changed file hashed again, its entry replaced.
			var st unix.Stat_t
			if err := unix.Lstat(changed, &st); err != nil {
				return err
			}
			return pt.d.Store(KeyOf(&st), Sum{3})
		}); err != nil {
			t.Fatal(err)
		}
		if got, want := pt.left(t), pt.want("keep", "changed", "sub/deep"); !slices.Equal(got, want) {
			t.Fatalf("left %q, want %q", got, want)
		}
	}
}

// TestPruneStampInTheFuture: a stamp dated after now (written while the
// clock was wrong, or the clock stepped back since) does not put pruning
// off until that date: the directory is due at once.
func TestPruneStampInTheFuture(t *testing.T) {
	pt := newPruneTree(t)
	later := time.Now().Add(30 * 24 * time.Hour)
	stamp := filepath.Join(pt.cache, pruneStamp)
	if err := os.WriteFile(stamp, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(stamp, later, later); err != nil {
		t.Fatal(err)
	}
	if wait := pt.d.pruneIfDue(pt.walk, func(string, ...any) {}); wait != PruneEvery {
		t.Errorf("wait %v, want %v", wait, PruneEvery)
	}
	if got, want := pt.left(t), pt.want("keep", "sub/deep"); !slices.Equal(got, want) {
		t.Errorf("left %q, want %q", got, want)
	}
}

// walkAs walks pt's tree as the user uid (a worker's dropped user), then
// replays what it saw to visit as root (which may read the cache).
func (pt *pruneTree) walkAs(t *testing.T, uid int) Walk {
	return func(visit func(*unix.Stat_t) bool) error {
		var seen []unix.Stat_t
		if err := syscall.Setresuid(-1, uid, -1); err != nil {
			t.Fatal(err)
		}
		err := pt.walk(func(st *unix.Stat_t) bool { seen = append(seen, *st); return true })
		if err := syscall.Setresuid(-1, 0, -1); err != nil {
			panic(err) // the rest of the tests would run as uid
		}
		if err != nil {
			return err
		}
		for i := range seen {
			if !visit(&seen[i]) {
				return ErrWalkStopped
			}
		}
		return nil
	}
}

// TestPruneDirectoryPermissions: the walk runs as the worker's user. A
// directory it may search but not read has files that can be served (by
// name) but not listed: their entries cannot be judged, so nothing is
// removed. One it may read but not search has files that cannot be
// served: it is left out (their entries go), and the rest pruned.
func TestPruneDirectoryPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to walk as another user")
	}
	const nobody = 65534
	for _, tc := range []struct {
		mode    os.FileMode
		wantErr bool
		left    []string
	}{
		{0o711, true, []string{"keep", "gone", "changed", "sub/deep", "damaged"}},
		{0o744, false, []string{"keep"}},
	} {
		t.Run(fmt.Sprintf("%o", tc.mode), func(t *testing.T) {
			pt := newPruneTree(t)
			if err := os.Chmod(pt.root, 0o755); err != nil {
				t.Fatal(err)
			}
			sub := filepath.Join(pt.root, "sub")
			if err := os.Chmod(sub, tc.mode); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(sub, 0o755) })
			_, err := pt.d.Prune(pt.walkAs(t, nobody))
			if (err != nil) != tc.wantErr {
				t.Errorf("error %v, want one: %v", err, tc.wantErr)
			}
			if got, want := pt.left(t), pt.want(tc.left...); !slices.Equal(got, want) {
				t.Errorf("left %q, want %q", got, want)
			}
		})
	}
}

// TestPruneSkipsFilesBeingHashed: the entry of a file that a worker (this
// process or another) is hashing stays: the worker may replace it with
// the new version's at any moment, between the prune's look at the entry
// and its removal.
func TestPruneSkipsFilesBeingHashed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		other bool
	}{{"another process", true}, {"this process", false}} {
		t.Run(tc.name, func(t *testing.T) {
			pt := newPruneTree(t)
			hasher := pt.d
			if tc.other {
				hasher = openTestDisk(t, pt.cache)
			}
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(pt.root, "changed"), &st); err != nil {
				t.Fatal(err)
			}
			unlock, ok, err := hasher.TryLock(KeyOf(&st))
			if !ok || err != nil {
				t.Fatalf("lock: %v %v", ok, err)
			}
			defer unlock()
			if _, err := pt.d.Prune(pt.walk); err != nil {
				t.Fatal(err)
			}
			if got, want := pt.left(t), pt.want("keep", "changed", "sub/deep"); !slices.Equal(got, want) {
				t.Errorf("left %q, want %q", got, want)
			}
		})
	}
}

// TestPruneKeepsWhatIsNotAnEntry: a file whose name looks like an
// entry's but whose bytes are not one (a checksum list "2024-12.sha256"
// in a directory given as digest_cache by mistake, the served root say)
// is not the cache's to remove; a damaged entry is.
func TestPruneKeepsWhatIsNotAnEntry(t *testing.T) {
	pt := newPruneTree(t)
	past := time.Now().Add(-time.Minute)
	notOurs := filepath.Join(pt.cache, "2024-12.sha256")
	if err := os.WriteFile(notOurs, []byte("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  release.iso\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(notOurs, past, past)
	if _, err := pt.d.Prune(pt.walk); err != nil {
		t.Fatal(err)
	}
	pt.entries["not ours"] = "2024-12.sha256"
	if got, want := pt.left(t), pt.want("keep", "sub/deep", "not ours"); !slices.Equal(got, want) {
		t.Errorf("left %q, want %q", got, want)
	}
}

// TestPruneKeepsOtherFileSystems: the entries of a file system on which
// the walk finds no file stay (damaged ones aside): the walk cannot judge
// them. That is the whole cache when the served root is a mount point
// whose file system is not mounted yet (the walk sees an empty
// directory), or a part of it when a file system mounted below the root
// is not.
func TestPruneKeepsOtherFileSystems(t *testing.T) {
	all := []string{"keep", "gone", "changed", "sub/deep"}
	for _, tc := range []struct {
		name string
		walk func(pt *pruneTree) Walk
	}{
		{"empty mount point", func(pt *pruneTree) Walk {
			empty, err := unix.Open(t.TempDir(), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(empty) })
			return func(visit func(*unix.Stat_t) bool) error { return WalkDir(empty, visit) }
		}},
		{"another file system", func(pt *pruneTree) Walk {
			return func(visit func(*unix.Stat_t) bool) error {
				return pt.walk(func(st *unix.Stat_t) bool {
					other := *st
					other.Dev++
					return visit(&other)
				})
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt := newPruneTree(t)
			if _, err := pt.d.Prune(tc.walk(pt)); err != nil {
				t.Fatal(err)
			}
			if got, want := pt.left(t), pt.want(all...); !slices.Equal(got, want) {
				t.Errorf("left %q, want %q", got, want)
			}
		})
	}
}

// TestPruneKeepsWhatItCannotRead: the entry of a file the walk found but
// could not read (the worker is out of descriptors, say) is not judged
// stale for that; those of files it did not find go.
func TestPruneKeepsWhatItCannotRead(t *testing.T) {
	pt := newPruneTree(t)
	_, err := pt.d.Prune(func(visit func(*unix.Stat_t) bool) error {
		var seen []unix.Stat_t
		if err := pt.walk(func(st *unix.Stat_t) bool { seen = append(seen, *st); return true }); err != nil {
			return err
		}
		// No descriptor left: the lowest free one is the limit.
		free, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		unix.Close(free)
		var old unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
			return err
		}
		low := old
		low.Cur = uint64(free)
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
			return err
		}
		defer unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
		for i := range seen {
			visit(&seen[i])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pt.left(t), pt.want("keep", "changed", "sub/deep"); !slices.Equal(got, want) {
		t.Errorf("left %q, want %q", got, want)
	}
}
