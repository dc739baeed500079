package fetch

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// partFile is the .part a file download writes (TempNames), locked, and
// its resume state beside it. A download to a file opens it (openPart),
// decides what of it to keep (resumeState), saves its state as it goes
// (save) and, once every byte is in, puts it in place (install) or, when
// its bytes are not the file's, removes it (discard).
type partFile struct {
	path, statePath string

	// f is the .part, open from openPart until install or discard (nil
	// after); the download's goroutine sets and clears it while no worker
	// runs.
	f *os.File
	// lock holds the .part's flock until the download is over (release),
	// renamed or not.
	lock *os.File

	// mu guards prealloc: the download's goroutine changes it while the
	// checkpointer reads it.
	mu sync.Mutex
	// prealloc: the .part is full length and written at offsets (mmap,
	// several connections), so the state's pending list is the truth.
	prealloc bool

	// saveMu is held to save the state (save) and to change stale and
	// gone: the checkpointer and the download's goroutine save through
	// the same temporary file, so one at a time; none is under way once
	// stale is set; none comes after install or discard.
	saveMu sync.Mutex
	// stale is set from the moment the file is found changed on the
	// server until the .part has been emptied for the new version: in
	// between, the identity (learnt anew) and the bytes (of the old
	// version) disagree, and a saved state would tell a later resume to
	// join the two.
	stale bool
	gone  bool // installed or discarded: nothing to save
}

// openPart opens (creating it if need be) the .part part and takes an
// exclusive lock on it, so that two zfetch runs never write one .part at
// once: the second would truncate or overwrite what the first is writing,
// and the first would then rename a corrupt file into place. The lock is
// held through a duplicate descriptor (flock locks belong to the open file
// description, so closing f alone keeps it); release drops it.
func openPart(part string) (*partFile, error) {
	for tries := 0; ; tries++ {
		// Never through a symbolic link: one planted at the .part's name
		// (a shared folder) would have the download written over its
		// target, then the link renamed into place.
		f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o644)
		if err != nil {
			return nil, &LocalError{Op: "create", Path: part, Err: noLink(part, unwrapPathErr(err))}
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if err == unix.EWOULDBLOCK {
				err = errors.New("another zfetch is writing it")
			}
			return nil, &LocalError{Op: "lock", Path: part, Err: err}
		}
		// The lock is ours, but the file may no longer be the .part: a
		// run that held it may have renamed it into place meanwhile.
		var fst, pst unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
			f.Close()
			return nil, &LocalError{Op: "stat", Path: part, Err: err}
		}
		if fst.Mode&unix.S_IFMT != unix.S_IFREG {
			// A FIFO or a device there would be written into, then
			// renamed to the destination (with -c and a state beside
			// it, without even the truncation that fails on one).
			m := os.ModeIrregular
			if fi, err := f.Stat(); err == nil {
				m = fi.Mode() // its kind, for the message
			}
			f.Close()
			return nil, &LocalError{Op: "write", Path: part, Err: notRegular(m)}
		}
		// Lstat, not Stat: a link put at the name since the open, to this
		// very file, is not the .part either (install renames the name).
		if unix.Lstat(part, &pst) != nil || pst.Dev != fst.Dev || pst.Ino != fst.Ino {
			f.Close()
			if tries < 3 {
				continue
			}
			return nil, &LocalError{Op: "lock", Path: part, Err: errors.New("it keeps being replaced; is another zfetch writing it?")}
		}
		// O_NOFOLLOW stops a symbolic link only. A hard link planted at
		// the name would have its other file emptied and overwritten; a
		// file another user made (world-writable) would, renamed into
		// place, stay theirs to rewrite after zfetch checked it. Checked
		// after the identity, so that a .part unlinked meanwhile (no
		// link left) is retried, not refused.
		if err := notOurs(&fst); err != nil {
			f.Close()
			return nil, &LocalError{Op: "write", Path: part, Err: err}
		}
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			f.Close()
			return nil, &LocalError{Op: "lock", Path: part, Err: err}
		}
		return &partFile{path: part, statePath: stateName(part), f: f, lock: os.NewFile(uintptr(fd), part)}, nil
	}
}

// release closes the .part if it is still open, and drops the lock.
func (p *partFile) release() {
	if p.f != nil {
		p.f.Close()
		p.f = nil
	}
	p.lock.Close()
}

func (p *partFile) isPrealloc() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.prealloc
}

func (p *partFile) setPrealloc(v bool) {
	p.mu.Lock()
	p.prealloc = v
	p.mu.Unlock()
}

func (p *partFile) setStale(v bool) {
	p.saveMu.Lock()
	p.stale = v
	p.saveMu.Unlock()
}

// resumeState decides what of the .part can be kept for the file ref,
// whose URL is from: the byte ranges still missing, whether the .part is
// preallocated, and the mirrors whose bytes it may hold (State.Mirrors).
// why, if set, says why nothing can be kept.
func (p *partFile) resumeState(ref ident, from string) (pending [][2]int64, prealloc, ok bool, mirrors []string, why string) {
	fi, err := os.Stat(p.path)
	if err != nil {
		return nil, false, false, nil, ""
	}
	size := ref.Size
	st, err := readState(p.statePath)
	switch {
	case err != nil:
		why = fmt.Sprintf("%s: unusable resume state (%v); starting over", p.path, err)
	case st == nil && fi.Size() == 0:
		// Nothing to resume, nothing lost: openPart has just created it,
		// or an earlier run stopped before its first byte.
		return nil, false, false, nil, ""
	case st == nil:
		why = fmt.Sprintf("%s has no resume state (%s); starting over", p.path, p.statePath)
	case !ref.hasValidator():
		why = fmt.Sprintf("the server gives no Last-Modified, ETag or digest for the file, so %s cannot be checked against it; starting over", p.path)
	case st.Size != size || st.MTime != ref.MTime:
		why = fmt.Sprintf("the file changed on the server since %s was started (%s); starting over",
			p.path, describeChange(st.Size, st.MTime, size, ref.MTime))
	case st.ETag != "" && ref.ETag != "" && st.Source == from && st.ETag != ref.ETag:
		why = fmt.Sprintf("the file changed on the server since %s was started (ETag %s -> %s); starting over", p.path, st.ETag, ref.ETag)
	case st.SHA256 != "" && ref.SHA256 != "" && st.SHA256 != ref.SHA256:
		why = fmt.Sprintf("the file changed on the server since %s was started (sha256 %s -> %s); starting over", p.path, st.SHA256, ref.SHA256)
	case st.Prealloc && fi.Size() != size:
		why = fmt.Sprintf("%s is %d bytes, its resume state expects %d; starting over", p.path, fi.Size(), size)
	case st.Prealloc:
		return st.Pending, true, true, st.Mirrors, ""
	case fi.Size() > size:
		why = fmt.Sprintf("%s is longer than the file; starting over", p.path)
	default:
		// Written front to back: its length is what arrived.
		if fi.Size() == size {
			return [][2]int64{}, false, true, st.Mirrors, ""
		}
		return [][2]int64{{fi.Size(), size}}, false, true, st.Mirrors, ""
	}
	return nil, false, false, nil, why
}

// truncate empties the .part.
func (p *partFile) truncate() error {
	if err := p.f.Truncate(0); err != nil {
		return &LocalError{Op: "truncate", Path: p.path, Err: unwrapPathErr(err)}
	}
	return nil
}

// allocate makes the .part size bytes long, reserving the blocks (so that
// a full disk fails here, not inside a mapping) where the file system can.
func (p *partFile) allocate(size int64) error {
	fi, err := p.f.Stat()
	if err != nil {
		return &LocalError{Op: "stat", Path: p.path, Err: unwrapPathErr(err)}
	}
	if fi.Size() == size {
		return nil
	}
	if size > fi.Size() {
		if err := unix.Fallocate(int(p.f.Fd()), 0, fi.Size(), size-fi.Size()); err != nil && err != unix.EOPNOTSUPP && err != unix.ENOSYS {
			return &LocalError{Op: "allocate", Path: p.path, Err: err}
		}
	}
	if err := p.f.Truncate(size); err != nil {
		return &LocalError{Op: "size", Path: p.path, Err: unwrapPathErr(err)}
	}
	return nil
}

// save replaces the resume state with the one st returns as of now,
// unless the .part is stale, installed or discarded.
func (p *partFile) save(st func() *State) error {
	p.saveMu.Lock()
	defer p.saveMu.Unlock()
	if p.stale || p.gone {
		return nil
	}
	return writeState(p.statePath, st())
}

func (p *partFile) setGone() {
	p.saveMu.Lock()
	p.gone = true
	p.saveMu.Unlock()
}

// checkSize verifies that the .part is size bytes long.
func (p *partFile) checkSize(size int64) error {
	fi, err := p.f.Stat()
	if err != nil {
		return &LocalError{Op: "stat", Path: p.path, Err: unwrapPathErr(err)}
	}
	if fi.Size() != size {
		return &VerifyError{Msg: fmt.Sprintf("%s is %d bytes, the server says %d", p.path, fi.Size(), size)}
	}
	return nil
}

// install closes the .part, gives it mtime (Unix ns; 0: none) and renames
// it to dst, then removes its resume state.
func (p *partFile) install(dst string, mtime int64) error {
	p.setGone()
	err := p.f.Close()
	p.f = nil
	if err != nil {
		return &LocalError{Op: "close", Path: p.path, Err: unwrapPathErr(err)}
	}
	if mtime != 0 {
		if err := setMTime(p.path, mtime); err != nil {
			return &LocalError{Op: "set mtime of", Path: p.path, Err: unwrapPathErr(err)}
		}
	}
	if fi, err := os.Lstat(dst); err == nil && fi.Mode().Type()&(os.ModeDevice|os.ModeNamedPipe|os.ModeSocket) != 0 {
		// Made there during the download (fetchFile looked first). The
		// download, whole and checked, stays in the .part: said, as
		// nothing else would say where it is.
		return &LocalError{Op: "rename over", Path: dst, Err: fmt.Errorf("%w; the download is kept in %s", notRegular(fi.Mode()), p.path)}
	}
	if err := os.Rename(p.path, dst); err != nil {
		return &LocalError{Op: "rename", Path: p.path, Err: unwrapPathErr(err)}
	}
	if err := os.Remove(p.statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return &LocalError{Op: "remove", Path: p.statePath, Err: unwrapPathErr(err)}
	}
	return nil
}

// discard closes and removes the .part and its state: its bytes are not
// the file's, and a later resume must not keep them.
func (p *partFile) discard() {
	p.setGone()
	p.f.Close()
	p.f = nil
	os.Remove(p.path)
	os.Remove(p.statePath)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", &LocalError{Op: "open", Path: path, Err: unwrapPathErr(err)}
	}
	defer f.Close()
	return readerSHA256(f, path)
}

func readerSHA256(r io.Reader, name string) (string, error) {
	h := sha256.New()
	if _, err := io.CopyBuffer(h, r, make([]byte, 1<<20)); err != nil {
		return "", &LocalError{Op: "read back", Path: name, Err: unwrapPathErr(err)}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// noLink words ELOOP from opening path with O_NOFOLLOW when path is a
// symbolic link; any other error is returned as it is.
func noLink(path string, err error) error {
	if fi, lerr := os.Lstat(path); err == unix.ELOOP && lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
		return errors.New("it is a symbolic link, and zfetch writes only a .part of its own (remove the link)")
	}
	return err
}

// notOurs says why the .part whose status is st is not one zfetch may
// write: a second name (a hard link), or another user's. nil if it may.
func notOurs(st *unix.Stat_t) error {
	if st.Nlink > 1 {
		return errors.New("it has another name (a hard link), and zfetch writes only a .part of its own (remove it)")
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("it belongs to another user (uid %d), and zfetch writes only a .part of its own (remove it)", st.Uid)
	}
	return nil
}

// setMTime gives path the modification (and access) time mtime, in
// nanoseconds. Not os.Chtimes, which follows a link: one put at the name
// meanwhile (the .part's, a tree's directory's) would have its target's
// times set.
func setMTime(path string, mtime int64) error {
	ts := unix.NsecToTimespec(mtime)
	return unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}
