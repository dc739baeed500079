package fetch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// download is one Fetch in progress.
type download struct {
	c    *Client
	j    Job
	srcs []*source // the URL, then its mirrors

	dropMu sync.Mutex // one drop decision at a time

	size    atomic.Int64 // -1 until known
	resumed atomic.Int64 // bytes the .part had when this run started

	// part is the .part of a download to a file (Job.Dst), nil for a
	// stream (Job.Out).
	part *partFile
	sink *sink // where the bytes go: part's file, or Job.Out

	// sink, workers, mode and noRanges are set by the download's
	// goroutine (Fetch's) before the workers start, and changed only
	// between runs of workers (runOnce), never while one runs.
	mode     RecvMode
	noRanges bool // the one source left ignores ranges: one stream

	hash atomic.Pointer[hasher]

	// mu guards ref, expect, expectFrom and sch: every read and write
	// holds it. The download's goroutine changes them (a restart, a
	// digest a server announced late) while the checkpointer, the
	// Progress ticker and the workers read them.
	mu sync.Mutex
	// ref is the file's identity the download is planned with: the
	// reference source's answer.
	ref ident
	// expect is the SHA-256 (hex) the content must have, "" for none;
	// expectFrom says whose it is (Job.SHA256, or a server's URL).
	expect, expectFrom string
	sch                *sched

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
		if d.j.Out == nil && d.j.OpenOut == nil {
			return d.result(), errors.New("fetch: a Job needs Dst, Out or OpenOut")
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
	if d.c.opts.NoVerify || d.j.SHA256 != "" || d.part == nil || d.part.f == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.expect != "" {
		return
	}
	d.expect, d.expectFrom = sha, s.t.String()
	sch, size := d.sch, d.size.Load()
	h := newHasher(d.part.f, func() int64 { return sch.frontier(size) })
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

func wholeFile(size int64) [][2]int64 {
	if size <= 0 {
		return nil
	}
	return [][2]int64{{0, size}}
}

// setSegments plans the pending ranges: split among the connections when
// the .part is preallocated (so they can be written at their offsets).
// Whether it is must be decided before.
func (d *download) setSegments(pending [][2]int64) {
	// Work stealing only among mirrors, whose speeds differ: a steal cuts
	// the victim's response short, and the bytes in flight beyond the cut
	// (socket buffers: megabytes) are sent for nothing. One source's
	// connections keep their ranges, so a resume costs exactly the bytes
	// missing.
	ranged := d.part != nil && d.part.isPrealloc() && !d.noRanges
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

// sched is the download's current plan of segments.
func (d *download) sched() *sched {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sch
}

// newHasher sets up the hash of the .part when a digest is to be checked.
func (d *download) newHasher() {
	d.hash.Load().stop()
	d.hash.Store(nil)
	d.mu.Lock()
	sch, want := d.sch, d.expect
	d.mu.Unlock()
	if want == "" || d.part == nil || d.part.f == nil {
		return
	}
	size := d.size.Load()
	d.hash.Store(newHasher(d.part.f, func() int64 { return sch.frontier(size) }))
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
