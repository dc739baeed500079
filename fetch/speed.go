package fetch

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/zfs-serve/zfs-serve/internal/human"
)

// A speed floor (Options.SpeedLimit, SpeedTime; zfetch --speed-limit,
// --speed-time) ends an attempt whose body arrives slower than Limit bytes
// per second over the last SpeedTime: a server that trickles a byte now
// and then never trips the stall timeout, and every byte would otherwise
// count as progress and renew the retries. Such an attempt ends as a
// retryable failure that does not count as progress (see download.attempt).

// speedSlots is how finely the window is sampled: the check runs, and a
// sample is kept, at most every SpeedTime/speedSlots.
const speedSlots = 10

// speedMeter measures one body's receiving rate over a sliding window.
type speedMeter struct {
	limit   int64
	span    time.Duration
	total   int64         // bytes received since start
	samples []speedSample // oldest first; the first one is the window's start
}

type speedSample struct {
	t     time.Time
	total int64
}

// newSpeedMeter returns a meter for the floor, or nil for none.
func newSpeedMeter(limit int64, span time.Duration) *speedMeter {
	if limit <= 0 || span <= 0 {
		return nil
	}
	return &speedMeter{limit: limit, span: span}
}

// start begins a new body at now.
func (m *speedMeter) start(now time.Time) {
	m.total = 0
	m.samples = append(m.samples[:0], speedSample{now, 0})
}

// add records n bytes received at now.
func (m *speedMeter) add(n int64, now time.Time) {
	m.total += n
	if last := m.samples[len(m.samples)-1]; now.Sub(last.t) >= m.span/speedSlots {
		m.samples = append(m.samples, speedSample{now, m.total})
	}
}

// check returns a *slowError if, over the last span (at least), fewer
// bytes arrived than the floor asks for. Before a whole span has passed
// since start it says nothing.
func (m *speedMeter) check(now time.Time) error {
	cut := now.Add(-m.span)
	i := 0
	for i+1 < len(m.samples) && !m.samples[i+1].t.After(cut) {
		i++
	}
	m.samples = m.samples[i:]
	s := m.samples[0]
	if s.t.After(cut) {
		return nil
	}
	if float64(m.total-s.total) < float64(m.limit)*now.Sub(s.t).Seconds() {
		return &slowError{limit: m.limit, span: m.span}
	}
	return nil
}

// due is when check must run next if nothing arrives meanwhile.
func (m *speedMeter) due(now time.Time) time.Time {
	if d := m.samples[0].t.Add(m.span); d.After(now) {
		return d
	}
	return now.Add(m.span / speedSlots)
}

// slowError ends an attempt that stayed below the speed floor.
type slowError struct {
	limit int64
	span  time.Duration
}

func (e *slowError) Error() string {
	return fmt.Sprintf("slower than %s/s for %s", human.Bytes(e.limit), human.Delay(e.span))
}

func isSlow(err error) bool {
	var se *slowError
	return errors.As(err, &se)
}

// recv runs fn, one receiving call through Go's poller, bounded by the
// stall timeout (no byte for that long) and, with a speed floor, by the
// floor: the read deadline is then also the floor's next check, and a
// deadline that passes before the stall timeout only runs the check.
func (r *receiver) recv(fn func() (int64, error)) (int64, error) {
	if r.speed == nil {
		r.deadline()
		return fn()
	}
	now := time.Now()
	if err := r.speed.check(now); err != nil {
		return 0, err
	}
	stall := now.Add(r.stall)
	for {
		dl := r.speed.due(now)
		if stall.Before(dl) {
			dl = stall
		}
		r.conn.c.SetReadDeadline(dl)
		n, err := fn()
		now = time.Now()
		if n > 0 {
			r.speed.add(n, now)
			return n, err
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && now.Before(stall) {
			if err := r.speed.check(now); err != nil {
				return 0, err
			}
			continue
		}
		return n, err
	}
}
