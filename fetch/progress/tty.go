package progress

import (
	"fmt"
	"strings"
	"time"

	"github.com/zfs-serve/zfs-serve/fetch"
	"github.com/zfs-serve/zfs-serve/internal/human"
)

// Terminal control: the live area is redrawn by going back to its first
// line (carriage return, cursor up), rewriting each line and clearing what
// is left of it, and clearing below when it shrank.
const (
	clearLine = "\x1b[K"
	clearDown = "\x1b[J"
)

func cursorUp(n int) string { return fmt.Sprintf("\x1b[%dA", n) }

func (r *Renderer) width() int {
	w := 80
	if r.o.Width != nil {
		if n := r.o.Width(); n > 0 {
			w = n
		}
	}
	return w
}

func (r *Renderer) maybeDraw(t time.Time) {
	if r.o.Mode != ModeTTY || !r.dirty {
		return
	}
	if !r.lastDraw.IsZero() && t.Sub(r.lastDraw) < MinRedraw {
		return // the next event (at most ProgressEvery later) draws
	}
	r.draw(t)
}

// home moves the cursor to the start of the live area.
func (r *Renderer) home(b *strings.Builder) {
	if r.drawn == 0 {
		return
	}
	b.WriteString("\r")
	if r.drawn > 1 {
		b.WriteString(cursorUp(r.drawn - 1))
	}
}

// clear erases the live area and leaves the cursor at its start.
func (r *Renderer) clear(b *strings.Builder) {
	if r.drawn == 0 {
		return
	}
	r.home(b)
	b.WriteString(clearDown)
}

func (r *Renderer) draw(t time.Time) {
	if r.o.Mode != ModeTTY {
		return
	}
	lines := r.liveLines(r.width())
	var b strings.Builder
	r.home(&b)
	for i, l := range lines {
		b.WriteString(l)
		b.WriteString(clearLine)
		if i < len(lines)-1 {
			b.WriteString("\n")
		}
	}
	if len(lines) < r.drawn {
		b.WriteString(clearDown)
	}
	r.o.Out.Write([]byte(b.String()))
	r.drawn = len(lines)
	r.lastDraw = t
	r.dirty = false
}

// liveLines are the lines of the live area: one per started file (and per
// connection of a single ranged file) and a total, or the total alone when
// there are many files.
func (r *Renderer) liveLines(width int) []string {
	type row struct {
		name  string
		frac  float64
		stats string
	}
	var rows []row
	many := len(r.files) > ManyFiles
	if !many {
		for _, f := range r.files {
			if f.state == 0 {
				continue
			}
			rows = append(rows, row{human.Printable(f.Name), frac(f.done, f.Size), r.fileStats(f)})
			if len(r.files) == 1 && len(f.conns) > 1 && f.state == fetch.EventStart {
				for i, c := range f.conns {
					if i == maxConns {
						break
					}
					rows = append(rows, row{fmt.Sprintf("  #%d", i+1), frac(c.Pos-c.Start, c.End-c.Start), connStats(c)})
				}
			}
		}
	}
	if len(r.files) > 1 {
		t := r.totals()
		size := t.size
		if !t.sizeKnown {
			size = -1
		}
		eta := "--"
		if t.rate >= 1 && size >= 0 {
			eta = human.Duration(time.Duration(float64(size-t.done) / t.rate * float64(time.Second)))
		}
		rate, tail := t.rate, "ETA "+eta
		if r.finished {
			el := r.finishedAt.Sub(r.started)
			rate, tail = float64(t.received)/max(el.Seconds(), 1e-3), "in "+human.Delay(el)
		}
		name := fmt.Sprintf("total %d/%d files", t.complete, t.files)
		if t.failed > 0 {
			name += fmt.Sprintf(", %d failed", t.failed)
		}
		rows = append(rows, row{name, frac(t.done, size), statsLine(t.done, size, rate, tail)})
	}
	if len(rows) == 0 {
		return nil
	}
	// Columns line up: names padded to the longest, stats to the widest.
	nameW, statsW := 0, 0
	for i := range rows {
		rows[i].stats = strings.TrimRight(rows[i].stats, " ")
		nameW = max(nameW, r.cond.StringWidth(rows[i].name))
		statsW = max(statsW, r.cond.StringWidth(rows[i].stats))
	}
	lines := make([]string, len(rows))
	for i, rw := range rows {
		lines[i] = strings.TrimRight(r.layout(rw.name, nameW, rw.frac, r.pad(rw.stats, statsW), width), " ")
	}
	return lines
}

func frac(done, total int64) float64 {
	switch {
	case total < 0:
		return -1
	case total == 0:
		return 1
	}
	return min(max(float64(done)/float64(total), 0), 1)
}

func (r *Renderer) fileStats(f *file) string {
	switch f.state {
	case fetch.EventDone:
		if f.skipped {
			return statsLine(f.done, f.Size, -1, "already complete")
		}
		return statsLine(f.done, f.Size, f.avgRate(), "in "+human.Delay(f.end.Sub(f.start)))
	case fetch.EventError:
		if isCanceled(f.err) {
			return statsLine(f.done, f.Size, -1, "interrupted")
		}
		return statsLine(f.done, f.Size, -1, "failed")
	}
	eta := "--"
	if d, ok := f.eta(); ok {
		eta = human.Duration(d)
	}
	return statsLine(f.done, f.Size, f.rate, "ETA "+eta+f.sourcesNote())
}

func connStats(c fetch.ConnProgress) string {
	return fmt.Sprintf("%7s %8s/%-8s", percent(c.Pos-c.Start, c.End-c.Start), human.Bytes(c.Pos-c.Start), human.Bytes(c.End-c.Start))
}

// statsLine is "42.00% 107 MiB/256 MiB 95.3 MiB/s ETA 2s" with padded
// fields, so lines do not jitter as the numbers change. rate < 0 omits it.
func statsLine(done, total int64, rate float64, tail string) string {
	pct, tot := "", "?"
	if total >= 0 {
		pct, tot = percent(done, total), human.Bytes(total)
	}
	rs := ""
	if rate >= 0 {
		rs = human.Rate(rate)
	}
	return fmt.Sprintf("%7s %8s/%-8s %10s %s", pct, human.Bytes(done), tot, rs, tail)
}

const (
	minBar  = 12
	maxBar  = 42
	minName = 16
)

// layout fits "NAME [bar] STATS" into width-1 columns (the last column is
// never written, so no terminal wraps): the bar goes first, then the name
// is shortened in the middle, then dropped, then the stats are cut.
func (r *Renderer) layout(name string, nameW int, fr float64, stats string, width int) string {
	avail := width - 1
	sw := r.cond.StringWidth(stats)
	if sw >= avail {
		stats = strings.TrimRight(stats, " ")
		sw = r.cond.StringWidth(stats)
	}
	if sw >= avail {
		return r.fit(stats, avail)
	}
	rest := avail - sw - 1 // for the name and the bar
	nameW = max(nameW, r.cond.StringWidth(name))
	switch {
	case rest >= nameW+1+minBar:
		bw := min(rest-nameW-1, maxBar)
		return r.pad(name, nameW) + " " + bar(fr, bw) + " " + stats
	case rest >= minName+1+minBar:
		nw := rest - 1 - minBar
		return r.pad(r.ellipsize(name, nw), nw) + " " + bar(fr, minBar) + " " + stats
	case rest >= 4:
		nw := min(nameW, rest)
		return r.pad(r.ellipsize(name, nw), nw) + " " + stats
	}
	return stats
}

func bar(fr float64, w int) string {
	inner := w - 2
	if fr < 0 {
		return "[" + strings.Repeat(" ", inner) + "]"
	}
	n := int(fr * float64(inner))
	switch {
	case n >= inner:
		return "[" + strings.Repeat("=", inner) + "]"
	case n == 0:
		return "[" + strings.Repeat(" ", inner) + "]"
	}
	return "[" + strings.Repeat("=", n-1) + ">" + strings.Repeat(" ", inner-n) + "]"
}

// fit cuts s to at most w columns.
func (r *Renderer) fit(s string, w int) string {
	if w <= 0 {
		return ""
	}
	return r.cond.Truncate(s, w, "")
}

// pad right-pads s with spaces to w columns.
func (r *Renderer) pad(s string, w int) string {
	if n := w - r.cond.StringWidth(s); n > 0 {
		return s + strings.Repeat(" ", n)
	}
	return s
}

// ellipsize shortens s to w columns by cutting its middle ("long...name").
func (r *Renderer) ellipsize(s string, w int) string {
	if r.cond.StringWidth(s) <= w {
		return s
	}
	if w < 8 {
		return r.fit(s, w)
	}
	head := (w - 3) / 2
	return r.cond.Truncate(s, head, "") + r.cond.TruncatePrefix(s, w-head, "...")
}
