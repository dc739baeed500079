package fetch

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The segments of one download and who works on them. Workers (one per
// connection: -x per source) take the lowest segment nobody owns; when
// there is none left, a worker takes over the far part of another's
// (work stealing), so that faster connections and faster mirrors end up
// with more of the file, and a slow one is relieved of its share. A
// failing worker gives its segment back for others to take.

// minSteal is the smallest piece taken over from another worker: taking
// over costs the victim its connection (it cannot stop an HTTP body and
// keep the connection), so small pieces are not worth it.
const minSteal = 1 << 20

// stealAlign rounds the split point of a steal.
const stealAlign = 64 << 10

// segment is a byte range of the file: [start, end), of which [start,
// pos) is in place. end shrinks when another worker takes over the far
// part. reserved is the end of the piece the owner is receiving now, which
// a steal leaves to it; committed the end of what it has received and is
// writing, which even a takeover (abort) leaves to it.
type segment struct {
	start int64
	pos   atomic.Int64
	end   atomic.Int64

	mu        sync.Mutex // guards end's changes, reserved, committed, abort
	reserved  int64
	committed int64
	abort     func() // closes the owner's connection; nil between attempts

	owner *worker // guarded by sched.mu
}

func newSegment(start, end int64) *segment {
	s := &segment{start: start}
	s.pos.Store(start)
	s.end.Store(end)
	return s
}

func newSegments(ranges [][2]int64) []*segment {
	segs := make([]*segment, len(ranges))
	for i, r := range ranges {
		segs[i] = newSegment(r[0], r[1])
	}
	return segs
}

// claim is called by the owner before receiving up to want bytes at off:
// it returns how many it may receive there (0: the segment ends at off).
func (s *segment) claim(off, want int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.end.Load()
	if off >= e {
		return 0
	}
	k := min(want, e-off)
	s.reserved = off + k
	return k
}

// commit is called by the owner once got bytes have arrived at off: it
// returns how many of them are still its to write (fewer if the segment
// was taken over meanwhile).
func (s *segment) commit(off, got int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := max(min(got, s.end.Load()-off), 0)
	s.committed = max(s.committed, off+k)
	return k
}

// setAbort records how to stop the owner's transfer (nil: none running).
func (s *segment) setAbort(f func()) {
	s.mu.Lock()
	s.abort = f
	s.mu.Unlock()
}

// worker is one connection's loop: it belongs to a source.
type worker struct {
	i   int
	src *source

	// Rate of the current (or last) attempt, for steals.
	mu       sync.Mutex
	since    time.Time
	got      int64
	rate     float64 // bytes/s of the current or last attempt
	measured bool    // rate has been measured

	fails int       // failed attempts in a row
	last  time.Time // last progress (or the start)
}

func (w *worker) begin(now time.Time) {
	w.mu.Lock()
	w.since, w.got = now, 0
	w.mu.Unlock()
}

// running is how long the worker's current attempt has been running.
func (w *worker) running(now time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.since.IsZero() {
		return 0
	}
	return now.Sub(w.since)
}

func (w *worker) add(n int64) {
	w.mu.Lock()
	w.got += n
	w.mu.Unlock()
}

// speed is the worker's receiving rate: of its current attempt once that
// has run a little, else of its last; measured is false before any.
func (w *worker) speed(now time.Time) (rate float64, measured bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if el := now.Sub(w.since); !w.since.IsZero() && el >= 100*time.Millisecond {
		w.rate, w.measured = float64(w.got)/el.Seconds(), true
	}
	return w.rate, w.measured
}

// sched holds the segments of one download.
type sched struct {
	mu    sync.Mutex
	cond  *sync.Cond
	segs  []*segment
	steal bool // ranges may be split further (a preallocated file)
	// takeover: a stalled or much slower owner may be stopped mid-chunk
	// (not in mmap mode, where the socket writes into the file itself).
	takeover bool
	stop     bool // the run is over (done, failed or canceled)
	done     chan struct{}
	now      func() time.Time
}

func newSched(segs []*segment, steal bool, now func() time.Time) *sched {
	s := &sched{segs: segs, steal: steal, done: make(chan struct{}), now: now}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// complete reports whether every segment is done (under mu).
func (s *sched) completeLocked() bool {
	for _, g := range s.segs {
		if g.pos.Load() < g.end.Load() {
			return false
		}
	}
	return true
}

// take gives w a segment to work on, waiting while others hold all that
// is left; nil when nothing is left (or the run stopped).
func (s *sched) take(w *worker, canSteal bool) *segment {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.stop {
			return nil
		}
		var best *segment
		for _, g := range s.segs {
			if g.owner == nil && g.pos.Load() < g.end.Load() && (best == nil || g.pos.Load() < best.pos.Load()) {
				best = g
			}
		}
		if best != nil {
			best.owner = w
			return best
		}
		if s.completeLocked() {
			s.finishLocked()
			return nil
		}
		if s.steal && canSteal {
			if g := s.stealLocked(w); g != nil {
				return g
			}
		}
		s.cond.Wait()
	}
}

// takeoverAfter: an owner is stopped and its segment taken over whole when
// it would take this much longer than the thief to finish it, and not
// before its attempt has run that long.
const takeoverAfter = time.Second

// stealLocked takes over the far part of the segment that would take its
// owner longest to finish, split so that both finish at about the same
// time at their rates. When that part is too small to split but its owner
// is stalled or much slower (a slow mirror), the owner's transfer is
// stopped and the thief takes over all it has not received.
func (s *sched) stealLocked(w *worker) *segment {
	now := s.now()
	mine, known := w.speed(now)
	if known && mine <= 0 {
		return nil // this worker's source delivers nothing
	}
	var victim *segment
	var worst float64
	for _, g := range s.segs {
		if g.owner == nil || g.owner == w {
			continue
		}
		left := g.end.Load() - g.pos.Load()
		if left <= 0 {
			continue
		}
		r, _ := g.owner.speed(now)
		eta := float64(left) / max(r, 1)
		if victim == nil || eta > worst {
			victim, worst = g, eta
		}
	}
	if victim == nil {
		return nil
	}
	rv, _ := victim.owner.speed(now)
	victim.mu.Lock()
	defer victim.mu.Unlock()
	from := max(victim.pos.Load(), victim.reserved, victim.committed)
	end := victim.end.Load()
	left := end - from
	keep := left / 2
	if known && rv+mine > 0 {
		keep = int64(float64(left) * rv / (rv + mine))
	}
	at := (from + keep + stealAlign - 1) / stealAlign * stealAlign
	if end-at >= minSteal && at >= from {
		victim.end.Store(at)
		return s.addLocked(w, at, end)
	}
	// Too little to split: take it all over if the owner would be much
	// slower at it than this worker.
	if !s.takeover || !known || victim.abort == nil || victim.owner.running(now) < takeoverAfter {
		return nil
	}
	from = max(victim.pos.Load(), victim.committed)
	left = end - from
	theirs := time.Duration(float64(left) / max(rv, 1) * float64(time.Second))
	ours := time.Duration(float64(left) / mine * float64(time.Second))
	if left <= 0 || theirs < 2*ours+takeoverAfter {
		return nil
	}
	victim.end.Store(from)
	victim.abort()
	return s.addLocked(w, from, end)
}

func (s *sched) addLocked(w *worker, from, end int64) *segment {
	g := newSegment(from, end)
	g.owner = w
	s.segs = append(s.segs, g)
	return g
}

// release gives a segment back (done with it, or failed).
func (s *sched) release(g *segment) {
	s.mu.Lock()
	g.owner = nil
	if s.completeLocked() {
		s.finishLocked()
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

func (s *sched) finishLocked() {
	if !s.stop {
		s.stop = true
		close(s.done)
		s.cond.Broadcast()
	}
}

// over reports whether the run is over (every byte in, or halted); a
// nil sched (no run) is not.
func (s *sched) over() bool {
	if s == nil {
		return false
	}
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// halt ends the run: every take returns nil.
func (s *sched) halt() {
	s.mu.Lock()
	s.finishLocked()
	s.mu.Unlock()
}

// wakeAll wakes waiting workers (a source was dropped: one may be the last).
func (s *sched) wakeAll() {
	s.mu.Lock()
	s.cond.Broadcast()
	s.mu.Unlock()
}

// frontier is the offset below which every byte is in place.
func (s *sched) frontier(size int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := size
	for _, g := range s.segs {
		if p := g.pos.Load(); p < g.end.Load() && p < f {
			f = p
		}
	}
	return f
}

// pending lists the byte ranges not yet in place, sorted and merged.
func (s *sched) pending() [][2]int64 {
	s.mu.Lock()
	var out [][2]int64
	for _, g := range s.segs {
		if p, e := g.pos.Load(), g.end.Load(); p < e {
			out = append(out, [2]int64{p, e})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b [2]int64) int {
		switch {
		case a[0] < b[0]:
			return -1
		case a[0] > b[0]:
			return 1
		}
		return 0
	})
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && merged[n-1][1] >= r[0] {
			merged[n-1][1] = max(merged[n-1][1], r[1])
			continue
		}
		merged = append(merged, r)
	}
	return merged
}

// completeNow reports whether every segment is done.
func (s *sched) completeNow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.completeLocked()
}

// count is the number of segments.
func (s *sched) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.segs)
}
