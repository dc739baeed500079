package progress

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mattn/go-runewidth"

	"github.com/zfs-serve/zfs-serve/fetch"
	"github.com/zfs-serve/zfs-serve/wire"
)

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
