package progress

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/zfs-serve/zfs-serve/fetch"
	"github.com/zfs-serve/zfs-serve/wire"
)

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
