package progress

import (
	"fmt"
	"strings"

	"github.com/zfs-serve/zfs-serve/fetch"
)

type totals struct {
	files, started, complete, failed int
	size, done, received             int64
	sizeKnown                        bool
	rate                             float64
}

// notDone says, for the summary, how many files failed and how many
// never started (a run interrupted or ended with files still queued), or
// nothing when none.
func (t totals) notDone() string {
	var parts []string
	if t.failed > 0 {
		parts = append(parts, fmt.Sprintf("%d failed", t.failed))
	}
	if n := t.files - t.started; n > 0 {
		parts = append(parts, fmt.Sprintf("%d not started", n))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func (r *Renderer) totals() totals {
	t := totals{files: len(r.files), sizeKnown: true}
	for _, f := range r.files {
		if f.Size < 0 {
			// A file that failed before its size was known adds nothing.
			t.sizeKnown = t.sizeKnown && f.state == fetch.EventError
		} else {
			t.size += f.Size
		}
		t.done += f.done
		if f.state != 0 {
			t.started++
			t.received += max(f.done-f.resumed, 0)
		}
		switch f.state {
		case fetch.EventDone:
			t.complete++
		case fetch.EventError:
			t.failed++
		case fetch.EventStart:
			t.rate += f.rate
		}
	}
	return t
}
