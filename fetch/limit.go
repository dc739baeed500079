package fetch

import (
	"context"
	"sync"
	"time"
)

// limiter paces the bytes of every connection of a Client to a rate: each
// read takes its bytes' share of time, and the reader waits until then.
// Idle time does not build up credit beyond a short burst.
type limiter struct {
	rate float64 // bytes per second
	now  func() time.Time

	mu   sync.Mutex
	next time.Time // when the bytes taken so far are paid for
}

const limiterBurst = 50 * time.Millisecond

func newLimiter(bytesPerSec int64, now func() time.Time) *limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	return &limiter{rate: float64(bytesPerSec), now: now}
}

// chunk is the largest read that keeps the pacing smooth (about 50ms of
// data); no limit on a nil limiter.
func (l *limiter) chunk(max int64) int64 {
	if l == nil {
		return max
	}
	return min(max, int64(l.rate*limiterBurst.Seconds())+4096)
}

// take accounts for n bytes just read and waits until they are paid for.
func (l *limiter) take(ctx context.Context, n int) error {
	if l == nil || n <= 0 {
		return nil
	}
	l.mu.Lock()
	now := l.now()
	if l.next.Before(now.Add(-limiterBurst)) {
		l.next = now.Add(-limiterBurst)
	}
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	wait := l.next.Sub(now)
	l.mu.Unlock()
	return sleep(ctx, wait)
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
