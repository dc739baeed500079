package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/zfs-serve/zfs-serve/internal/human"
)

// fetchFile downloads into Dst's .part and renames it to Dst once complete
// and verified.
func (d *download) fetchFile(ctx context.Context) (Result, error) {
	j := d.j
	if fi, err := os.Stat(j.Dst); err == nil && !fi.Mode().IsRegular() {
		// Found now, not by the rename after the whole download; and a
		// device, a FIFO or a socket is never replaced by a file renamed
		// over it (write into one with Job.Out).
		return d.result(), &LocalError{Op: "write", Path: j.Dst, Err: notRegular(fi.Mode())}
	}
	if err := d.learn(ctx); err != nil {
		return d.result(), err
	}
	d.expectDigest()
	if d.expected() != "" && d.c.opts.Recv == RecvAuto && !d.wantPrealloc() {
		// One stream, hashed: in copy mode the bytes are in memory, hashed
		// as they are written; splice would have them read back. Measured
		// (docs/ZFETCH.md) copy is as fast or faster then.
		d.mode = RecvCopy
	}
	size := d.size.Load()
	if j.Resume {
		complete, err := d.complete()
		if err != nil {
			return d.result(), err
		}
		if complete {
			d.resumed.Store(size)
			d.done.Store(size)
			d.emit(Event{Kind: EventStart, Done: size})
			d.emit(Event{Kind: EventDone, Done: size, Skipped: true, SHA256: j.SHA256})
			return Result{Size: size, Done: size, Resumed: size, Skipped: true}, nil
		}
	}
	p, err := openPart(j.PartName())
	if err != nil {
		return d.result(), err
	}
	defer p.release()
	var (
		pending  [][2]int64
		prealloc bool
		resume   bool
		why      string
	)
	if j.Resume {
		// Only now, under the lock: another zfetch may have been writing
		// (or renaming) this .part a moment ago.
		var mirrors []string
		pending, prealloc, resume, mirrors, why = p.resumeState(d.refIdent(), d.refSource())
		if resume {
			if why = d.resumedMirrors(p.path, mirrors); why != "" {
				resume = false
			}
		}
	}
	if !resume {
		pending, prealloc = wholeFile(size), false
		if err := p.truncate(); err != nil {
			return d.result(), err
		}
	}
	d.part = p
	d.sink = newSink(p.f, false)
	p.setPrealloc(prealloc || d.wantPrealloc())
	d.workers = make([]atomic.Pointer[segment], d.c.opts.Conns*len(d.srcs))
	d.setSegments(pending)
	d.resumed.Store(d.done.Load())
	if err := d.prepare(); err != nil {
		return d.result(), err
	}
	d.newHasher()
	defer func() { d.hash.Load().stop() }()
	d.emit(Event{Kind: EventStart, Done: d.resumed.Load()})
	if why != "" {
		d.emit(Event{Kind: EventRestart, Err: errors.New(why)})
	}
	stop := d.background(p.isPrealloc())
	err = d.run(ctx)
	stop()
	if err == nil {
		err = d.finish()
	}
	if err != nil {
		var ve *VerifyError
		res := d.result()
		if p.f != nil && !errors.As(err, &ve) {
			d.checkpoint()
			res.Part = p.path
		}
		return res, err
	}
	d.emit(Event{Kind: EventDone, Done: d.done.Load(), SHA256: d.expected()})
	return d.result(), nil
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
		want = d.expected()
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

// wantPrealloc reports whether the .part should be full length from the
// start, written at offsets: for mmap, and for a file big enough to be
// split among several connections.
func (d *download) wantPrealloc() bool {
	return d.mode == RecvMmap || (d.c.opts.Conns*len(d.srcs) > 1 && d.size.Load() >= 2*MinSplit)
}

// prepare saves the resume state and, for preallocated downloads, sizes the
// .part: state first, so that a crash in between never leaves a
// full-length .part that looks complete.
func (d *download) prepare() error {
	p := d.part
	if err := p.save(d.state); err != nil {
		return err
	}
	if !p.isPrealloc() {
		return nil
	}
	return p.allocate(d.size.Load())
}

// state is the resume state as of now.
func (d *download) state() *State {
	d.mu.Lock()
	ref, sch := d.ref, d.sch
	d.mu.Unlock()
	st := &State{Source: d.refSource(), Size: d.size.Load(), MTime: ref.MTime, ETag: ref.ETag, SHA256: ref.SHA256,
		Prealloc: d.part.isPrealloc(), Pending: [][2]int64{}}
	if sch != nil {
		st.Pending = append(st.Pending, sch.pending()...)
	}
	for _, s := range d.srcs {
		if u := s.t.String(); s.hasSupplied() && u != st.Source && !slices.Contains(st.Mirrors, u) {
			st.Mirrors = append(st.Mirrors, u)
		}
	}
	return st
}

// checkpoint saves the resume state; a failure only costs progress.
// While the .part is stale it saves nothing: the last saved state (the old
// version's) stays true of the bytes, and a resume will start over.
func (d *download) checkpoint() {
	if d.part != nil {
		d.part.save(d.state)
	}
}

// finish verifies the .part, gives it the server's mtime and renames it.
// A .part whose digest is wrong is removed: it is not the file, and a
// later resume must not keep it.
func (d *download) finish() error {
	if err := d.verifyCount(); err != nil {
		return err
	}
	p := d.part
	if err := p.checkSize(d.size.Load()); err != nil {
		return err
	}
	if err := d.verifyDigest(); err != nil {
		var ve *VerifyError
		if errors.As(err, &ve) {
			p.discard()
			return &VerifyError{Msg: fmt.Sprintf("%s (removed %s)", ve.Msg, p.path)}
		}
		return err
	}
	return p.install(d.j.Dst, d.refIdent().MTime)
}

// notRegular is the error for a destination that is not a regular file:
// "is a directory", "is a character device, not a regular file".
func notRegular(m os.FileMode) error {
	if m.IsDir() {
		return errors.New("is a directory")
	}
	return fmt.Errorf("is %s, not a regular file", human.FileKind(m))
}

// resumedMirrors looks at the mirrors whose bytes may be in the .part at
// path being resumed (State.Mirrors): each that this run uses is asked
// again before the rename, like one that supplied bytes in this run; one
// that is left out already (its file differs from the reference now: it
// changed since, maybe while it was sending) makes the resume start over,
// and resumedMirrors says why.
func (d *download) resumedMirrors(path string, mirrors []string) string {
	for _, s := range d.srcs {
		if !slices.Contains(mirrors, s.t.String()) {
			continue
		}
		if s.isDropped() {
			return fmt.Sprintf("%s has bytes from %s, which is no longer used; starting over", path, s.t)
		}
		s.markSupplied()
	}
	return ""
}
