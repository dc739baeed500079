package fetch

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

func TestSpeedMeter(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type step struct {
		ms   int   // when
		add  int64 // bytes that arrive then (0: only a check)
		slow bool  // what the check then says
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"nothing said before a whole span", []step{{ms: 500, slow: false}, {ms: 999, slow: false}}},
		{"nothing at all", []step{{ms: 1000, slow: true}}},
		{"too little", []step{{ms: 500, add: 500}, {ms: 1000, slow: true}}},
		{"exactly the floor", []step{{ms: 500, add: 1000}, {ms: 1000, slow: false}}},
		{"fast, then silent for a span", []step{{ms: 100, add: 1 << 20}, {ms: 1000, slow: false}, {ms: 1100, slow: true}}},
		{"steady at twice the floor", []step{
			{ms: 200, add: 400}, {ms: 400, add: 400}, {ms: 600, add: 400}, {ms: 800, add: 400},
			{ms: 1000, add: 400}, {ms: 1200, add: 400}, {ms: 1400, add: 400}, {ms: 3000, slow: true},
		}},
		{"a trickle", []step{
			{ms: 100, add: 1}, {ms: 300, add: 1}, {ms: 500, add: 1}, {ms: 700, add: 1}, {ms: 900, add: 1}, {ms: 1100, add: 1, slow: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newSpeedMeter(1000, time.Second)
			m.start(t0)
			for _, s := range tc.steps {
				now := at(s.ms)
				if s.add > 0 {
					m.add(s.add, now)
				}
				err := m.check(now)
				if (err != nil) != s.slow {
					t.Fatalf("at %dms: %v, want slow=%v", s.ms, err, s.slow)
				}
				if !m.due(now).After(now) {
					t.Fatalf("at %dms: next check due at %v, not after now", s.ms, m.due(now).Sub(t0))
				}
				if len(m.samples) > 2*speedSlots+2 {
					t.Fatalf("%d samples kept", len(m.samples))
				}
			}
		})
	}
	if newSpeedMeter(0, time.Second) != nil || newSpeedMeter(1, 0) != nil {
		t.Fatal("a meter without a floor")
	}
	if got := (&slowError{limit: 10 << 10, span: 2 * time.Second}).Error(); got != "slower than 10.0 KiB/s for 2s" {
		t.Fatalf("message %q", got)
	}
}

// TestSpeedFloor: a server that trickles bytes (each one would renew the
// stall timeout and count as progress) or sends nothing at all after the
// header ends each attempt once the rate has stayed below the floor for
// SpeedTime, well before the stall timeout, and the slow attempts use up
// the retries: the download gives up instead of going on for ever.
func TestSpeedFloor(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    fault
	}{
		{"trickle", fault{trickle: 10 * time.Millisecond}},
		{"silent", fault{hang: true}},
	} {
		for _, mode := range []RecvMode{RecvCopy, RecvSplice, RecvMmap} {
			t.Run(tc.name+"-"+string(mode), func(t *testing.T) {
				s := newFakeServer(t)
				s.put("/f", randBytes(1<<20, 1), mtime1)
				s.hook = func(n int, q wire.Request) fault {
					if q.Op == wire.OpGet {
						return tc.f
					}
					return fault{}
				}
				c, rec := testClient(t, Options{Recv: mode, Retries: 2, StallTimeout: time.Minute,
					SpeedLimit: 10 << 10, SpeedTime: 200 * time.Millisecond})
				start := time.Now()
				_, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: filepath.Join(t.TempDir(), "f")})
				el := time.Since(start)
				var ge *GiveUpError
				if !errors.As(err, &ge) || ge.Attempts != 3 || !isSlow(err) || !Retryable(ge.Err) {
					t.Fatalf("err %v; want a give-up after 3 slow attempts", err)
				}
				if !strings.Contains(err.Error(), "slower than 10.0 KiB/s for 200ms (gave up after 3 attempts)") {
					t.Fatalf("message %q", err)
				}
				if r := rec.kinds(EventRetry); len(r) != 2 || !strings.Contains(RetryMessage(r[0]), "slower than") {
					t.Fatalf("retry events %+v", r)
				}
				// Three attempts of about SpeedTime each, not a stall timeout's minute.
				if el < 3*200*time.Millisecond || el > 30*time.Second {
					t.Fatalf("gave up after %v", el)
				}
				t.Logf("gave up after %v", el)
			})
		}
	}
}

// TestSpeedFloorFastServer: a floor a normal transfer clears changes nothing.
func TestSpeedFloorFastServer(t *testing.T) {
	s := newFakeServer(t)
	data := randBytes(2*MinSplit+1, 1)
	s.put("/f", data, mtime1)
	for _, mode := range []RecvMode{RecvCopy, RecvSplice, RecvMmap} {
		c, _ := testClient(t, Options{Recv: mode, Conns: 2, SpeedLimit: 1, SpeedTime: 50 * time.Millisecond})
		dst := filepath.Join(t.TempDir(), "f")
		if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst}); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		checkFile(t, dst, data, mtime1)
	}
}
