package progress

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/fetch"
	"github.com/zfs-serve/zfs-serve/internal/human"
	"github.com/zfs-serve/zfs-serve/wire"
)

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{"plain ü✓": "plain ü✓", "a\nb": "a?b", "\x1b[2Jx": "?[2Jx", "bad\xffutf8": "bad?utf8", "\u009bC1": "?C1",
		"tab\tdel\x7f": "tab?del?", "cr\r": "cr?", "bidi\u202eevil": "bidi?evil", "ls\u2028ps\u2029": "ls?ps?", "nbsp\u00a0ok 文件": "nbsp\u00a0ok 文件"} {
		if got := human.Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
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

// unprintable is what human.Printable replaces.
func unprintable(c rune) bool { return human.Printable(string(c)) != string(c) }
