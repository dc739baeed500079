package progress

import (
	"encoding/json"
	"math"
	"time"

	"github.com/zfs-serve/zfs-serve/fetch"
)

// JSON events: one object per line, keys in a fixed order; see
// docs/ZFETCH.md for the schema.
func (r *Renderer) json(t time.Time, f *file, e *fetch.Event, extra ...kv) {
	if r.o.Mode != ModeJSON {
		return
	}
	o := obj{{"v", 1}, {"event", e.Kind.String()}, {"time", stamp(t)},
		{"file", e.File}, {"name", f.Name}, {"url", e.Source}, {"total", f.Size}, {"done", f.done}}
	o = append(o, extra...)
	if f.sources > 1 {
		o = append(o, kv{"sources", f.sources}, kv{"sources_live", f.live})
	}
	r.writeJSON(o)
}

func (r *Renderer) writeJSON(o obj) {
	b, err := json.Marshal(o)
	if err != nil {
		b, _ = json.Marshal(obj{{"v", 1}, {"event", "note"}, {"message", err.Error()}})
	}
	r.o.Out.Write(append(b, '\n'))
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func round(x float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Round(x*p) / p
}

// kv is one member of a JSON object.
type kv struct {
	k string
	v any
}

// obj is a JSON object that keeps its members' order.
type obj []kv

func (o obj) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	for i, m := range o {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(m.k)
		v, err := json.Marshal(m.v)
		if err != nil {
			return nil, err
		}
		b = append(append(append(b, k...), ':'), v...)
	}
	return append(b, '}'), nil
}
