package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// download is one Fetch in progress.
type download struct {
	c    *Client
	j    Job
	mode RecvMode
	srcs []*source // the URL, then its mirrors

	dropMu sync.Mutex // one drop decision at a time

	size atomic.Int64 // -1 until known

	part, statePath string
	f               *os.File
	sink            *sink
	prealloc        bool
	resumed         atomic.Int64 // bytes the .part had when this run started
	noRanges        bool         // the one source left ignores ranges: one stream

	// expect is the SHA-256 (hex) the content must have, "" for none;
	// expectFrom says whose it is (--sha256, or a server's URL).
	expect, expectFrom string // guarded by mu once the run has started
	hash               atomic.Pointer[hasher]

	mu sync.Mutex // guards ref, sch, prealloc and stale against the checkpointer (writes happen during restarts)
	// ref is the file's identity the download is planned with: the
	// reference source's answer.
	ref ident
	// stale is set from the moment the file is found changed on the
	// server until restart has emptied the .part: in between, the identity
	// (learnt anew) and the bytes (of the old version) disagree, and a
	// checkpoint would tell a later -c to join the two.
	stale   bool
	sch     *sched
	workers []atomic.Pointer[segment] // what each connection is on, for ConnProgress

	done     atomic.Int64 // bytes in place
	received atomic.Int64 // bytes received by this run
}

func (d *download) emit(e Event) {
	e.Time = d.c.opts.Now()
	e.File, e.Name, e.Source = d.j.ID, d.j.Name, d.j.Src.String()
	e.Total = d.size.Load()
	e.Resumed = d.resumed.Load()
	if len(d.srcs) > 1 {
		e.Sources, e.SourcesLive = len(d.srcs), d.liveSources()
	}
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

func (d *download) setRef(id ident) {
	d.mu.Lock()
	d.ref = id
	d.mu.Unlock()
	d.size.Store(id.Size)
}

func (d *download) refIdent() ident {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ref
}

func (d *download) fetch(ctx context.Context) (Result, error) {
	d.size.Store(-1)
	d.srcs = []*source{{i: 0, t: d.j.Src}}
	for i, m := range d.j.Mirrors {
		d.srcs = append(d.srcs, &source{i: i + 1, t: m})
	}
	if d.j.Dst == "" {
		if d.j.Out == nil {
			return d.result(), errors.New("fetch: a Job needs Dst or Out")
		}
		return d.fetchStream(ctx)
	}
	return d.fetchFile(ctx)
}

// expectDigest decides which digest the content is checked against:
// the user's (Job.SHA256) wins; else, unless Options.NoVerify, the first
// announced by a source in use.
func (d *download) expectDigest() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.expect, d.expectFrom = "", ""
	if d.j.SHA256 != "" {
		d.expect, d.expectFrom = d.j.SHA256, "--sha256"
		return
	}
	if d.c.opts.NoVerify {
		return
	}
	for _, s := range d.srcs {
		if id, ok := s.ident(); ok && !s.isDropped() && id.SHA256 != "" {
			d.expect, d.expectFrom = id.SHA256, s.t.String()
			return
		}
	}
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
	d.expectDigest()
	if d.expect != "" {
		// The digest needs the bytes in user memory: copy mode, hashing in order.
		d.mode = RecvCopy
		d.hash.Store(newHasher(nil, nil))
	}
	d.workers = make([]atomic.Pointer[segment], len(d.srcs))
	d.setSegments(wholeFile(d.size.Load()))
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
	if err := d.verifyDigest(); err != nil {
		return d.result(), err
	}
	d.emit(Event{Kind: EventDone, Done: d.done.Load(), SHA256: d.expected()})
	return d.result(), nil
}

// expected is the digest checked, "" for none.
func (d *download) expected() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expect
}

// adoptDigest takes a digest a source announced after the download was
// planned (zfs-serve knows a file's digest only once it has hashed it: a
// STAT may have none, a later GET or the look before the rename one). The
// first becomes the one checked, unless the user gave one or digests are
// not checked; what is in place already is read back and hashed. Streams
// cannot take one late (their bytes are gone).
func (d *download) adoptDigest(s *source, sha string) {
	if sha == "" {
		return
	}
	s.mu.Lock()
	if s.id.SHA256 == "" {
		s.id.SHA256 = sha
	}
	s.mu.Unlock()
	if d.c.opts.NoVerify || d.j.SHA256 != "" || d.f == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.expect != "" {
		return
	}
	d.expect, d.expectFrom = sha, s.t.String()
	sch, size := d.sch, d.size.Load()
	h := newHasher(d.f, func() int64 { return sch.frontier(size) })
	d.hash.Store(h)
	h.start()
}

// verifyDigest checks the hash of what was written against expect.
func (d *download) verifyDigest() error {
	d.mu.Lock()
	want, from := d.expect, d.expectFrom
	d.mu.Unlock()
	h := d.hash.Load()
	if want == "" || h == nil {
		return nil
	}
	got, err := h.sum(d.size.Load())
	if err != nil {
		return err
	}
	if got != want {
		return &VerifyError{Msg: fmt.Sprintf("sha256 of %s is %s, expected %s (from %s)", d.j.Src, got, want, from)}
	}
	return nil
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

// setSegments plans the pending ranges: split among the connections when
// the file is preallocated (so they can be written at their offsets).
func (d *download) setSegments(pending [][2]int64) {
	// Work stealing only among mirrors, whose speeds differ: a steal cuts
	// the victim's response short, and the bytes in flight beyond the cut
	// (socket buffers: megabytes) are sent for nothing. One source's
	// connections keep their ranges, so a resume costs exactly the bytes
	// missing.
	ranged := d.sink != nil && !d.sink.stream && d.prealloc && !d.noRanges
	steal := ranged && !d.c.noSteal && len(d.srcs) > 1
	if n := d.c.opts.Conns * len(d.srcs); n > 1 && ranged {
		pending = split(pending, n, MinSplit)
	}
	sch := newSched(newSegments(pending), steal, d.c.opts.Now)
	sch.takeover = d.mode != RecvMmap
	d.mu.Lock()
	d.sch = sch
	d.mu.Unlock()
	var have int64
	for _, r := range pending {
		have += r[1] - r[0]
	}
	d.done.Store(d.size.Load() - have)
}

func (d *download) wantPrealloc() bool {
	return d.mode == RecvMmap || (d.c.opts.Conns*len(d.srcs) > 1 && d.size.Load() >= 2*MinSplit)
}

// fetchFile downloads into Dst+".part" and renames it to Dst once complete
// and verified.
func (d *download) fetchFile(ctx context.Context) (Result, error) {
	j := d.j
	d.part = partName(j.Dst)
	d.statePath = stateName(d.part)
	if fi, err := os.Stat(j.Dst); err == nil && fi.IsDir() {
		// Found now, not by the rename after the whole download.
		return d.result(), &LocalError{Op: "write", Path: j.Dst, Err: errors.New("is a directory")}
	}
	if err := d.learn(ctx); err != nil {
		return d.result(), err
	}
	d.expectDigest()
	if d.expect != "" && d.c.opts.Recv == RecvAuto && !d.wantPrealloc() {
		// One stream, hashed: in copy mode the bytes are in memory, hashed
		// as they are written; splice would have them read back. Measured
		// (docs/ZFETCH.md) copy is as fast or faster then.
		d.mode = RecvCopy
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
	d.workers = make([]atomic.Pointer[segment], d.c.opts.Conns*len(d.srcs))
	d.setSegments(pending)
	d.resumed.Store(d.done.Load())
	if err := d.prepare(); err != nil {
		f.Close()
		return d.result(), err
	}
	d.setSegments(pending) // again: prepare may have switched to preallocation, which splits
	d.newHasher()
	defer func() { d.hash.Load().stop() }()
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
	d.emit(Event{Kind: EventDone, Done: d.done.Load(), SHA256: d.expected()})
	return d.result(), nil
}

// newHasher sets up the hash of the .part when a digest is to be checked.
func (d *download) newHasher() {
	d.hash.Load().stop()
	d.hash.Store(nil)
	d.mu.Lock()
	sch, want := d.sch, d.expect
	d.mu.Unlock()
	if want == "" || d.f == nil {
		return
	}
	size := d.size.Load()
	d.hash.Store(newHasher(d.f, func() int64 { return sch.frontier(size) }))
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
			cs[i] = ConnProgress{Start: s.start, Pos: s.pos.Load(), End: s.end.Load()}
		}
	}
	return cs
}

func (d *download) verifyCount() error {
	size := d.size.Load()
	if got := d.done.Load(); got != size {
		return &VerifyError{Msg: fmt.Sprintf("received %d bytes of %s, the server says it has %d", got, d.j.Src.Path, size)}
	}
	return nil
}

// finish verifies the .part, gives it the server's mtime and renames it.
// A .part whose digest is wrong is removed: it is not the file, and a
// later -c must not resume it.
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
	if err := d.verifyDigest(); err != nil {
		var ve *VerifyError
		if errors.As(err, &ve) {
			d.f.Close()
			d.f = nil
			os.Remove(d.part)
			os.Remove(d.statePath)
			return &VerifyError{Msg: fmt.Sprintf("%s (removed %s)", ve.Msg, d.part)}
		}
		return err
	}
	err = d.f.Close()
	d.f = nil
	if err != nil {
		return &LocalError{Op: "close", Path: d.part, Err: unwrapPathErr(err)}
	}
	if mt := d.refIdent().MTime; mt != 0 {
		t := time.Unix(0, mt)
		if err := os.Chtimes(d.part, t, t); err != nil {
			return &LocalError{Op: "set mtime of", Path: d.part, Err: unwrapPathErr(err)}
		}
	}
	if err := os.Rename(d.part, d.j.Dst); err != nil {
		return &LocalError{Op: "rename", Path: d.part, Err: unwrapPathErr(err)}
	}
	if err := os.Remove(d.statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return &LocalError{Op: "remove", Path: d.statePath, Err: unwrapPathErr(err)}
	}
	return nil
}
