package serve

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/internal/rawcall"
)

// Raw opens of the open-file cache's misses (docs/ARCHITECTURE.md "Raw
// system calls"): what makes them raw, and what turns them off.

// openCached is openFile without the scheduler (rawcall.OpenCached), for
// a file whose lookup and open wait for nothing: the root on a local file
// system, the path not leaving the root's mount (RESOLVE_NO_XDEV), and
// every dentry on the way in the kernel's cache (RESOLVE_CACHED). So a
// cache miss on a hot tree makes no ordinary system call, which would
// wake the runtime's sysmon for a millisecond of polling (rawcall).
// err is nil for an open and errNoRaw where raw opens do not apply; any
// other error is the raw call's, with st filled where the walk found
// something (ENOTSUP: not a regular file). For a name the walk found
// missing (rawcall.Missing) or not a regular file, the caller answers at
// once: a 404 or a directory's redirect makes one raw lookup and nothing
// that may wait. For anything else openFile opens p (or gives the
// refusal its answer: a symlink out, say).
func openCached(root *rootDir, p string) (fd int, st unix.Stat_t, err error) {
	if rfs := root.fs(); !rfs.local || !rfs.cached || root.rawOff.Load() || noOpenat2.Load() || noProcReopen.Load() {
		return -1, st, errNoRaw
	}
	rel, err := relPath(p)
	if err != nil {
		return -1, st, errNoRaw
	}
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: resolveBeneath | unix.RESOLVE_NO_XDEV | rawcall.ResolveCached}
	start := time.Now() // the vDSO's clock: no system call
	fd, err = rawcall.OpenCached(root.fd, rel, &how, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, &st)
	root.noteRawOpen(time.Since(start))
	return fd, st, err
}

// errNoRaw: openCached does not apply to this root or path.
var errNoRaw = errors.New("no raw open")

// A raw open that takes longer than rawOpenSlow waited for something
// besides the kernel's caches, holding the worker's thread: a fanotify
// permission listener (fapolicyd, an on-access virus scanner), which
// hooks every open for reading and answers from another process, IMA
// measuring the file, fs-verity's first open of a file. rawSlowMax such
// opens in a row turn raw opens off for the root. A few alone may be the
// thread's preemption on a busy machine (a raw open takes microseconds,
// but a thread preempted in it waits for the others' time slices, a few
// milliseconds with two or three runnable threads per CPU); in a row,
// past rawOpenSlow, they are not: turning raw opens off for good on a
// false alarm would leave this worker's misses the ordinary way.
const (
	rawOpenSlow = 5 * time.Millisecond
	rawSlowMax  = 3
)

// noteRawOpen counts a raw open that took d (rawSlow, rawOff).
func (r *rootDir) noteRawOpen(d time.Duration) {
	if d <= rawOpenSlow {
		if r.rawSlow.Load() != 0 {
			r.rawSlow.Store(0)
		}
		return
	}
	if r.rawSlow.Add(1) >= rawSlowMax && r.rawOff.CompareAndSwap(false, true) && r.log != nil {
		r.log.Warn("opening files took long in raw calls (a fanotify permission listener such as fapolicyd or a virus scanner, or IMA?); files are opened the ordinary way from now on",
			"took", d, "raw_opens_in_a_row", rawSlowMax)
	}
}

// atimeRule is a mount's rule for access times.
type atimeRule uint8

const (
	atimeStrict   atimeRule = iota // every read updates it
	atimeRelative                  // relatime: when older than the last change, or a day old
	atimeNever                     // noatime
)

// statfs(2)'s flags for them (ST_NOATIME, ST_RELATIME; not in x/sys/unix).
const (
	stNoatime  = 0x400
	stRelatime = 0x1000
)

// atimeStays reports whether a read of the file of st, on root's mount,
// at now, leaves its access time as it is: a read that updates it writes
// the inode (on ext4 a journal handle, which may wait for a commit or for
// space in the journal, and the inode's block, which may have to be read
// first), so that read is not made raw. On a relatime mount the kernel
// updates it if it is not later than the file's mtime and ctime, or is a
// day old (relatime_need_update); now is the real clock, at or after the
// kernel's coarse one.
func atimeStays(root *rootFS, st *unix.Stat_t, now time.Time) bool {
	switch root.atime {
	case atimeNever:
		return true
	case atimeRelative:
		atime := time.Unix(st.Atim.Unix())
		return atime.After(time.Unix(st.Mtim.Unix())) && atime.After(time.Unix(st.Ctim.Unix())) &&
			now.Unix()-st.Atim.Sec < 24*60*60 // whole seconds, as the kernel counts
	}
	return false
}
