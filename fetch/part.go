package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// openPart opens (creating it if need be) the .part file and takes an
// exclusive lock on it, so that two zfetch runs never write one .part at
// once: the second would truncate or overwrite what the first is writing,
// and the first would then rename a corrupt file into place. The lock is
// held through a duplicate descriptor (flock locks belong to the open file
// description, so closing f alone keeps it); close lock to release it.
func openPart(part string) (f, lock *os.File, err error) {
	for tries := 0; ; tries++ {
		f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, nil, &LocalError{Op: "create", Path: part, Err: unwrapPathErr(err)}
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if err == unix.EWOULDBLOCK {
				err = errors.New("another zfetch is writing it")
			}
			return nil, nil, &LocalError{Op: "lock", Path: part, Err: err}
		}
		// The lock is ours, but the file may no longer be the .part: a
		// run that held it may have renamed it into place meanwhile.
		var fst, pst unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
			f.Close()
			return nil, nil, &LocalError{Op: "stat", Path: part, Err: err}
		}
		if unix.Stat(part, &pst) != nil || pst.Dev != fst.Dev || pst.Ino != fst.Ino {
			f.Close()
			if tries < 3 {
				continue
			}
			return nil, nil, &LocalError{Op: "lock", Path: part, Err: errors.New("it keeps being replaced; is another zfetch writing it?")}
		}
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			f.Close()
			return nil, nil, &LocalError{Op: "lock", Path: part, Err: err}
		}
		return f, os.NewFile(uintptr(fd), part), nil
	}
}

// complete reports whether Dst is already this version of the file (same
// size and mtime, and digest if one was given). A .part beside it does not
// matter: it is either an older attempt at this same version or, in a
// tree that holds both "x" and "x.part", another file. A server digest is
// not checked against a file whose size and mtime match (it was checked
// when the file was written); without an mtime from the server (HTTP
// without Last-Modified), only a digest can tell.
func (d *download) complete() (bool, error) {
	fi, err := os.Stat(d.j.Dst)
	if err != nil || !fi.Mode().IsRegular() {
		return false, nil
	}
	ref := d.refIdent()
	if fi.Size() != ref.Size {
		return false, nil
	}
	hasMTime := !ref.Loc.IsHTTP() || ref.MTime != 0
	if hasMTime && !sameMTime(fi.ModTime(), ref.MTime) {
		return false, nil
	}
	want := d.j.SHA256
	if want == "" && !hasMTime {
		want = d.expect
	}
	if want == "" {
		return hasMTime, nil
	}
	sum, err := fileSHA256(d.j.Dst)
	if err != nil {
		return false, err
	}
	return sum == want, nil
}

// sameMTime reports whether a local file's mtime is the server's mtime
// (ns since the epoch) as the local file system stores it. zfetch sets the
// server's mtime on every file it completes, but not every file system
// keeps nanoseconds: ext4 with small inodes and some NFS servers store
// seconds, FAT two seconds, exFAT 10 ms, NTFS 100 ns, others microseconds.
// So besides an exact match, only what such a file system makes of the
// server's mtime matches: it truncated (or rounded up) to that unit,
// and only where the server's mtime has digits the local one lacks. A
// local mtime that is merely close (another version a second later) does
// not.
func sameMTime(local time.Time, server int64) bool {
	l := local.UnixNano()
	if l == server {
		return true
	}
	// NTFS and SMB keep 100 ns, exFAT 10 ms, others µs, s, or FAT's 2 s.
	for _, unit := range []int64{100, 1e3, 1e7, 1e9, 2e9} {
		if l%unit != 0 || server%unit == 0 {
			continue
		}
		down := server - server%unit // server > 0: mtimes before 1970 are not worth the care
		if l == down || l == down+unit {
			return true
		}
	}
	return false
}

// resumeState decides what of an existing .part can be kept. why, if set,
// says why it cannot.
func (d *download) resumeState() (pending [][2]int64, prealloc, ok bool, why string) {
	fi, err := os.Stat(d.part)
	if err != nil {
		return nil, false, false, ""
	}
	ref := d.refIdent()
	size := ref.Size
	st, err := readState(d.statePath)
	switch {
	case err != nil:
		why = fmt.Sprintf("%s: unusable resume state (%v); starting over", d.part, err)
	case st == nil && fi.Size() == 0:
		// Nothing to resume, nothing lost: openPart has just created it,
		// or an earlier run stopped before its first byte.
		return nil, false, false, ""
	case st == nil:
		why = fmt.Sprintf("%s has no resume state (%s); starting over", d.part, d.statePath)
	case !ref.hasValidator():
		why = fmt.Sprintf("the server gives no Last-Modified, ETag or digest for the file, so %s cannot be checked against it; starting over", d.part)
	case st.Size != size || st.MTime != ref.MTime:
		why = fmt.Sprintf("the file changed on the server since %s was started (%s); starting over",
			d.part, describeChange(st.Size, st.MTime, size, ref.MTime))
	case st.ETag != "" && ref.ETag != "" && st.Source == d.refSource() && st.ETag != ref.ETag:
		why = fmt.Sprintf("the file changed on the server since %s was started (ETag %s -> %s); starting over", d.part, st.ETag, ref.ETag)
	case st.SHA256 != "" && ref.SHA256 != "" && st.SHA256 != ref.SHA256:
		why = fmt.Sprintf("the file changed on the server since %s was started (sha256 %s -> %s); starting over", d.part, st.SHA256, ref.SHA256)
	case st.Prealloc && fi.Size() != size:
		why = fmt.Sprintf("%s is %d bytes, its resume state expects %d; starting over", d.part, fi.Size(), size)
	case st.Prealloc:
		return st.Pending, true, true, ""
	case fi.Size() > size:
		why = fmt.Sprintf("%s is longer than the file; starting over", d.part)
	default:
		// Written front to back: its length is what arrived.
		if fi.Size() == size {
			return [][2]int64{}, false, true, ""
		}
		return [][2]int64{{fi.Size(), size}}, false, true, ""
	}
	return nil, false, false, why
}

// refSource is the URL of the source whose answer is the reference.
func (d *download) refSource() string {
	ref := d.refIdent()
	for _, s := range d.srcs {
		if id, ok := s.ident(); ok && id == ref {
			return s.t.String()
		}
	}
	return d.j.Src.String()
}

// prepare saves the resume state and, for preallocated downloads, sizes the
// file: state first, so that a crash in between never leaves a
// full-length .part that looks complete.
func (d *download) prepare() error {
	if !d.prealloc && d.wantPrealloc() {
		d.setPrealloc(true)
	}
	if err := writeState(d.statePath, d.state()); err != nil {
		return err
	}
	if !d.prealloc {
		return nil
	}
	size := d.size.Load()
	fi, err := d.f.Stat()
	if err != nil {
		return &LocalError{Op: "stat", Path: d.part, Err: unwrapPathErr(err)}
	}
	if fi.Size() == size {
		return nil
	}
	// Reserve the blocks now (so a full disk fails here, not inside a
	// mapping); not every filesystem can, which is fine.
	if size > fi.Size() {
		if err := unix.Fallocate(d.sink.fd, 0, fi.Size(), size-fi.Size()); err != nil && err != unix.EOPNOTSUPP && err != unix.ENOSYS {
			return &LocalError{Op: "allocate", Path: d.part, Err: err}
		}
	}
	if err := d.f.Truncate(size); err != nil {
		return &LocalError{Op: "size", Path: d.part, Err: unwrapPathErr(err)}
	}
	return nil
}

// state is the resume state as of now.
func (d *download) state() *State {
	d.mu.Lock()
	ref, sch, prealloc := d.ref, d.sch, d.prealloc
	d.mu.Unlock()
	st := &State{Source: d.refSource(), Size: d.size.Load(), MTime: ref.MTime, ETag: ref.ETag, SHA256: ref.SHA256,
		Prealloc: prealloc, Pending: [][2]int64{}}
	if sch != nil {
		st.Pending = append(st.Pending, sch.pending()...)
	}
	return st
}

// setPrealloc changes prealloc under mu (the checkpointer reads it).
func (d *download) setPrealloc(v bool) {
	d.mu.Lock()
	d.prealloc = v
	d.mu.Unlock()
}

// checkpoint saves the resume state; a failure only costs progress.
// While the state is stale it saves nothing: the last saved state (the old
// version's) stays true of the bytes, and -c will start over.
func (d *download) checkpoint() {
	d.mu.Lock()
	stale := d.stale
	d.mu.Unlock()
	if d.statePath != "" && !stale {
		writeState(d.statePath, d.state())
	}
}

func (d *download) setStale(v bool) {
	d.mu.Lock()
	d.stale = v
	d.mu.Unlock()
}

// testHookRestart, if set, runs between learning a changed file's new
// identity and restart (tests put a checkpoint there, as the checkpointer
// might).
var testHookRestart func(d *download)

// restart throws away what was written and plans the whole (new) file.
func (d *download) restart() error {
	d.resumed.Store(0)
	d.expectDigest()
	if d.f != nil {
		if err := d.f.Truncate(0); err != nil {
			return &LocalError{Op: "truncate", Path: d.part, Err: unwrapPathErr(err)}
		}
		d.setPrealloc(false)
		d.setSegments(wholeFile(d.size.Load())) // what prepare saves: all of it is pending
		d.setStale(false)                       // empty, all pending: true of the new version
		if err := d.prepare(); err != nil {
			return err
		}
	}
	d.setSegments(wholeFile(d.size.Load()))
	d.setStale(false) // a stream: nothing was kept to disagree
	if d.f != nil {
		d.checkpoint()
		d.newHasher()
	} else if d.expected() != "" {
		d.mode = RecvCopy
		d.hash.Store(newHasher(nil, nil))
	}
	return nil
}

func isCanceled(err error) bool { return errors.Is(err, context.Canceled) }

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
