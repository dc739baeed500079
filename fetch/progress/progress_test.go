package progress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

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

// TestInterruptedMessage: Ctrl-C says how far the file got, and does not
// call a file whose size the server has not given yet 100% done.
func TestInterruptedMessage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start bool // a Start event gave the size
		total int64
		done  int64
		want  string
	}{
		{"before its size", false, 0, 0, "zfetch: a: interrupted before it started\n"},
		{"halfway", true, 1000, 500, "zfetch: a: interrupted at 50.00%\n"},
		{"empty file", true, 0, 0, "zfetch: a: interrupted at 100.00%\n"},
	} {
		c := newClock()
		var out bytes.Buffer
		r := New(Options{Mode: ModePlain, Out: &out, Files: []File{{Name: "a", Size: -1}}})
		if tc.start {
			e := ev(c, fetch.EventStart)
			e.Name, e.Total = "a", tc.total
			r.Event(e)
			e = ev(c, fetch.EventProgress)
			e.Name, e.Total, e.Done = "a", tc.total, tc.done
			r.Event(e)
		}
		total := int64(-1) // as fetch emits it before the size is known
		if tc.start {
			total = tc.total
		}
		r.Event(fetch.Event{Kind: fetch.EventError, Time: c.now(), Name: "a", Total: total, Done: tc.done, Err: context.Canceled})
		if lines := strings.SplitAfter(out.String(), "\n"); lines[len(lines)-2] != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, out.String(), tc.want)
		}
	}
}

// TestSummaryCountsWhatIsNotDone: the summary of several files says how
// many failed (an interrupt included) and how many never started (still
// queued behind -j when the run ended).
func TestSummaryCountsWhatIsNotDone(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	r := New(Options{Mode: ModePlain, Out: &out, Files: []File{{Name: "a", Size: -1}, {Name: "b", Size: -1}, {Name: "c", Size: -1}}})
	feed(r, c, 0, "a", 1000, 1000, 100*time.Millisecond)
	r.Event(fetch.Event{Kind: fetch.EventError, Time: c.now(), File: 1, Name: "b", Total: -1, Err: context.Canceled})
	r.Finish(c.now(), 130)
	if !strings.Contains(out.String(), "zfetch: 1 of 3 files complete (1 failed, 1 not started), ") {
		t.Fatalf("summary: %q", out.String())
	}
	out.Reset()
	r = New(Options{Mode: ModePlain, Out: &out, Files: []File{{Name: "a", Size: -1}, {Name: "b", Size: -1}}})
	feed(r, c, 0, "a", 1000, 1000, 100*time.Millisecond)
	feed(r, c, 1, "b", 1000, 1000, 100*time.Millisecond)
	r.Finish(c.now(), 0)
	if !strings.Contains(out.String(), "zfetch: 2 of 2 files complete, ") {
		t.Fatalf("summary: %q", out.String())
	}
}
