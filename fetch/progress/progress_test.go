package progress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mattn/go-runewidth"

	"github.com/zfs-serve/zfs-serve/fetch"
	"github.com/zfs-serve/zfs-serve/wire"
)

// clock is a fake clock: events carry its time.
type clock struct{ t time.Time }

func (c *clock) now() time.Time                  { return c.t }
func (c *clock) advance(d time.Duration)         { c.t = c.t.Add(d) }
func newClock() *clock                           { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }
func ev(c *clock, k fetch.EventKind) fetch.Event { return fetch.Event{Kind: k, Time: c.now()} }

var escape = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// frames splits terminal output into what each redraw left on each line.
func frames(out string) []string {
	var fs []string
	for _, seg := range regexp.MustCompile(`[\r\n]`).Split(out, -1) {
		seg = escape.ReplaceAllString(seg, "")
		if seg != "" {
			fs = append(fs, seg)
		}
	}
	return fs
}

// feed sends one file's events: start, progress every step at rate
// bytes/s until size, done.
func feed(r *Renderer, c *clock, file int, name string, size int64, rate float64, step time.Duration) {
	e := ev(c, fetch.EventStart)
	e.File, e.Name, e.Total = file, name, size
	r.Event(e)
	var done int64
	for done < size {
		c.advance(step)
		done = min(size, done+int64(rate*step.Seconds()))
		e := ev(c, fetch.EventProgress)
		e.File, e.Name, e.Total, e.Done = file, name, size, done
		r.Event(e)
	}
	e = ev(c, fetch.EventDone)
	e.File, e.Name, e.Total, e.Done = file, name, size, size
	r.Event(e)
}

var statsRE = regexp.MustCompile(`\d+\.\d\d% +[\d.]+ [KMG]?i?B/[\d.]+ [KMG]?i?B +[\d.]+ [KMG]?i?B/s ETA \S+`)

func TestTTYRedrawsInPlaceAtBoundedRate(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	r := New(Options{Mode: ModeTTY, Out: &out, Width: func() int { return 100 }, Files: []File{{Name: "big.bin", Size: -1}}})
	start := c.now()
	// Progress every 10ms for 3s: 300 events, at most ~30 redraws.
	feed(r, c, 0, "big.bin", 300<<20, 100<<20, 10*time.Millisecond)
	r.Finish(c.now(), 0)
	s := out.String()
	if strings.Contains(s, "\n") && strings.Index(s, "\n") != len(s)-1 {
		t.Fatalf("a single file's line was not redrawn in place:\n%q", s)
	}
	redraws := strings.Count(s, "\r")
	if max := int(c.now().Sub(start)/MinRedraw) + 2; redraws > max || redraws < 20 {
		t.Fatalf("%d redraws in %v (want at most %d, and some)", redraws, c.now().Sub(start), max)
	}
	fs := frames(s)
	var withStats int
	for _, f := range fs {
		if w := runewidth.StringWidth(f); w > 99 {
			t.Errorf("line of %d columns on a 100-column terminal: %q", w, f)
		}
		if statsRE.MatchString(f) {
			withStats++
		}
	}
	if withStats < 20 {
		t.Fatalf("only %d frames show percent, bytes, rate and ETA:\n%s", withStats, strings.Join(fs, "\n"))
	}
	mid := fs[len(fs)/2]
	if !strings.Contains(mid, "big.bin [") || !strings.Contains(mid, "100 MiB/s") || !strings.Contains(mid, "/300 MiB") {
		t.Errorf("mid-download frame %q lacks the name, bar, rate or total", mid)
	}
	last := fs[len(fs)-1]
	if !strings.Contains(last, "100.00%") || !strings.Contains(last, "in 3s") || !strings.HasSuffix(s, "\n") {
		t.Errorf("final frame %q", last)
	}
}

func TestRateAndETA(t *testing.T) {
	c := newClock()
	r := New(Options{Mode: ModeTTY, Out: &bytes.Buffer{}, Files: []File{{Name: "f", Size: -1}}})
	e := ev(c, fetch.EventStart)
	e.Total, e.Done, e.Resumed = 1000<<20, 200<<20, 200<<20 // resumed bytes are not a rate
	r.Event(e)
	for i := 1; i <= 50; i++ {
		c.advance(100 * time.Millisecond)
		e := ev(c, fetch.EventProgress)
		e.Total, e.Done = 1000<<20, 200<<20+int64(i)<<20 // 10 MiB/s
		r.Event(e)
	}
	f := r.files[0]
	if f.rate < 9.9*(1<<20) || f.rate > 10.1*(1<<20) {
		t.Fatalf("rate %.0f, want 10 MiB/s", f.rate)
	}
	eta, ok := f.eta()
	if want := 75 * time.Second; !ok || eta < want-time.Second || eta > want+time.Second {
		t.Fatalf("eta %v, want about %v", eta, want)
	}
	// A stall decays the rate and stretches the ETA.
	for range 30 {
		c.advance(100 * time.Millisecond)
		e := ev(c, fetch.EventProgress)
		e.Total, e.Done = 1000<<20, 250<<20
		r.Event(e)
	}
	if f.rate > 3*(1<<20) {
		t.Fatalf("rate %.0f after a 3s stall", f.rate)
	}
}

func TestTTYNeverWraps(t *testing.T) {
	names := []string{"a", "big.bin", strings.Repeat("long-name-", 20) + ".iso", "ünïcödé ✓ 文件名很长很长很长很长很长很长很长很长.bin", "tab\tand\x1b[31mescape"}
	for w := 10; w <= 200; w += 7 {
		for _, name := range names {
			c := newClock()
			var out bytes.Buffer
			r := New(Options{Mode: ModeTTY, Out: &out, Width: func() int { return w }, Files: []File{{Name: name, Size: -1}, {Name: "second", Size: 5}}})
			feed(r, c, 0, name, 10<<20, 20<<20, 50*time.Millisecond)
			r.Event(fetch.Event{Kind: fetch.EventRetry, Time: c.now(), File: 1, Name: "second", Total: 5, Err: &fetch.StatusError{Status: wire.StatusDraining}, Delay: time.Second})
			r.Finish(c.now(), 0)
			for _, f := range frames(out.String()) {
				if strings.HasPrefix(f, "zfetch: ") {
					continue // a message line, printed once, may wrap
				}
				if got := runewidth.StringWidth(f); got > w-1 {
					t.Fatalf("width %d, name %q: line of %d columns: %q", w, name, got, f)
				}
				if strings.ContainsAny(f, "\t\x1b") {
					t.Fatalf("control character reached the terminal: %q", f)
				}
			}
		}
	}
}

func TestTTYSeveralFiles(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	files := []File{{Name: "a", Size: 10 << 20}, {Name: "b", Size: 20 << 20}, {Name: "c", Size: 30 << 20}}
	r := New(Options{Mode: ModeTTY, Out: &out, Width: func() int { return 90 }, Files: files})
	for i, f := range files {
		feed(r, c, i, f.Name, f.Size, 50<<20, 100*time.Millisecond)
	}
	r.Finish(c.now(), 0)
	s := out.String()
	// Three file lines and a total: redraws go back up three lines.
	if !strings.Contains(s, "\x1b[3A") {
		t.Fatalf("no redraw of a 4-line area:\n%q", s)
	}
	tail := s[strings.LastIndex(s, "\x1b[3A")+len("\x1b[3A"):]
	lines := strings.Split(strings.TrimSuffix(escape.ReplaceAllString(tail, ""), "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "a ") || !strings.HasPrefix(lines[3], "total 3/3 files") || !strings.Contains(lines[3], "60.0 MiB/60.0 MiB") {
		t.Fatalf("final area:\n%s", strings.Join(lines, "\n"))
	}

	// Many files: the total alone, one line.
	out.Reset()
	var many []File
	for i := range 50 {
		many = append(many, File{Name: fmt.Sprint("f", i), Size: 1 << 20})
	}
	r = New(Options{Mode: ModeTTY, Out: &out, Width: func() int { return 90 }, Files: many})
	for i, f := range many {
		feed(r, c, i, f.Name, f.Size, 10<<20, 100*time.Millisecond)
	}
	r.Finish(c.now(), 0)
	if strings.Contains(out.String(), "\x1b[1A") || strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("many files drew more than the total line:\n%q", out.String())
	}
	if fs := frames(out.String()); !strings.HasPrefix(fs[len(fs)-1], "total 50/50 files") {
		t.Fatalf("last frame %q", fs[len(fs)-1])
	}
}

func TestTTYRangedFileShowsConnections(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	r := New(Options{Mode: ModeTTY, Out: &out, Width: func() int { return 100 }, Files: []File{{Name: "f", Size: 400}}})
	e := ev(c, fetch.EventStart)
	e.Total = 400
	r.Event(e)
	c.advance(time.Second)
	e = ev(c, fetch.EventProgress)
	e.Total, e.Done = 400, 150
	e.Conns = []fetch.ConnProgress{{Start: 0, Pos: 50, End: 100}, {Start: 100, Pos: 200, End: 200},
		{Start: 200, Pos: 200, End: 300}, {Start: 300, Pos: 300, End: 400}}
	r.Event(e)
	fs := frames(out.String())
	got := strings.Join(fs[len(fs)-5:], "\n")
	for _, want := range []string{"#1 [", " 50.00%", "#2 [", "100.00%", "#4 [", "  0.00%"} {
		if !strings.Contains(got, want) {
			t.Fatalf("connection lines lack %q:\n%s", want, got)
		}
	}
}

func TestMessagesGoAboveTheLiveArea(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	r := New(Options{Mode: ModeTTY, Out: &out, Width: func() int { return 80 }, Files: []File{{Name: "f", Size: -1}}})
	e := ev(c, fetch.EventStart)
	e.Total = 100
	r.Event(e)
	c.advance(time.Second)
	r.Event(fetch.Event{Kind: fetch.EventRetry, Time: c.now(), Total: 100, Done: 10, Attempt: 1, Delay: 2 * time.Second,
		Err: &fetch.StatusError{Status: wire.StatusDraining}})
	s := out.String()
	if !strings.Contains(s, "\r\x1b[Jzfetch: f: server draining, retrying in 2s\n") {
		t.Fatalf("retry message not printed over a cleared live area:\n%q", s)
	}
}

func TestPlainHasNoEscapes(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	r := New(Options{Mode: ModePlain, Out: &out, Files: []File{{Name: "big.bin", Size: -1}}})
	feed(r, c, 0, "big.bin", 100<<20, 10<<20, 100*time.Millisecond) // 10s
	r.Finish(c.now(), 0)
	s := out.String()
	if strings.ContainsAny(s, "\r\x1b") {
		t.Fatalf("plain output has \\r or escapes:\n%q", s)
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	// start, a line every 5s (at 5s, and not again before the end), done
	if len(lines) != 3 || lines[0] != "zfetch: big.bin: 100 MiB, starting" ||
		!strings.HasPrefix(lines[1], "zfetch: big.bin: 50.00% 50.0 MiB/100 MiB 10.0 MiB/s ETA 5s") ||
		lines[2] != "zfetch: big.bin: done, 100 MiB in 10s (10.0 MiB/s)" {
		t.Fatalf("plain lines:\n%s", s)
	}
}

func TestJSONEvents(t *testing.T) {
	c := newClock()
	var out, errw bytes.Buffer
	r := New(Options{Mode: ModeJSON, Out: &out, Err: &errw, Files: []File{{Name: "a", Size: -1}, {Name: "b", Size: -1}},
		ExitCode: func(error) int { return 3 }})
	feed(r, c, 0, "a", 30<<20, 10<<20, 100*time.Millisecond) // 3s
	e := ev(c, fetch.EventRetry)
	e.File, e.Name, e.Attempt, e.Delay, e.Err = 1, "b", 1, 250*time.Millisecond, &fetch.StatusError{Status: wire.StatusBusy}
	r.Event(e)
	e = ev(c, fetch.EventError)
	e.File, e.Name, e.Err = 1, "b", &fetch.StatusError{Status: wire.StatusNotFound, Message: "not found: /b"}
	r.Event(e)
	r.Finish(c.now(), 3)
	var kinds []string
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if m["v"] != 1.0 || m["time"] == nil {
			t.Fatalf("event lacks v or time: %s", line)
		}
		if !strings.HasPrefix(line, `{"v":1,"event":`) {
			t.Fatalf("keys out of order: %s", line)
		}
		kinds = append(kinds, m["event"].(string))
		switch m["event"] {
		case "progress":
			if m["rate"] == nil || m["eta_seconds"] == nil || m["done"] == nil || m["total"] != float64(30<<20) {
				t.Errorf("progress event %s", line)
			}
		case "retry":
			if m["reason"] != "server busy" || m["retry_in_seconds"] != 0.25 || m["attempt"] != 1.0 {
				t.Errorf("retry event %s", line)
			}
		case "error":
			if m["error"] != "not found: /b" || m["code"] != 3.0 {
				t.Errorf("error event %s", line)
			}
		case "exit":
			if m["code"] != 3.0 || m["files"] != 2.0 || m["complete"] != 1.0 || m["failed"] != 1.0 {
				t.Errorf("exit event %s", line)
			}
		}
	}
	// one progress event a second: at 1s, 2s, 3s
	want := "start progress progress progress done retry error exit"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	if errw.String() != "zfetch: b: not found: /b\n" {
		t.Fatalf("stderr %q", errw.String())
	}
}

func TestQuiet(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	r := New(Options{Mode: ModeQuiet, Out: &out, Files: []File{{Name: "a", Size: -1}}})
	feed(r, c, 0, "a", 10<<20, 10<<20, 100*time.Millisecond)
	r.Event(fetch.Event{Kind: fetch.EventRetry, Time: c.now(), Err: syscall.ECONNREFUSED, Delay: time.Second})
	r.Note(c.now(), "skipping x")
	r.Finish(c.now(), 0)
	if out.Len() != 0 {
		t.Fatalf("quiet printed %q", out.String())
	}
	r.Event(fetch.Event{Kind: fetch.EventError, Time: c.now(), Err: errors.New("boom")})
	r.Event(fetch.Event{Kind: fetch.EventError, Time: c.now(), Err: context.Canceled})
	if out.String() != "zfetch: a: boom\n" {
		t.Fatalf("quiet error output %q", out.String())
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{"plain ü✓": "plain ü✓", "a\nb": "a?b", "\x1b[2Jx": "?[2Jx", "bad\xffutf8": "bad?utf8", "\u009bC1": "?C1"} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

// A retry event's done is the bytes in place when the attempt failed, not
// those of the last progress event before it (up to a progress period
// older): scripts resume-check against it.
func TestJSONRetryCarriesItsDone(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	r := New(Options{Mode: ModeJSON, Out: &out, Files: []File{{Name: "a", Size: -1}}})
	e := ev(c, fetch.EventStart)
	e.Name, e.Total = "a", 100
	r.Event(e)
	e = ev(c, fetch.EventProgress)
	e.Name, e.Total, e.Done = "a", 100, 40
	r.Event(e)
	c.advance(100 * time.Millisecond)
	e = ev(c, fetch.EventRetry)
	e.Name, e.Total, e.Done, e.Attempt, e.Delay, e.Err = "a", 100, 57, 1, time.Second, io.ErrUnexpectedEOF
	r.Event(e)
	var m map[string]any
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil || m["event"] != "retry" {
		t.Fatalf("last line %q (%v)", lines[len(lines)-1], err)
	}
	if m["done"] != 57.0 {
		t.Fatalf("retry event done %v, want 57: %s", m["done"], lines[len(lines)-1])
	}
}
