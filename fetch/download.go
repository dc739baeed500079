package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/wire"
)

// segment is a byte range of the file one connection fetches: [start,
// end), of which [start, pos) is in place.
type segment struct {
	start, end int64
	pos        atomic.Int64
}

func newSegments(ranges [][2]int64) []*segment {
	segs := make([]*segment, len(ranges))
	for i, r := range ranges {
		segs[i] = &segment{start: r[0], end: r[1]}
		segs[i].pos.Store(r[0])
	}
	return segs
}

// download is one Fetch in progress.
type download struct {
	c    *Client
	j    Job
	mode RecvMode

	size  atomic.Int64 // -1 until known
	mtime int64

	part, statePath string
	f               *os.File
	sink            *sink
	prealloc        bool
	resumed         atomic.Int64 // bytes the .part had when this run started

	mu sync.Mutex // guards segs, mtime, prealloc and stale against the checkpointer (writes happen during restarts)
	// stale is set from the moment the file is found changed on the
	// server until restart has emptied the .part: in between, the identity
	// (learnt anew) and the bytes (of the old version) disagree, and a
	// checkpoint would tell a later -c to join the two.
	stale   bool
	segs    []*segment
	workers []atomic.Pointer[segment] // what each connection is on, for ConnProgress

	done     atomic.Int64 // bytes in place
	received atomic.Int64 // bytes received by this run
}

func (d *download) emit(e Event) {
	e.Time = d.c.opts.Now()
	e.File, e.Name, e.Source = d.j.ID, d.j.Name, d.j.Src.String()
	e.Total = d.size.Load()
	e.Resumed = d.resumed.Load()
	d.c.emit(e)
}

// report emits a retry event (Client.retry fills Kind, Attempt, Delay, Err).
func (d *download) report(e Event) {
	e.Done = d.done.Load()
	d.emit(e)
}

func (d *download) result() Result {
	return Result{Size: d.size.Load(), Done: d.done.Load(), Resumed: d.resumed.Load(), Received: d.received.Load()}
}

func (d *download) fetch(ctx context.Context) (Result, error) {
	d.size.Store(-1)
	if d.j.Dst == "" {
		if d.j.Out == nil {
			return d.result(), errors.New("fetch: a Job needs Dst or Out")
		}
		return d.fetchStream(ctx)
	}
	return d.fetchFile(ctx)
}

// learn records the file's identity.
func (d *download) learn(ctx context.Context) error {
	size, mtime, err := d.c.identity(ctx, d.j.Src, d.report)
	if err != nil {
		return err
	}
	d.size.Store(size)
	d.mu.Lock()
	d.mtime = mtime
	d.mu.Unlock()
	return nil
}

// fetchStream writes the file to j.Out in order: no .part, no resume across
// runs, but retries resume at the next byte.
func (d *download) fetchStream(ctx context.Context) (Result, error) {
	if err := d.learn(ctx); err != nil {
		return d.result(), err
	}
	d.sink = newSink(d.j.Out, true)
	if d.mode == RecvMmap || d.mode == RecvAuto {
		d.mode = streamRecv(d.sink.fd)
	}
	if d.j.SHA256 != "" {
		// The digest needs the bytes in user memory: copy mode, hashing in order.
		d.mode, d.sink.hash = RecvCopy, sha256.New()
	}
	d.setSegments(wholeFile(d.size.Load()))
	d.workers = make([]atomic.Pointer[segment], 1)
	d.emit(Event{Kind: EventStart})
	stop := d.background(false)
	err := d.run(ctx)
	stop()
	if err != nil {
		return d.result(), err
	}
	if err := d.verifyCount(); err != nil {
		return d.result(), err
	}
	if d.sink.hash != nil {
		if got := hex.EncodeToString(d.sink.hash.Sum(nil)); got != d.j.SHA256 {
			return d.result(), &VerifyError{Msg: fmt.Sprintf("sha256 of %s is %s, expected %s", d.j.Src.Path, got, d.j.SHA256)}
		}
	}
	d.emit(Event{Kind: EventDone, Done: d.done.Load(), SHA256: d.j.SHA256})
	return d.result(), nil
}

// streamRecv is the receive mode for a stream when the choice is zfetch's
// (RecvAuto, or RecvMmap, which a stream cannot use): splice into a pipe, a file or a
// socket, where the pages move (or are copied once, in the kernel), read
// and write into a character device (a terminal, /dev/null), where splice
// has nothing to move them to. Measured on loopback (docs/ZFETCH.md):
// into a pipe splice is twice as fast as read and write, into /dev/null
// 10% slower.
func streamRecv(fd int) RecvMode {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR {
		return RecvCopy
	}
	return RecvSplice
}

func wholeFile(size int64) [][2]int64 {
	if size <= 0 {
		return nil
	}
	return [][2]int64{{0, size}}
}

func (d *download) setSegments(pending [][2]int64) {
	if d.c.opts.Conns > 1 && d.sink != nil && !d.sink.stream && d.prealloc {
		pending = split(pending, d.c.opts.Conns, MinSplit)
	}
	segs := newSegments(pending)
	d.mu.Lock()
	d.segs = segs
	d.mu.Unlock()
	var have int64
	for _, r := range pending {
		have += r[1] - r[0]
	}
	d.done.Store(d.size.Load() - have)
}

func (d *download) wantPrealloc() bool {
	return d.mode == RecvMmap || (d.c.opts.Conns > 1 && d.size.Load() >= 2*MinSplit)
}

// fetchFile downloads into Dst+".part" and renames it to Dst once complete
// and verified.
func (d *download) fetchFile(ctx context.Context) (Result, error) {
	j := d.j
	d.part = j.Dst + ".part"
	d.statePath = d.part + StateSuffix
	if fi, err := os.Stat(j.Dst); err == nil && fi.IsDir() {
		// Found now, not by the rename after the whole download.
		return d.result(), &LocalError{Op: "write", Path: j.Dst, Err: errors.New("is a directory")}
	}
	if err := d.learn(ctx); err != nil {
		return d.result(), err
	}
	size := d.size.Load()
	var pending [][2]int64
	resume, why := false, ""
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
	f, lock, err := openPart(d.part)
	if err != nil {
		return d.result(), err
	}
	// The lock outlives f (closed before the rename in finish): it goes
	// when the download is over, renamed or not.
	defer lock.Close()
	if j.Resume {
		// Only now, under the lock: another zfetch may have been writing
		// (or renaming) this .part a moment ago.
		pending, d.prealloc, resume, why = d.resumeState()
	}
	if !resume {
		pending = wholeFile(size)
		d.setPrealloc(false)
	}
	d.f = f
	d.sink = newSink(f, false)
	if !resume {
		if err := f.Truncate(0); err != nil {
			f.Close()
			return d.result(), &LocalError{Op: "truncate", Path: d.part, Err: unwrapPathErr(err)}
		}
	}
	d.setSegments(pending)
	d.resumed.Store(d.done.Load())
	if err := d.prepare(); err != nil {
		f.Close()
		return d.result(), err
	}
	d.setSegments(pending) // again: prepare may have switched to preallocation, which splits
	d.workers = make([]atomic.Pointer[segment], d.c.opts.Conns)
	d.emit(Event{Kind: EventStart, Done: d.resumed.Load()})
	if why != "" {
		d.emit(Event{Kind: EventRestart, Err: errors.New(why)})
	}
	stop := d.background(d.prealloc)
	err = d.run(ctx)
	stop()
	if err == nil {
		err = d.finish()
	}
	if err != nil {
		var ve *VerifyError
		res := d.result()
		if d.f != nil {
			if !errors.As(err, &ve) {
				d.checkpoint()
				res.Part = d.part
			}
			d.f.Close()
		}
		return res, err
	}
	d.emit(Event{Kind: EventDone, Done: d.done.Load(), SHA256: j.SHA256})
	return d.result(), nil
}

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
// tree that holds both "x" and "x.part", another file.
func (d *download) complete() (bool, error) {
	fi, err := os.Stat(d.j.Dst)
	if err != nil || !fi.Mode().IsRegular() {
		return false, nil
	}
	if fi.Size() != d.size.Load() || !sameMTime(fi.ModTime(), d.mtime) {
		return false, nil
	}
	if d.j.SHA256 != "" {
		sum, err := fileSHA256(d.j.Dst)
		if err != nil {
			return false, err
		}
		return sum == d.j.SHA256, nil
	}
	return true, nil
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
	size := d.size.Load()
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
	case st.Size != size || st.MTime != d.mtime:
		why = fmt.Sprintf("the file changed on the server since %s was started (%s); starting over",
			d.part, describeChange(st.Size, st.MTime, size, d.mtime))
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

// describeChange says what differs between two versions of a file.
func describeChange(size0, mtime0, size1, mtime1 int64) string {
	var parts []string
	if size0 != size1 {
		parts = append(parts, fmt.Sprintf("size %d -> %d bytes", size0, size1))
	}
	if mtime0 != mtime1 {
		parts = append(parts, fmt.Sprintf("mtime %s -> %s", fmtTime(mtime0), fmtTime(mtime1)))
	}
	return strings.Join(parts, ", ")
}

func fmtTime(ns int64) string { return time.Unix(0, ns).UTC().Format("2006-01-02T15:04:05.999999999Z") }

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
	st := &State{Source: d.j.Src.String(), Size: d.size.Load(), MTime: d.mtime, Prealloc: d.prealloc, Pending: [][2]int64{}}
	for _, s := range d.segs {
		if p := s.pos.Load(); p < s.end {
			st.Pending = append(st.Pending, [2]int64{p, s.end})
		}
	}
	d.mu.Unlock()
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

// background starts the Progress ticker and, for preallocated files, the
// checkpointer. The returned func stops both.
func (d *download) background(checkpoints bool) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(d.c.opts.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				d.emit(Event{Kind: EventProgress, Done: d.done.Load(), Conns: d.connProgress()})
			}
		}
	})
	if checkpoints {
		wg.Go(func() {
			t := time.NewTicker(d.c.opts.CheckpointEvery)
			defer t.Stop()
			for {
				select {
				case <-quit:
					return
				case <-t.C:
					d.checkpoint()
				}
			}
		})
	}
	return func() {
		close(quit)
		wg.Wait()
	}
}

func (d *download) connProgress() []ConnProgress {
	if len(d.workers) < 2 {
		return nil
	}
	cs := make([]ConnProgress, len(d.workers))
	for i := range d.workers {
		if s := d.workers[i].Load(); s != nil {
			cs[i] = ConnProgress{Start: s.start, Pos: s.pos.Load(), End: s.end}
		}
	}
	return cs
}

// run fetches the pending segments, starting over (within limits) when the
// file changes on the server: seen in a response header, or by recheck once
// every byte is in.
func (d *download) run(ctx context.Context) error {
	for restarts := 0; ; restarts++ {
		err := d.runOnce(ctx)
		if err == nil {
			err = d.recheck(ctx)
		}
		ce, changed := errorsAsChanged(err)
		if !changed {
			return err
		}
		had := d.done.Load()
		if d.sink.stream && had > 0 {
			return &VerifyError{Msg: fmt.Sprintf("%s; %d bytes of the old version were already written to the output", ce.msg, had)}
		}
		if restarts >= maxRestarts {
			return &VerifyError{Msg: fmt.Sprintf("the file changed on the server %d times during the download", restarts+1)}
		}
		d.setStale(true) // until restart has emptied the .part
		if err := d.learn(ctx); err != nil {
			return err
		}
		if testHookRestart != nil {
			testHookRestart(d)
		}
		if err := d.restart(); err != nil {
			return err
		}
		if had > 0 || d.resumed.Load() > 0 {
			d.resumed.Store(0)
			d.emit(Event{Kind: EventRestart, Err: fmt.Errorf("%s; starting over", ce.msg)})
		}
	}
}

// recheck asks the server for the file's identity again once every byte is
// in, and returns a changedError if it is not the one the download was
// planned with. The server cuts a body short when the file changes while
// it is being sent, but not during its last chunk; and with ranges (-x),
// resumes and retries, the bytes come from several responses. A file
// changed in place keeps its name and, often, its size: only this look
// after the last byte tells that the bytes may be of two versions.
func (d *download) recheck(ctx context.Context) error {
	size, mtime, err := d.c.identity(ctx, d.j.Src, d.report)
	if err != nil {
		return err
	}
	d.mu.Lock()
	want := d.mtime
	d.mu.Unlock()
	if size != d.size.Load() || mtime != want {
		return &changedError{msg: fmt.Sprintf("the file changed on the server during the download (%s)",
			describeChange(d.size.Load(), want, size, mtime))}
	}
	return nil
}

// testHookRestart, if set, runs between learning a changed file's new
// identity and restart (tests put a checkpoint there, as the checkpointer
// might).
var testHookRestart func(d *download)

// restart throws away what was written and plans the whole (new) file.
func (d *download) restart() error {
	d.resumed.Store(0)
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
	}
	return nil
}

func isCanceled(err error) bool { return errors.Is(err, context.Canceled) }

// runOnce fetches the segments over up to Conns connections, each taking
// the next segment when done with one. The first failure stops the rest.
func (d *download) runOnce(ctx context.Context) error {
	d.mu.Lock()
	segs := d.segs
	d.mu.Unlock()
	if len(segs) == 0 {
		return nil
	}
	n := 1
	if !d.sink.stream {
		n = min(d.c.opts.Conns, len(segs))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next  atomic.Int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil || (isCanceled(first) && !isCanceled(err)) {
			first = err
		}
		mu.Unlock()
		cancel()
	}
	for i := range n {
		wg.Go(func() {
			r := &receiver{ctx: ctx, sink: d.sink, lim: d.c.lim, stall: d.c.opts.StallTimeout, blockMin: d.c.blockMin,
				speed: newSpeedMeter(d.c.opts.SpeedLimit, d.c.opts.SpeedTime)}
			defer d.workers[i].Store(nil)
			for {
				k := next.Add(1) - 1
				if k >= int64(len(segs)) {
					return
				}
				seg := segs[k]
				d.workers[i].Store(seg)
				err := d.c.retry(ctx, d.report, func() (bool, error) { return d.attempt(ctx, seg, r) })
				if err != nil {
					fail(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// attempt fetches what is left of seg over one connection.
func (d *download) attempt(ctx context.Context, seg *segment, r *receiver) (bool, error) {
	start := seg.pos.Load()
	if start >= seg.end {
		return false, nil
	}
	r.add = func(n int64) {
		seg.pos.Add(n)
		d.done.Add(n)
		d.received.Add(n)
	}
	err := d.c.withConn(ctx, d.j.Src.Addr, func(conn *Conn) error {
		pos := seg.pos.Load()
		resp, err := conn.Get(d.j.Src.Path, pos, seg.end-pos)
		if err != nil {
			var se *StatusError
			if errors.As(err, &se) && se.Status == wire.StatusRangeNotSatisfiable {
				return &changedError{msg: "the file on the server is now shorter than the bytes already received"}
			}
			return err
		}
		if resp.Size != d.size.Load() || resp.MTime != d.mtime {
			return &changedError{msg: fmt.Sprintf("the file changed on the server (%s)",
				describeChange(d.size.Load(), d.mtime, resp.Size, resp.MTime))}
		}
		r.conn = conn
		return r.receive(d.mode, pos, resp.BodyLen)
	})
	// An attempt ended for being too slow is no progress, whatever it
	// received: a server that trickles must use up the retries.
	return seg.pos.Load() > start && !isSlow(err), err
}

func (d *download) verifyCount() error {
	size := d.size.Load()
	if got := d.done.Load(); got != size {
		return &VerifyError{Msg: fmt.Sprintf("received %d bytes of %s, the server says it has %d", got, d.j.Src.Path, size)}
	}
	return nil
}

// finish verifies the .part, gives it the server's mtime and renames it.
func (d *download) finish() error {
	if err := d.verifyCount(); err != nil {
		return err
	}
	size := d.size.Load()
	fi, err := d.f.Stat()
	if err != nil {
		return &LocalError{Op: "stat", Path: d.part, Err: unwrapPathErr(err)}
	}
	if fi.Size() != size {
		return &VerifyError{Msg: fmt.Sprintf("%s is %d bytes, the server says %d", d.part, fi.Size(), size)}
	}
	if d.j.SHA256 != "" {
		sum, err := readerSHA256(io.NewSectionReader(d.f, 0, size), d.part)
		if err != nil {
			return err
		}
		if sum != d.j.SHA256 {
			d.f.Close()
			d.f = nil
			os.Remove(d.part)
			os.Remove(d.statePath)
			return &VerifyError{Msg: fmt.Sprintf("sha256 of %s is %s, expected %s (removed %s)", d.j.Src.Path, sum, d.j.SHA256, d.part)}
		}
	}
	err = d.f.Close()
	d.f = nil
	if err != nil {
		return &LocalError{Op: "close", Path: d.part, Err: unwrapPathErr(err)}
	}
	mt := time.Unix(0, d.mtime)
	if err := os.Chtimes(d.part, mt, mt); err != nil {
		return &LocalError{Op: "set mtime of", Path: d.part, Err: unwrapPathErr(err)}
	}
	if err := os.Rename(d.part, d.j.Dst); err != nil {
		return &LocalError{Op: "rename", Path: d.part, Err: unwrapPathErr(err)}
	}
	if err := os.Remove(d.statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return &LocalError{Op: "remove", Path: d.statePath, Err: unwrapPathErr(err)}
	}
	return nil
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
