// Package ratelog limits log lines that a peer can cause at will (refused
// connections, bad headers) to one a second, counting the rest.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Every is the shortest interval between two lines of one Limiter.
const Every = time.Second

// Limiter logs one kind of line at most once per Every; the next line it
// lets through says how many were suppressed meanwhile. The zero value is
// ready to use.
type Limiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// Log logs msg with args at level unless a line was logged less than
// Every before now.
func (r *Limiter) Log(l *slog.Logger, now time.Time, level slog.Level, msg string, args ...any) {
	r.mu.Lock()
	if !r.last.IsZero() && now.Sub(r.last) < Every {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.Log(context.Background(), level, msg, args...)
}
