package progress

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/fetch"
)

// A file with mirrors: its line and its JSON events say how many sources
// are in use, a retry names its mirror, and a mirror left out is a
// message (plain) and a "source" event (JSON).
func TestSources(t *testing.T) {
	events := func(c *clock) []fetch.Event {
		var es []fetch.Event
		add := func(k fetch.EventKind, done int64, f func(*fetch.Event)) {
			e := ev(c, k)
			e.File, e.Name, e.Source, e.Total, e.Done, e.Sources, e.SourcesLive = 0, "big.iso", "http://a/big.iso", 100<<20, done, 3, 3
			if f != nil {
				f(&e)
			}
			es = append(es, e)
		}
		add(fetch.EventStart, 0, nil)
		c.advance(6 * time.Second)
		add(fetch.EventRetry, 10<<20, func(e *fetch.Event) {
			e.Attempt, e.Delay, e.Mirror, e.Err = 1, time.Second, "http://b/big.iso", errors.New("HTTP 503")
		})
		add(fetch.EventSource, 20<<20, func(e *fetch.Event) {
			e.Mirror, e.Err, e.SourcesLive = "http://b/big.iso", errors.New("its file differs: size 1 bytes, not 2"), 2
		})
		c.advance(6 * time.Second)
		add(fetch.EventProgress, 60<<20, func(e *fetch.Event) { e.SourcesLive = 2 })
		add(fetch.EventDone, 100<<20, func(e *fetch.Event) { e.SourcesLive = 2; e.SHA256 = "ab" })
		return es
	}

	var plain bytes.Buffer
	c := newClock()
	r := New(Options{Mode: ModePlain, Out: &plain})
	for _, e := range events(c) {
		r.Event(e)
	}
	for _, want := range []string{
		"zfetch: big.iso: http://b/big.iso: HTTP 503, retrying in 1s",
		"zfetch: big.iso: no longer using http://b/big.iso: its file differs: size 1 bytes, not 2 (2 of 3 sources left)",
		" 2/3 sources\n",
	} {
		if !strings.Contains(plain.String(), want) {
			t.Errorf("plain output lacks %q:\n%s", want, plain.String())
		}
	}

	var js bytes.Buffer
	c = newClock()
	r = New(Options{Mode: ModeJSON, Out: &js})
	for _, e := range events(c) {
		r.Event(e)
	}
	seen := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(js.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		seen[m["event"].(string)] = m
		if m["sources"] != 3.0 || m["sources_live"] == nil {
			t.Errorf("no sources fields: %s", line)
		}
	}
	if s := seen["source"]; s == nil || s["mirror"] != "http://b/big.iso" || s["sources_live"] != 2.0 || !strings.Contains(s["error"].(string), "differs") {
		t.Errorf("source event: %v", s)
	}
	if s := seen["retry"]; s == nil || s["mirror"] != "http://b/big.iso" {
		t.Errorf("retry event: %v", s)
	}
	if s := seen["done"]; s == nil || s["sha256"] != "ab" {
		t.Errorf("done event: %v", s)
	}
}
