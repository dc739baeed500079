package daemon

import (
	"context"
	"testing"
)

// TestRequestAnsweredAsTheLoopEnds: a request whose event the loop
// handles just before it ends (a drain with nothing in flight, a kill)
// is answered as handled, not "zfs-serve is exiting", however the
// goroutines interleave: done and finished may both be closed by the time
// request looks (zctl drain of an idle daemon said it was exiting, now
// and then, and TestDrainIdle failed about once in 200 runs).
func TestRequestAnsweredAsTheLoopEnds(t *testing.T) {
	for i := range 2000 {
		s := &Supervisor{events: make(chan event, 1), finished: make(chan struct{})}
		done := make(chan struct{})
		go func() {
			<-s.events // the loop's last event: handled, then the loop ends
			close(done)
			close(s.finished)
		}()
		if err := s.request(context.Background(), evCall{f: func() {}, done: done}, done); err != nil {
			t.Fatalf("round %d: %v, for an event the loop handled", i, err)
		}
	}
}
