package fetch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// errNoRanges: a source answered a Range request with the whole file.
var errNoRanges = errors.New("the server ignores ranges (answered a Range request with the whole file)")

// errSegEnd: the segment ended (another worker took over its far part)
// before the response's body did; the connection cannot be kept.
var errSegEnd = errors.New("segment taken over")

// run fetches the pending segments, starting over (within limits) when the
// file changes on the server: seen in a response header, or by recheck once
// every byte is in.
func (d *download) run(ctx context.Context) error {
	for restarts := 0; ; {
		err := d.runOnce(ctx)
		if err == nil {
			err = d.recheck(ctx)
		}
		if errors.Is(err, errNoRanges) && !d.noRanges {
			// The one source left does not do ranges: one stream, from
			// the first byte not in place (bytes before it in the
			// response are skipped).
			d.noRanges = true
			from := d.sched().frontier(d.size.Load())
			d.setSegments([][2]int64{{from, d.size.Load()}}[:boolInt(from < d.size.Load())])
			continue
		}
		ce, changed := errorsAsChanged(err)
		if !changed {
			return err
		}
		had := d.done.Load()
		if d.part == nil && had > 0 {
			return &VerifyError{Msg: fmt.Sprintf("%s; %d bytes of the old version were already written to the output", ce.msg, had)}
		}
		if restarts >= maxRestarts {
			return &VerifyError{Msg: fmt.Sprintf("the file changed on the server %d times during the download", restarts+1)}
		}
		// The first restart is at once; the later ones wait, twice as
		// long each time (0.5 s, then 1 s): a server's open-file cache may
		// announce a file's last-seen size and mtime for a while after a
		// change (zfs-serve's open_file_cache_valid, 1 s by default),
		// while STAT already tells the new ones,
		// and restarts within that window would all see the change. A
		// writer still at work gets that time too.
		if restarts > 0 {
			if err := sleep(ctx, min(d.c.backoffBase<<restarts, d.c.backoffCap)); err != nil {
				return err
			}
		}
		restarts++
		if d.part != nil {
			d.part.setStale(true) // until restart has emptied it
		}
		for _, s := range d.srcs {
			s.mu.Lock()
			s.known, s.dropped, s.noRanges, s.supplied, s.stale = false, false, false, false, false
			s.mu.Unlock()
		}
		d.noRanges = false
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

// testHookRestart, if set, runs between learning a changed file's new
// identity and restart (tests put a checkpoint there, as the checkpointer
// might).
var testHookRestart func(d *download)

// restart throws away what was written and plans the whole (new) file.
func (d *download) restart() error {
	d.resumed.Store(0)
	d.expectDigest()
	p := d.part
	if p == nil {
		// A stream: nothing was kept.
		d.setSegments(wholeFile(d.size.Load()))
		if d.expected() != "" {
			d.mode = RecvCopy
			d.hash.Store(newHasher(nil, nil))
		}
		return nil
	}
	if err := p.truncate(); err != nil {
		return err
	}
	p.setPrealloc(d.wantPrealloc())
	d.setSegments(wholeFile(d.size.Load()))
	p.setStale(false) // empty, all pending: true of the new version
	if err := d.prepare(); err != nil {
		return err
	}
	d.newHasher()
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// recheck asks the server for the file's identity again once every byte is
// in, and returns a changedError if it is not the one the download was
// planned with. The server cuts a body short when the file changes while
// it is being sent, but not during its last chunk; and with ranges (-x),
// resumes and retries, the bytes come from several responses. A file
// changed in place keeps its name and, often, its size: only this look
// after the last byte tells that the bytes may be of two versions. With
// mirrors, the sources still in use are asked in order until one answers,
// and then every other that supplied bytes, dropped since or not (a
// mirror dropped because its file changed may have sent some bytes of the
// new version before it was seen). Those are asked at once and waited for
// learnGrace at most: one that no longer answers, refused or silent, is
// not waited for (its bytes are as verified as the digest, if any, makes
// them), so a silent mirror costs that second, not the stall timeout.
func (d *download) recheck(ctx context.Context) error {
	for _, s := range d.srcs {
		s.mu.Lock()
		stale := s.stale
		s.mu.Unlock()
		if stale {
			return &changedError{msg: fmt.Sprintf("the .part has bytes from %s, whose file now differs from the reference", s.t)}
		}
	}
	var why string
	err := d.c.retry(ctx, d.report, func() (bool, error) {
		var first error
		var ref *source // the first still in use that answered
		asked := map[*source]bool{}
		for _, s := range d.srcs {
			was, ok := s.ident()
			if !ok || s.isDropped() {
				continue
			}
			asked[s] = true
			now, err := d.c.identOnce(ctx, s.t)
			if err != nil {
				// With mirrors, another may answer.
				if first == nil {
					first = err
				}
				continue
			}
			if why = now.changedFrom(was); why != "" {
				return false, nil
			}
			d.adoptDigest(s, now.SHA256)
			ref = s
			break
		}
		if ref == nil {
			return false, first
		}
		why = d.recheckSuppliers(ctx, asked)
		return false, nil
	})
	if err != nil {
		return err
	}
	if why != "" {
		return &changedError{msg: fmt.Sprintf("the file changed on the server during the download (%s)", why)}
	}
	return nil
}

// recheckSuppliers asks, at once, every source that supplied bytes and
// was not asked yet, and says how the first that answered changed ("" if
// none did). A question still open learnGrace later is cut short.
func (d *download) recheckSuppliers(ctx context.Context, asked map[*source]bool) string {
	ctx, cancel := context.WithTimeout(ctx, learnGrace)
	defer cancel()
	type answer struct {
		s       *source
		was, id ident
		err     error
	}
	answers := make(chan answer, len(d.srcs))
	n := 0
	for _, s := range d.srcs {
		was, ok := s.ident()
		if !ok || asked[s] || !s.hasSupplied() {
			continue
		}
		n++
		go func() {
			id, err := d.c.identOnce(ctx, s.t)
			answers <- answer{s, was, id, err}
		}()
	}
	why := ""
	for range n {
		a := <-answers
		if a.err != nil || why != "" {
			continue // no longer answers, or one changed already
		}
		if why = a.id.changedFrom(a.was); why != "" {
			cancel()
			continue
		}
		if !a.s.isDropped() {
			d.adoptDigest(a.s, a.id.SHA256)
		}
	}
	return why
}

// runOnce fetches the segments: each source gets Options.Conns workers
// (connections), one for a stream; a worker takes the next segment nobody
// has, or takes over part of another's (sched). A failure that is not the
// source's alone (a local error, a refusal from the only source) stops the
// rest; a failing source's segments go to the others.
func (d *download) runOnce(ctx context.Context) error {
	sch := d.sched()
	if sch.completeNow() {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopWake := context.AfterFunc(ctx, sch.halt)
	defer stopWake()
	// learnCtx bounds a worker's first question to its source (a mirror
	// that had not answered): once the others have every byte, a mirror
	// still being asked (one that says nothing for the stall timeout) is
	// no longer waited for.
	learnCtx, learnCancel := context.WithCancel(ctx)
	defer learnCancel()
	d.hash.Load().start()
	// Waiting workers look again now and then: an owner may have become
	// slow enough to be taken over.
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				sch.wakeAll()
			case <-sch.done:
				learnCancel()
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	var (
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
	per := d.c.opts.Conns
	if d.part == nil || d.noRanges || !d.part.isPrealloc() {
		per = 1
	}
	if len(d.srcs) == 1 {
		// Small files use fewer connections (MinSplit): no more than
		// there are segments. Mirrors start all theirs, to be compared
		// and to take over.
		per = min(per, sch.count())
	}
	k := 0
	for _, s := range d.srcs {
		if s.isDropped() {
			continue
		}
		for range per {
			w := &worker{i: k, src: s, last: d.c.opts.Now()}
			k++
			if w.i >= len(d.workers) {
				continue
			}
			wg.Go(func() {
				if err := d.work(ctx, learnCtx, w, sch); err != nil {
					fail(err)
				}
			})
		}
	}
	wg.Wait()
	if first != nil {
		return first
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !sch.completeNow() {
		return errors.New("internal error: every worker stopped with bytes missing")
	}
	return nil
}

// work is one worker's loop: take a segment, fetch it, give it back;
// retry failures with backoff. It returns nil when nothing is left (the
// run is over: every byte is in, though this worker's source may never
// have answered), or the error that ended it (its source dropped or given
// up on). learnCtx (ctx, canceled once the run is over) bounds the
// question to a source that has not answered yet.
func (d *download) work(ctx, learnCtx context.Context, w *worker, sch *sched) error {
	r := &receiver{ctx: ctx, sink: d.sink, lim: d.c.lim, stall: d.c.opts.StallTimeout, blockMin: d.c.blockMin,
		speed: newSpeedMeter(d.c.opts.SpeedLimit, d.c.opts.SpeedTime)}
	for {
		if w.src.isDropped() || sch.over() {
			return nil
		}
		err := d.learnSource(learnCtx, w)
		var g *segment
		progressed := false
		if err == nil {
			g = sch.take(w, w.src.ranges() && !d.noRanges)
			if g == nil {
				return nil
			}
			d.workers[w.i].Store(g)
			// Before the first byte: a checkpoint during the attempt
			// records the source in the resume state.
			w.src.markSupplied()
			progressed, err = d.attempt(ctx, w, g, r)
			d.workers[w.i].Store(nil)
			sch.release(g)
		}
		if err == nil {
			w.fails, w.last = 0, d.c.opts.Now()
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if stop, err := d.failed(ctx, w, progressed, err, sch); stop {
			return err
		}
	}
}

// failed decides what a worker does after a failed attempt: retry after a
// delay (stop false), or stop with an error. With other sources live, an
// error that concerns this source alone (a refusal, a different or
// changed file, no ranges, retries spent) drops the source instead of
// failing the download.
func (d *download) failed(ctx context.Context, w *worker, progressed bool, err error, sch *sched) (stop bool, _ error) {
	var le *LocalError
	var ve *VerifyError
	if errors.As(err, &le) || errors.As(err, &ve) {
		return true, err
	}
	if sch.over() {
		// The other sources finished the file meanwhile: this
		// failure (or the question cut short to a source that never
		// answered) is worth neither a retry nor a warning.
		return true, nil
	}
	if w.src.isDropped() {
		return true, nil // another of its workers dropped it
	}
	_, changed := errorsAsChanged(err)
	// dropped: drop dropped the source now, or another of its workers
	// did since the check above (then the live sources left may be one,
	// and that one is another source: this error is not the download's).
	dropped := func(why error) bool { return d.drop(w.src, why) || w.src.isDropped() }
	if !Retryable(err) || changed || errors.Is(err, errNoRanges) {
		if dropped(err) {
			return true, nil
		}
		return true, err
	}
	now := d.c.opts.Now()
	if progressed {
		w.fails, w.last = 0, now
	}
	w.fails++
	delay := backoff(w.fails, d.c.backoffBase, d.c.backoffCap, d.c.rnd)
	delay = max(delay, retryAfter(err))
	giveUp := d.c.opts.Retries >= 0 && w.fails > d.c.opts.Retries
	if d.c.opts.RetryFor > 0 {
		left := d.c.opts.RetryFor - now.Sub(w.last)
		if left <= 0 {
			giveUp = true
		}
		delay = min(delay, max(left, 0))
	}
	if giveUp {
		gerr := &GiveUpError{Attempts: w.fails, Err: err}
		if dropped(gerr) {
			return true, nil
		}
		return true, gerr
	}
	e := Event{Kind: EventRetry, Attempt: w.fails, Delay: delay, Err: err}
	if len(d.srcs) > 1 {
		e.Mirror = w.src.t.String()
	}
	d.report(e)
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return true, ctx.Err()
	case <-sch.done:
	}
	return false, nil
}

func isCanceled(err error) bool { return errors.Is(err, context.Canceled) }

// retryAfter is the delay a server asked for (HTTP Retry-After), or 0.
func retryAfter(err error) time.Duration {
	var se *StatusError
	if errors.As(err, &se) {
		return se.RetryAfter
	}
	return 0
}
