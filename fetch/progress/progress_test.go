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
	"github.com/zfs-serve/zfs-serve/internal/human"
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
	for in, want := range map[string]string{"plain ü✓": "plain ü✓", "a\nb": "a?b", "\x1b[2Jx": "?[2Jx", "bad\xffutf8": "bad?utf8", "\u009bC1": "?C1",
		"tab\tdel\x7f": "tab?del?", "cr\r": "cr?", "bidi\u202eevil": "bidi?evil", "ls\u2028ps\u2029": "ls?ps?", "nbsp\u00a0ok 文件": "nbsp\u00a0ok 文件"} {
		if got := human.Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
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

// hostile is a server's error message that would clear the screen, turn
// the text red and forge a line of its own if printed raw.
const hostile = "\x1b[2J\x1b[31mYOUR DISK IS FULL\x1b[0m\nzfetch: fake second line\r"

// ours are the escapes the TTY renderer writes itself.
var ours = regexp.MustCompile(`\r(\x1b\[\d+A)?|\x1b\[[KJ]`)

// Every line for people, in every mode, is one line without control
// characters, whatever the server put in its messages and names.
func TestServerTextIsSanitized(t *testing.T) {
	for _, mode := range []Mode{ModeTTY, ModePlain, ModeQuiet, ModeJSON} {
		c := newClock()
		var out, errw bytes.Buffer
		r := New(Options{Mode: mode, Out: &out, Err: &errw, Files: []File{{Name: "a\x1b[31m\u202e", Size: -1}}})
		e := ev(c, fetch.EventStart)
		e.Total = 10
		r.Event(e)
		r.Event(fetch.Event{Kind: fetch.EventRetry, Time: c.now(), File: -1, Name: "zfs://h/d\x07", Total: -1, Attempt: 1,
			Delay: time.Second, Err: &fetch.StatusError{Status: wire.StatusNotFound, Path: "/d/\x1b]0;title\x07"}})
		r.Event(fetch.Event{Kind: fetch.EventRestart, Time: c.now(), Total: 10, Err: errors.New(hostile)})
		r.Note(c.now(), "skipping zfs://h/d/\x1b[1Ax: not a regular file")
		r.Event(fetch.Event{Kind: fetch.EventError, Time: c.now(), Total: 10,
			Err: &fetch.StatusError{Status: wire.StatusNotFound, Message: hostile}})
		r.Finish(c.now(), 3)
		human := errw.String()
		if mode != ModeJSON {
			human = out.String() + errw.String()
		}
		if mode == ModeTTY {
			human = ours.ReplaceAllString(human, "")
		}
		if strings.IndexFunc(human, func(c rune) bool { return c != '\n' && unprintable(c) }) >= 0 {
			t.Errorf("mode %d: control characters reached the output:\n%q", mode, human)
		}
		want := "zfetch: a?[31m?: ?[2J?[31mYOUR DISK IS FULL?[0m?zfetch: fake second line?\n"
		if !strings.Contains(human, want) {
			t.Errorf("mode %d: no error line %q in:\n%q", mode, want, human)
		}
		for _, l := range strings.Split(human, "\n") {
			if strings.HasPrefix(l, "zfetch: fake") {
				t.Errorf("mode %d: the server forged a line:\n%q", mode, human)
			}
		}
	}
}

// JSON carries the server's text as it came, escaped by encoding/json.
func TestJSONKeepsServerTextEscaped(t *testing.T) {
	c := newClock()
	var out, errw bytes.Buffer
	r := New(Options{Mode: ModeJSON, Out: &out, Err: &errw, Files: []File{{Name: "a\x1b[31m\u2028", Size: -1}}})
	e := ev(c, fetch.EventStart)
	e.Total = 10
	r.Event(e)
	note := "skipping \"x\"\x1b[1A\u2028\\y: not a regular file"
	r.Note(c.now(), note)
	r.Event(fetch.Event{Kind: fetch.EventError, Time: c.now(), Total: 10,
		Err: &fetch.StatusError{Status: wire.StatusNotFound, Message: hostile}})
	r.Finish(c.now(), 3)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want start, note, error, exit:\n%s", len(lines), out.String())
	}
	for _, l := range lines {
		if strings.IndexFunc(l, unprintable) >= 0 {
			t.Fatalf("raw control character in a JSON line: %q", l)
		}
	}
	var m struct{ Name, Message, Error string }
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil || m.Message != note {
		t.Fatalf("note %q (%v): message %q, want %q", lines[1], err, m.Message, note)
	}
	if err := json.Unmarshal([]byte(lines[2]), &m); err != nil || m.Error != hostile || m.Name != "a\x1b[31m\u2028" {
		t.Fatalf("error event %q (%v): name %q, error %q", lines[2], err, m.Name, m.Error)
	}
}

// A message line stays on screen: it is printed whole however narrow the
// terminal (it may wrap); only the live lines are fitted to the width.
func TestTTYMessagesAreNotCut(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	r := New(Options{Mode: ModeTTY, Out: &out, Width: func() int { return 40 }, Files: []File{{Name: "file.bin", Size: -1}}})
	e := ev(c, fetch.EventStart)
	e.Total = 100
	r.Event(e)
	long := "refused: not found: /some/rather/long/path/to/file.bin (and more words after it)"
	r.Event(fetch.Event{Kind: fetch.EventRetry, Time: c.now(), Total: 100, Attempt: 1, Delay: time.Second, Err: syscall.ECONNREFUSED})
	r.Event(fetch.Event{Kind: fetch.EventError, Time: c.now(), Total: 100, Err: errors.New(long)})
	r.Finish(c.now(), 3)
	s := out.String()
	for _, want := range []string{"zfetch: file.bin: connection refused, retrying in 1s\n", "zfetch: file.bin: " + long + "\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("message %q not printed whole:\n%q", want, s)
		}
	}
	for _, f := range frames(s) {
		if !strings.HasPrefix(f, "zfetch: ") && runewidth.StringWidth(f) > 39 {
			t.Errorf("live line of %d columns on a 40-column terminal: %q", runewidth.StringWidth(f), f)
		}
	}
}

// Retries while listing a tree (File -1) are shown in every mode but
// quiet: in JSON as retry events with "file": -1.
func TestListRetries(t *testing.T) {
	retry := func(c *clock) fetch.Event {
		return fetch.Event{Kind: fetch.EventRetry, Time: c.now(), File: -1, Name: "zfs://h:7070/d", Source: "zfs://h:7070/d",
			Total: -1, Attempt: 2, Delay: 1500 * time.Millisecond, Err: &fetch.StatusError{Status: wire.StatusBusy, Message: "busy"}}
	}
	human := "zfetch: zfs://h:7070/d: server busy, retrying in 1.5s\n"
	for _, mode := range []Mode{ModeTTY, ModePlain, ModeQuiet} {
		c := newClock()
		var out bytes.Buffer
		r := New(Options{Mode: mode, Out: &out})
		r.Event(retry(c))
		if got, want := out.String(), map[bool]string{true: "", false: human}[mode == ModeQuiet]; got != want {
			t.Errorf("mode %d: %q, want %q", mode, got, want)
		}
	}

	c := newClock()
	var out, errw bytes.Buffer
	r := New(Options{Mode: ModeJSON, Out: &out, Err: &errw})
	r.Event(retry(c))
	r.SetFiles([]File{{Name: "d/a", Size: 3}})
	feed(r, c, 0, "d/a", 3, 3, time.Second)
	r.Finish(c.now(), 0)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := `{"v":1,"event":"retry","time":"2026-01-02T03:04:05Z","file":-1,"name":"zfs://h:7070/d","url":"zfs://h:7070/d","total":-1,"done":0,"attempt":2,"retry_in_seconds":1.5,"reason":"server busy","error":"busy"}`
	if lines[0] != want {
		t.Fatalf("first event\n%s\nwant\n%s", lines[0], want)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil || m["files"] != 1.0 || m["complete"] != 1.0 {
		t.Fatalf("the list retry counted as a file: %s", lines[len(lines)-1])
	}
	if errw.Len() != 0 {
		t.Fatalf("stderr %q", errw.String())
	}
}

// With -o -, the JSON goes to stderr, where error lines go: only JSON
// then, the error event carrying the message.
func TestJSONSameWriterHasOnlyJSON(t *testing.T) {
	for _, same := range []func(w io.Writer) Options{
		func(w io.Writer) Options { return Options{Out: w, Err: w} },
		func(w io.Writer) Options { return Options{Out: w} },
	} {
		c := newClock()
		var out bytes.Buffer
		o := same(&out)
		o.Mode, o.Files = ModeJSON, []File{{Name: "-", Size: -1}}
		r := New(o)
		e := ev(c, fetch.EventStart)
		e.Total = 10
		r.Event(e)
		r.Event(fetch.Event{Kind: fetch.EventError, Time: c.now(), Total: 10,
			Err: &fetch.StatusError{Status: wire.StatusNotFound, Message: "not found: /x"}})
		r.Finish(c.now(), 3)
		var kinds []string
		for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("not JSON: %q in\n%s", l, out.String())
			}
			kinds = append(kinds, m["event"].(string))
			if m["event"] == "error" && m["error"] != "not found: /x" {
				t.Errorf("error event %s", l)
			}
		}
		if got := strings.Join(kinds, " "); got != "start error exit" {
			t.Fatalf("events %q", got)
		}
	}
}

// funcWriter is a writer that cannot be compared.
type funcWriter func([]byte) (int, error)

func (f funcWriter) Write(b []byte) (int, error) { return f(b) }

func TestSameWriter(t *testing.T) {
	var a, b bytes.Buffer
	fw := funcWriter(a.Write)
	for _, tc := range []struct {
		x, y io.Writer
		want bool
	}{{&a, &a, true}, {&a, &b, false}, {fw, fw, false}, {fw, &a, false}, {nil, nil, true}} {
		if got := sameWriter(tc.x, tc.y); got != tc.want {
			t.Errorf("sameWriter(%T, %T) = %v", tc.x, tc.y, got)
		}
	}
}

// unprintable is what human.Printable replaces.
func unprintable(c rune) bool { return human.Printable(string(c)) != string(c) }

// A run that fails before any file (a tree that cannot be listed) says why
// in every mode: one harmless line for people, the error in the JSON exit.
func TestAbort(t *testing.T) {
	err := errors.New("listing zfs://h/d: not found: /d\x1b[2J\nzfetch: forged")
	for _, mode := range []Mode{ModePlain, ModeQuiet, ModeTTY, ModeJSON} {
		var out, errw bytes.Buffer
		r := New(Options{Mode: mode, Out: &out, Err: &errw, Width: func() int { return 20 }})
		r.Abort(time.Now(), 3, err)
		people := errw.String()
		if mode == ModePlain || mode == ModeTTY {
			people = out.String()
		}
		if want := "zfetch: listing zfs://h/d: not found: /d?[2J?zfetch: forged\n"; people != want {
			t.Errorf("mode %v: printed %q, want %q", mode, people, want)
		}
		if mode != ModeJSON {
			continue
		}
		var exit struct {
			Event, Error string
			Code         int
		}
		if e := json.Unmarshal(out.Bytes(), &exit); e != nil || exit.Event != "exit" || exit.Code != 3 || exit.Error != err.Error() {
			t.Errorf("JSON %q: %+v %v", out.String(), exit, e)
		}
	}
}
