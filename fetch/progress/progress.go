// Package progress renders fetch.Events for people and scripts: a line per
// file redrawn in place on a terminal, plain lines now and then otherwise,
// JSON lines for scripts, or only errors when quiet.
//
// The renderer is driven entirely by its input: the time of each event is
// its clock (fetch.Event.Time, and the t passed to Note and Finish), so
// tests feed it events with a fake clock and compare the output.
//
// Terminal output is bounded: the live area (one line per file, a total,
// or a total alone when there are many files) is redrawn at most once per
// MinRedraw, each line at most width-1 columns so it never wraps, with
// names stripped of control characters. Every other line for people
// (messages, errors, plain output) goes through one place, line, which
// replaces control characters too: text from the server (error messages,
// names) cannot move the cursor, recolour the terminal or add a line.
package progress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/mattn/go-runewidth"

	"github.com/zfs-serve/zfs-serve/fetch"
	"github.com/zfs-serve/zfs-serve/internal/human"
)

// Mode is how progress is shown.
type Mode int

// Modes.
const (
	ModeTTY   Mode = iota // redraw lines in place
	ModePlain             // a line per file at start and end, and every PlainEvery
	ModeJSON              // one JSON object per line per event
	ModeQuiet             // errors only
)

// Defaults.
const (
	MinRedraw  = 100 * time.Millisecond // TTY: at most 10 redraws a second
	PlainEvery = 5 * time.Second        // plain: a progress line per file this often
	JSONEvery  = time.Second            // JSON: a progress event per file this often
	ManyFiles  = 8                      // TTY: above this many files, the total line alone
	maxConns   = 8                      // TTY: connection lines shown under a ranged file
)

// File is what the renderer knows of a file before it starts.
type File struct {
	Name string
	Size int64 // -1 if unknown until its Start event
}

// Options configure a Renderer.
type Options struct {
	Mode Mode
	// Out receives the progress (TTY, plain, JSON); Err receives error
	// lines in JSON and quiet modes (in the others they go to Out). In
	// JSON mode, when Err is Out (nil, or the same writer), no error line
	// is written: it would break the JSON stream, and the error event
	// carries the message.
	Out, Err io.Writer
	// Width is the terminal's width in columns, asked at each redraw
	// (so a resized terminal is followed). Nil or <= 0 means 80.
	Width func() int
	// Files are the batch's files, indexed by fetch.Event.File.
	Files []File
	// Prog prefixes plain and error lines ("zfetch").
	Prog string
	// ExitCode, if set, adds an exit code to JSON error events.
	ExitCode func(error) int
}

// Renderer turns events into output. It is not safe for concurrent use;
// fetch.Client delivers events one at a time.
type Renderer struct {
	o     Options
	files []*file
	cond  *runewidth.Condition
	// errInJSON: Err is the JSON stream, so no human error lines.
	errInJSON bool

	// TTY
	lastDraw time.Time
	drawn    int // lines of the live area on screen
	dirty    bool

	started    time.Time
	finished   bool
	finishedAt time.Time
}

type file struct {
	File
	state   fetch.EventKind // 0 (waiting), Start..Error
	done    int64
	resumed int64
	conns   []fetch.ConnProgress
	start   time.Time // its Start event
	end     time.Time
	err     error
	skipped bool
	url     string // the URL of its last event

	sources, live int // mirrors: URLs of the file, and how many are in use

	// rate: an exponentially weighted average with a 2s time constant
	sampleT time.Time
	sampleN int64
	rate    float64

	lastLine time.Time // plain and JSON: last progress line
}

// New returns a Renderer.
func New(o Options) *Renderer {
	if o.Err == nil {
		o.Err = o.Out
	}
	if o.Prog == "" {
		o.Prog = "zfetch"
	}
	r := &Renderer{o: o, cond: &runewidth.Condition{EastAsianWidth: false}}
	r.errInJSON = o.Mode == ModeJSON && sameWriter(o.Out, o.Err)
	for _, f := range o.Files {
		r.files = append(r.files, &file{File: f})
	}
	return r
}

// SetFiles sets the batch's files once they are known (after listing a
// tree), keeping what earlier events said of them.
func (r *Renderer) SetFiles(fs []File) {
	for i, f := range fs {
		if i < len(r.files) {
			if r.files[i].state == 0 {
				r.files[i].File = f
			}
			continue
		}
		r.files = append(r.files, &file{File: f})
	}
}

func (r *Renderer) file(e *fetch.Event) *file {
	for e.File >= len(r.files) {
		r.files = append(r.files, &file{File: File{Size: -1}})
	}
	f := r.files[e.File]
	if e.Name != "" {
		f.Name = e.Name
	}
	return f
}

const rateTau = 2 * time.Second

func (f *file) sample(t time.Time, done int64) {
	if done < f.sampleN { // restarted
		f.sampleT, f.sampleN, f.rate = t, done, 0
		return
	}
	dt := t.Sub(f.sampleT)
	if dt < 50*time.Millisecond {
		return
	}
	inst := float64(done-f.sampleN) / dt.Seconds()
	if f.rate == 0 && t.Sub(f.start) <= dt {
		f.rate = inst
	} else {
		a := 1 - math.Exp(-dt.Seconds()/rateTau.Seconds())
		f.rate += a * (inst - f.rate)
	}
	f.sampleT, f.sampleN = t, done
}

// Event takes one event.
func (r *Renderer) Event(e fetch.Event) {
	if r.started.IsZero() {
		r.started = e.Time
	}
	if e.File < 0 {
		// About no file in particular (listing a tree, Name its URL):
		// only retries, in JSON with "file": -1.
		if e.Kind == fetch.EventRetry {
			r.onRetry(&file{File: File{Name: e.Name, Size: e.Total}, done: e.Done}, &e)
		}
		return
	}
	f := r.file(&e)
	if e.Source != "" {
		f.url = e.Source
	}
	if e.Total >= 0 {
		f.Size = e.Total
	}
	f.done = e.Done // retries too: their done is the bytes in place when the attempt failed
	f.conns = e.Conns
	if e.Sources > 1 {
		f.sources, f.live = e.Sources, e.SourcesLive
	}
	switch e.Kind {
	case fetch.EventStart:
		f.state, f.start, f.resumed = e.Kind, e.Time, e.Resumed
		f.sampleT, f.sampleN, f.rate = e.Time, e.Done, 0
		r.onStart(f, &e)
	case fetch.EventProgress:
		f.sample(e.Time, e.Done)
		r.onProgress(f, &e)
	case fetch.EventRetry:
		r.onRetry(f, &e)
	case fetch.EventRestart:
		f.sampleT, f.sampleN, f.rate, f.resumed = e.Time, e.Done, 0, 0
		r.message(fmt.Sprintf("%s: %v", f.Name, e.Err), false)
		r.json(e.Time, f, &e, kv{"reason", e.Err.Error()})
	case fetch.EventDone:
		f.state, f.end, f.skipped = e.Kind, e.Time, e.Skipped
		r.onDone(f, &e)
	case fetch.EventError:
		f.state, f.end, f.err = e.Kind, e.Time, e.Err
		r.onError(f, &e)
	case fetch.EventSource:
		r.message(fmt.Sprintf("%s: no longer using %s: %v (%d of %d sources left)", f.Name, e.Mirror, e.Err, f.live, f.sources), false)
		r.json(e.Time, f, &e, kv{"mirror", e.Mirror}, kv{"reason", fetch.Reason(e.Err)}, kv{"error", e.Err.Error()})
	}
	r.maybeDraw(e.Time)
}

func (r *Renderer) onRetry(f *file, e *fetch.Event) {
	if e.Mirror != "" {
		r.message(fmt.Sprintf("%s: %s: %s", f.Name, e.Mirror, fetch.RetryMessage(*e)), false)
	} else {
		r.message(fmt.Sprintf("%s: %s", f.Name, fetch.RetryMessage(*e)), false)
	}
	extra := []kv{{"attempt", e.Attempt}, {"retry_in_seconds", round(e.Delay.Seconds(), 3)},
		{"reason", fetch.Reason(e.Err)}, {"error", e.Err.Error()}}
	if e.Mirror != "" {
		extra = append(extra, kv{"mirror", e.Mirror})
	}
	r.json(e.Time, f, e, extra...)
}

func (r *Renderer) onStart(f *file, e *fetch.Event) {
	switch r.o.Mode {
	case ModePlain:
		if e.Resumed > 0 && e.Resumed < f.Size {
			r.plain("%s: %s, resuming at %s (%s already here)", f.Name, human.Bytes(f.Size), percent(e.Resumed, f.Size), human.Bytes(e.Resumed))
		} else if e.Resumed == 0 || f.Size > 0 {
			r.plain("%s: %s, starting", f.Name, human.Bytes(f.Size))
		}
		f.lastLine = e.Time
	case ModeJSON:
		r.json(e.Time, f, e, kv{"resumed", e.Resumed})
		f.lastLine = e.Time
	}
	r.dirty = true
}

func (r *Renderer) onProgress(f *file, e *fetch.Event) {
	switch r.o.Mode {
	case ModePlain:
		if e.Time.Sub(f.lastLine) >= PlainEvery && f.done < f.Size {
			r.plain("%s: %s", f.Name, f.stats())
			f.lastLine = e.Time
		}
	case ModeJSON:
		if e.Time.Sub(f.lastLine) >= JSONEvery {
			extra := []kv{{"rate", math.Round(f.rate)}}
			if eta, ok := f.eta(); ok {
				extra = append(extra, kv{"eta_seconds", round(eta.Seconds(), 1)})
			}
			r.json(e.Time, f, e, extra...)
			f.lastLine = e.Time
		}
	}
	r.dirty = true
}

func (r *Renderer) onDone(f *file, e *fetch.Event) {
	el := f.end.Sub(f.start)
	avg := f.avgRate()
	switch r.o.Mode {
	case ModePlain:
		if f.skipped {
			r.plain("%s: already complete (%s)", f.Name, human.Bytes(f.Size))
		} else {
			r.plain("%s: done, %s in %s (%s)", f.Name, human.Bytes(f.done-f.resumed), human.Delay(el), human.Rate(avg))
		}
	case ModeJSON:
		extra := []kv{{"seconds", round(el.Seconds(), 3)}, {"rate", math.Round(avg)}, {"skipped", f.skipped}}
		if e.SHA256 != "" {
			extra = append(extra, kv{"sha256", e.SHA256})
		}
		r.json(e.Time, f, e, extra...)
	}
	r.dirty = true
}

func (r *Renderer) onError(f *file, e *fetch.Event) {
	msg := fmt.Sprintf("%s: %v", f.Name, e.Err)
	switch {
	case isCanceled(e.Err) && f.Size < 0:
		msg = fmt.Sprintf("%s: interrupted before it started", f.Name)
	case isCanceled(e.Err):
		msg = fmt.Sprintf("%s: interrupted at %s", f.Name, percent(f.done, f.Size))
	}
	switch r.o.Mode {
	case ModeJSON:
		extra := []kv{{"error", e.Err.Error()}}
		if r.o.ExitCode != nil {
			extra = append(extra, kv{"code", r.o.ExitCode(e.Err)})
		}
		r.json(e.Time, f, e, extra...)
		r.errLine(msg)
	case ModeQuiet:
		if !isCanceled(e.Err) {
			r.errLine(msg)
		}
	default:
		r.message(msg, true)
	}
	r.dirty = true
}

func isCanceled(err error) bool { return errors.Is(err, context.Canceled) }

// Note shows a line that is not about a file's progress ("skipping a
// symlink"), except when quiet.
func (r *Renderer) Note(t time.Time, msg string) {
	switch r.o.Mode {
	case ModeJSON:
		r.writeJSON(obj{{"v", 1}, {"event", "note"}, {"time", stamp(t)}, {"message", msg}})
	case ModeQuiet:
	default:
		r.message(msg, false)
	}
}

// Abort ends a run that failed before any file started (a tree that
// could not be listed, a name that says no file): err is shown like a
// file's error, as one line for people, and in JSON mode the "exit" event
// carries it as "error".
func (r *Renderer) Abort(t time.Time, code int, err error) {
	if r.finished {
		return
	}
	r.message(err.Error(), true)
	r.finish(t, code, err)
}

// Fail gives up on the files that have not ended, as if each had its
// Error event with err: for a caller that leaves a download it cannot stop
// (fetch.Client.Silence), before Finish.
func (r *Renderer) Fail(t time.Time, err error) {
	for i, f := range r.files {
		if f.state == fetch.EventDone || f.state == fetch.EventError {
			continue
		}
		e := fetch.Event{Kind: fetch.EventError, Time: t, File: i, Name: f.Name, Source: f.url, Total: f.Size, Done: f.done, Resumed: f.resumed, Err: err}
		f.state, f.end, f.err = e.Kind, t, err
		r.onError(f, &e)
	}
}

// Finish draws the final state. For several files it adds a summary; in
// JSON mode an "exit" event with the exit code.
func (r *Renderer) Finish(t time.Time, code int) { r.finish(t, code, nil) }

func (r *Renderer) finish(t time.Time, code int, err error) {
	if r.finished {
		return
	}
	r.finished, r.finishedAt = true, t
	tot := r.totals()
	switch r.o.Mode {
	case ModeTTY:
		if r.dirty || len(r.files) > 1 {
			r.draw(t)
		}
		if r.drawn > 0 {
			io.WriteString(r.o.Out, "\n")
		}
		r.drawn = 0
	case ModePlain:
		if len(r.files) > 1 {
			r.plain("%d of %d files complete%s, %s in %s (%s)", tot.complete, len(r.files), tot.notDone(), human.Bytes(tot.received), human.Delay(t.Sub(r.started)), human.Rate(float64(tot.received)/max(t.Sub(r.started).Seconds(), 1e-3)))
		}
	case ModeJSON:
		o := obj{{"v", 1}, {"event", "exit"}, {"time", stamp(t)}, {"code", code},
			{"files", len(r.files)}, {"complete", tot.complete}, {"failed", tot.failed}, {"bytes", tot.received}}
		if err != nil {
			o = append(o, kv{"error", err.Error()})
		}
		r.writeJSON(o)
	}
}

// message prints a line that stays: above the live area on a terminal.
// It is not cut to the width: it scrolls up with the rest of the output
// (the terminal may wrap it), and an error must be read whole.
func (r *Renderer) message(msg string, isErr bool) {
	switch r.o.Mode {
	case ModeTTY:
		var b strings.Builder
		r.clear(&b)
		b.WriteString(r.line(msg))
		io.WriteString(r.o.Out, b.String())
		r.drawn = 0
		r.dirty = true
	case ModePlain:
		r.plain("%s", msg)
	case ModeJSON, ModeQuiet:
		if isErr {
			r.errLine(msg)
		}
	}
}

func (r *Renderer) plain(format string, args ...any) {
	io.WriteString(r.o.Out, r.line(fmt.Sprintf(format, args...)))
}

// errLine prints an error line in JSON and quiet modes; in JSON mode
// nothing when the JSON goes to the same writer (-o -): its error event
// carries the message.
func (r *Renderer) errLine(msg string) {
	if r.errInJSON {
		return
	}
	io.WriteString(r.o.Err, r.line(msg))
}

// line is every line printed for people, but the live area's: "prog:
// msg" and a newline, with control characters in msg (from the server:
// error messages, names) replaced, so that it is one harmless line.
func (r *Renderer) line(msg string) string {
	return r.o.Prog + ": " + human.Printable(msg) + "\n"
}

// sameWriter reports whether a and b are the same writer (false for
// writers that cannot be compared).
func sameWriter(a, b io.Writer) (same bool) {
	defer func() { recover() }()
	return a == b
}

func (f *file) eta() (time.Duration, bool) {
	if f.rate < 1 || f.Size < 0 {
		return 0, false
	}
	left := float64(f.Size - f.done)
	return time.Duration(left / f.rate * float64(time.Second)), true
}

func (f *file) avgRate() float64 {
	el := f.end.Sub(f.start).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(f.done-f.resumed) / el
}

func percent(done, total int64) string {
	switch {
	case total < 0:
		return "--%" // not known yet
	case total == 0:
		return "100.00%"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(done)/float64(total))
}

// stats is the file's progress on one line.
func (f *file) stats() string {
	eta := "--"
	if d, ok := f.eta(); ok {
		eta = human.Duration(d)
	}
	return fmt.Sprintf("%s %s/%s %s ETA %s%s", percent(f.done, f.Size), human.Bytes(f.done), human.Bytes(f.Size), human.Rate(f.rate), eta, f.sourcesNote())
}

// sourcesNote is " 2/3 sources" for a file with mirrors.
func (f *file) sourcesNote() string {
	if f.sources < 2 {
		return ""
	}
	return fmt.Sprintf(" %d/%d sources", f.live, f.sources)
}
