package daemon

import (
	"reflect"
	"testing"
)

func TestListenRoundTrip(t *testing.T) {
	tests := [][]listenMeta{
		{},
		{{0, "127.0.0.1:7070"}},
		{{listenProxy, "[::1]:7071"}, {0, ""}, {0, "0.0.0.0:1"}},
	}
	for _, in := range tests {
		got, err := parseListen(appendListen(nil, in)[1:])
		if err != nil || !reflect.DeepEqual(got, in) {
			t.Errorf("%v: got %v, %v", in, got, err)
		}
	}
}

func TestListenMalformed(t *testing.T) {
	tests := map[string][]byte{
		"empty":          {},
		"count too high": {maxListeners + 1},
		"short entry":    {1, 0},
		"short address":  {1, 0, 5, 'a'},
		"trailing bytes": {0, 'x'},
	}
	for name, p := range tests {
		if got, err := parseListen(p); err == nil {
			t.Errorf("%s: accepted as %v", name, got)
		}
	}
}

func TestAcceptedRoundTrip(t *testing.T) {
	for _, n := range []uint32{0, 1, 64, 1<<32 - 1} {
		m := appendAccepted(nil, n)
		got, err := parseAccepted(m[1:])
		if m[0] != msgAccepted || err != nil || got != n {
			t.Errorf("%d: got %d, %v", n, got, err)
		}
	}
	if _, err := parseAccepted([]byte{0, 0, 1}); err == nil {
		t.Error("a short count was accepted")
	}
	if _, err := parseAccepted([]byte{0, 0, 0, 1, 0}); err == nil {
		t.Error("a long count was accepted")
	}
}

func TestLimitRoundTrip(t *testing.T) {
	for _, n := range []uint32{0, 1, 5000, 1<<32 - 1} {
		m := appendLimit(nil, n)
		got, err := parseLimit(m[1:])
		if m[0] != msgLimit || err != nil || got != n {
			t.Errorf("%d: got %d, %v", n, got, err)
		}
	}
	for _, p := range [][]byte{{}, {0, 0, 1}, {0, 0, 0, 1, 0}} {
		if _, err := parseLimit(p); err == nil {
			t.Errorf("%v accepted", p)
		}
	}
}

func FuzzParseListen(f *testing.F) {
	f.Add(appendListen(nil, []listenMeta{{listenProxy, "127.0.0.1:1"}, {0, "[::1]:2"}})[1:])
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		ls, err := parseListen(p)
		if err != nil {
			return
		}
		if len(ls) > maxListeners {
			t.Fatalf("%d listeners accepted", len(ls))
		}
		if again, err := parseListen(appendListen(nil, ls)[1:]); err != nil || !reflect.DeepEqual(again, ls) {
			t.Fatalf("re-encode: %v %v", again, err)
		}
	})
}
