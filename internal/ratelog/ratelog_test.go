package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	var b bytes.Buffer
	l := slog.New(slog.NewTextHandler(&b, nil))
	var r Limiter
	t0 := time.Unix(1000, 0)
	for i, at := range []time.Duration{0, 10 * time.Millisecond, 500 * time.Millisecond, Every, Every + time.Millisecond, 3 * Every} {
		r.Log(l, t0.Add(at), slog.LevelInfo, "refused", "i", i)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), b.String())
	}
	for i, want := range []string{"i=0", "i=3 suppressed=2", "i=5 suppressed=1"} {
		if !strings.HasSuffix(lines[i], want) {
			t.Errorf("line %d: %q, want it to end %q", i, lines[i], want)
		}
	}
}
