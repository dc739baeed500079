package serve

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/internal/rawcall"

	"github.com/zfs-serve/zfs-serve/wire"
)

// reqError is a request the server refuses: the status and message go to
// the client and the connection stays usable.
type reqError struct {
	status wire.Status
	kind   wire.Kind
	msg    string
	err    error // the cause, when an error of the system's is one
}

func (e *reqError) Error() string { return e.msg }

// Unwrap keeps the cause in the chain (errors.Is(err, unix.EIO)).
func (e *reqError) Unwrap() error { return e.err }

func refuse(s wire.Status, format string, args ...any) *reqError {
	return &reqError{status: s, msg: fmt.Sprintf(format, args...)}
}

// relPath turns a request path ("/a/b", "a/b", "/") into a path relative to
// the root. ".." components are refused outright, even where openat2 would
// also refuse them, so the client gets a message that says why. A path that
// ends in "/" or "/." names a directory, as in POSIX: the cleaned path keeps
// a trailing "/", so the lookup of "file/" fails with ENOTDIR instead of
// finding the file.
func relPath(p string) (string, error) {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", refuse(wire.StatusForbidden, "forbidden: %s: \"..\" would leave the served root", p)
		}
	}
	rel := strings.TrimLeft(path.Clean("/"+p), "/")
	if rel == "" {
		return ".", nil
	}
	if dirSyntax(p) {
		rel += "/"
	}
	return rel, nil
}

// dirSyntax reports whether p can only name a directory: it ends in "/" or
// its last component is ".".
func dirSyntax(p string) bool {
	return strings.HasSuffix(p, "/") || p == "." || strings.HasSuffix(p, "/.")
}

// resolveBeneath confines every lookup to the root: no "..", absolute path
// or symlink may lead out of it, and no /proc-style magic link is followed.
const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS

// rootDir is the served root, opened as the worker starts and again
// whenever its configured path comes to name another directory
// (followRoot, root.go): fd keeps its number and names that directory.
type rootDir struct {
	fd int
	// r is the fallback when openat2 is unavailable (kernels before 5.6,
	// seccomp profiles that do not know it, systemd's RestrictSUIDSGID=):
	// os.Root resolves each component itself and refuses escapes too.
	// Once the root has been followed elsewhere, followed is used instead
	// (osRoot).
	r        *os.Root
	followed atomic.Pointer[os.Root]
	// gen counts the follows: a miss opened before one is not cached
	// after it (fileCache.openAs), where the flush that follows it would
	// not find it.
	gen atomic.Uint64
	// fsp: what the file system the root is on allows (rootFS); replaced
	// as a whole when the root is followed to another one.
	fsp atomic.Pointer[rootFS]
	// rawSlow counts the raw opens in a row that took longer than
	// rawOpenSlow; at rawSlowMax, rawOff turns raw opens (and raw reads
	// of a small file's bytes) off for good (noteRawOpen).
	rawSlow atomic.Int32
	rawOff  atomic.Bool
	log     *slog.Logger // for rawOff's warning; nil: none
}

// rootFS is what the root's file system allows, probed when the root is
// opened (probeFS). Its zero value allows nothing raw.
type rootFS struct {
	// local: the root is on a file system whose cached lookups never
	// wait (rawcall.Local), so the file cache opens and revalidates with
	// raw calls the files on the root's own mount (mnt, its mount id).
	local bool
	mnt   uint64
	// cached: the kernel has RESOLVE_CACHED (5.12), so a raw lookup that
	// would read from the disk fails instead (rawcall.OpenCached).
	cached bool
	// atime: when a read updates the access time of a file on the
	// root's mount (statfs's flags), for atimeStays; dev: the root's
	// st_dev, to tell a file on another file system under the root, whose
	// mount's rule is not known, by its stat alone (sendBody).
	atime atimeRule
	dev   uint64
}

// fs is what the root's file system allows (never nil).
func (r *rootDir) fs() *rootFS {
	if f := r.fsp.Load(); f != nil {
		return f
	}
	return &rootFS{}
}

// osRoot is the os.Root of the directory the root is now.
func (r *rootDir) osRoot() *os.Root {
	if f := r.followed.Load(); f != nil {
		return f
	}
	return r.r
}

// probeLocal probes the root's file system (probeFS).
func (r *rootDir) probeLocal() { r.fsp.Store(probeFS(r.fd)) }

// probeFS says what the file system of the directory fd allows: local,
// mnt (rawcall.Local, mountID), atime, dev and cached.
func probeFS(fd int) *rootFS {
	r := &rootFS{}
	r.mnt, r.local = mountID(fd)
	r.local = r.local && rawcall.Local(fd)
	var rst unix.Stat_t
	if unix.Fstat(fd, &rst) == nil {
		r.dev = rst.Dev
	}
	var fs unix.Statfs_t
	if unix.Fstatfs(fd, &fs) == nil {
		switch {
		case fs.Flags&stNoatime != 0:
			r.atime = atimeNever
		case fs.Flags&stRelatime != 0:
			r.atime = atimeRelative
		}
	}
	if r.local && !noOpenat2.Load() {
		// An older kernel refuses the unknown flag: EINVAL.
		var st unix.Stat_t
		how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: resolveBeneath | rawcall.ResolveCached}
		err := rawcall.Lookup(fd, ".", &how, &st)
		r.cached = err == nil || err == unix.EAGAIN
	}
	if r.cached {
		rawcall.OpenProc() // the reopens' /proc/self/fd, held from the start
	}
	return r
}

// mountID is the id of the mount fd is on (statx STATX_MNT_ID, Linux
// 5.8); ok is false if the kernel does not say.
func mountID(fd int) (id uint64, ok bool) {
	var stx unix.Statx_t
	if unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID, &stx) != nil || stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, false
	}
	return stx.Mnt_id, true
}

// noOpenat2 is set the first time openat2 reports ENOSYS.
var noOpenat2 atomic.Bool

// openAt opens p beneath root. flags are added to O_CLOEXEC|O_NOCTTY.
// O_NONBLOCK is always set so that opening a FIFO never blocks the worker.
func openAt(root *rootDir, p string, flags int) (int, *unix.Stat_t, error) {
	rel, err := relPath(p)
	if err != nil {
		return -1, nil, err
	}
	flags |= unix.O_CLOEXEC
	if flags&unix.O_PATH == 0 { // openat2 refuses other flags with O_PATH
		flags |= unix.O_NOCTTY | unix.O_NONBLOCK
	}
	var fd int
	if noOpenat2.Load() {
		fd, err = openInRoot(root, rel, flags)
	} else {
		how := unix.OpenHow{Flags: uint64(flags), Resolve: resolveBeneath}
		for tries := 0; ; tries++ {
			fd, err = unix.Openat2(root.fd, rel, &how)
			// EAGAIN: a concurrent rename raced the lookup; the kernel asks to retry.
			if (err == unix.EINTR || err == unix.EAGAIN) && tries < 8 {
				continue
			}
			break
		}
		if err == unix.ENOSYS {
			noOpenat2.Store(true)
			fd, err = openInRoot(root, rel, flags)
		}
	}
	if err != nil {
		return -1, nil, openError(p, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, nil, refuse(wire.StatusInternal, "internal error: stat %s: %v", p, err)
	}
	return fd, &st, nil
}

// openInRoot is openAt's fallback through os.Root. O_PATH is replaced by
// O_RDONLY: os.Root opens the last component with O_NOFOLLOW, and an O_PATH
// open would then return the symlink itself instead of what it names.
func openInRoot(root *rootDir, rel string, flags int) (int, error) {
	if flags&unix.O_PATH != 0 {
		flags = flags&^unix.O_PATH | unix.O_RDONLY | unix.O_NOCTTY | unix.O_NONBLOCK
	}
	r := root.osRoot()
	f, err := r.OpenFile(rel, flags, 0)
	if errors.Is(err, os.ErrClosed) && root.osRoot() != r {
		// Closed as the root was followed elsewhere (followRoot).
		f, err = root.osRoot().OpenFile(rel, flags, 0)
	}
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			if errno, ok := pe.Err.(syscall.Errno); ok {
				return -1, errno
			}
			if strings.Contains(pe.Err.Error(), "escapes") {
				return -1, unix.EXDEV
			}
		}
		return -1, err
	}
	defer f.Close()
	// Our own descriptor, so the caller can close it like openat2's.
	return unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
}

func openError(p string, err error) error {
	switch {
	case errors.Is(err, unix.ENOTDIR) && dirSyntax(p):
		return refuse(wire.StatusNotFound, "not found: %s: not a directory", p)
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		return refuse(wire.StatusNotFound, "not found: %s", p)
	case errors.Is(err, unix.EXDEV):
		return refuse(wire.StatusForbidden, "forbidden: %s leads outside the served root", p)
	case errors.Is(err, unix.ELOOP):
		return refuse(wire.StatusForbidden, "forbidden: %s: too many symlinks, or a magic link", p)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return refuse(wire.StatusForbidden, "forbidden: %s: permission denied", p)
	case errors.Is(err, unix.ENAMETOOLONG):
		// Not bad framing (status 1 closes the connection): no such name can exist.
		return refuse(wire.StatusNotFound, "not found: %s: a name in it is too long", p)
	case errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV), errors.Is(err, unix.EOPNOTSUPP):
		return refuse(wire.StatusNotRegular, "not a regular file: %s", p)
	case errors.Is(err, unix.EISDIR):
		return refuse(wire.StatusNotRegular, "not a regular file: %s is a directory", p)
	case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE), errors.Is(err, unix.ENOMEM):
		return refuse(wire.StatusBusy, "busy: out of file descriptors, retry later")
	}
	e := refuse(wire.StatusInternal, "internal error: open %s: %v", p, err)
	e.err = err
	return e
}

func kindOf(st *unix.Stat_t) wire.Kind {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return wire.KindFile
	case unix.S_IFDIR:
		return wire.KindDir
	case unix.S_IFLNK:
		return wire.KindSymlink
	}
	return wire.KindOther
}

func describe(k wire.Kind) string {
	switch k {
	case wire.KindDir:
		return "a directory"
	case wire.KindOther:
		return "a FIFO, device or socket"
	}
	return k.String()
}

// openFile opens p for GET: a regular file or a refusal.
//
// What p names is looked at before it is opened for reading: an O_PATH
// descriptor first, and only a regular file is then opened, through that
// descriptor (/proc/self/fd/N names the same inode, whatever happens to p
// meanwhile). Opening a device can have side effects (a tape rewinds, a
// watchdog arms), and opening a FIFO for reading releases a writer blocked
// in open; a refused name must not do either. Without /proc (or without
// openat2, through os.Root) it falls back to opening and then looking.
func openFile(root *rootDir, p string) (int, *unix.Stat_t, error) {
	if noOpenat2.Load() || noProcReopen.Load() {
		return openRegular(root, p, unix.O_RDONLY)
	}
	fd, st, err := openRegular(root, p, unix.O_PATH)
	if err != nil {
		return -1, nil, err
	}
	rfd, err := reopen(fd)
	unix.Close(fd)
	if err == nil {
		return rfd, st, nil
	}
	// EACCES (a file this worker may not read: O_PATH does not check),
	// EMFILE... or no /proc at all (ENOENT): opening the name again gives
	// the answer, the old way, which is the way from now on without /proc.
	if err == unix.ENOENT {
		noProcReopen.Store(true)
	}
	return openRegular(root, p, unix.O_RDONLY)
}

// openRegular opens p beneath root with flags and refuses what is not a
// regular file.
func openRegular(root *rootDir, p string, flags int) (int, *unix.Stat_t, error) {
	fd, st, err := openAt(root, p, flags)
	if err != nil {
		return -1, nil, err
	}
	if kindOf(st) != wire.KindFile {
		unix.Close(fd)
		return -1, nil, notRegular(p, st)
	}
	return fd, st, nil
}

// notRegular is the refusal of p, whose stat is st, for not being a
// regular file: its kind says which (a directory's is answered by a
// redirect, an index file or a listing over HTTP).
func notRegular(p string, st *unix.Stat_t) *reqError { return refuseKind(p, kindOf(st)) }

// refuseKind is the refusal of p, which is of kind k and not a regular
// file.
func refuseKind(p string, k wire.Kind) *reqError {
	e := refuse(wire.StatusNotRegular, "not a regular file: %s is %s", p, describe(k))
	e.kind = k
	return e
}

// noProcReopen is set when /proc/self/fd cannot be opened (not mounted).
var noProcReopen atomic.Bool

// reopen opens the file behind the O_PATH descriptor fd for reading.
func reopen(fd int) (int, error) {
	var buf [32]byte
	path := strconv.AppendInt(append(buf[:0], "/proc/self/fd/"...), int64(fd), 10)
	for {
		rfd, err := unix.Open(string(path), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
		if err == unix.EINTR {
			continue
		}
		return rfd, err
	}
}

// statPath describes p without opening what it names for reading: an
// O_PATH descriptor cannot trigger a device's open side effects.
func statPath(root *rootDir, p string) (*unix.Stat_t, error) {
	fd, st, err := openAt(root, p, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	unix.Close(fd)
	return st, nil
}

func mtimeNanos(st *unix.Stat_t) int64 { return st.Mtim.Sec*1e9 + st.Mtim.Nsec }
