package progress

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/fetch"
	"github.com/zfs-serve/zfs-serve/wire"
)

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
