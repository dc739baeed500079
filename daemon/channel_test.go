package daemon

import (
	"reflect"
	"testing"
)

func TestConnsRoundTrip(t *testing.T) {
	in := []connMeta{{1, 0, "127.0.0.1:5000"}, {2, connProxy | connAdmit, "[::1]:6000"}, {1 << 60, connProxy, ""}}
	got, err := parseConns(appendConns(nil, in)[1:])
	if err != nil || !reflect.DeepEqual(got, in) {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestDoneRoundTrip(t *testing.T) {
	in := []doneMeta{{1, 100, 3, "closed"}, {9, 0, 0, ""}}
	got, err := parseDone(appendDone(nil, in)[1:])
	if err != nil || !reflect.DeepEqual(got, in) {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestAdmitRoundTrip(t *testing.T) {
	id, key, err := parseAdmit(appendAdmit(nil, 7, "203.0.113.7")[1:])
	if err != nil || id != 7 || key != "203.0.113.7" {
		t.Fatalf("got %d %q %v", id, key, err)
	}
	for _, ok := range []bool{true, false} {
		id, got, err := parseAdmitted(appendAdmitted(nil, 9, ok)[1:])
		if err != nil || id != 9 || got != ok {
			t.Fatalf("got %d %v %v", id, got, err)
		}
	}
	if _, _, err := parseAdmit([]byte{0, 0, 0, 0, 0, 0, 0, 1, 5, 'a'}); err == nil {
		t.Error("a key shorter than its length was accepted")
	}
}

func FuzzParseConns(f *testing.F) {
	f.Add(appendConns(nil, []connMeta{{1, connProxy, "127.0.0.1:1"}})[1:])
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		cs, err := parseConns(p)
		if err != nil {
			return
		}
		if len(cs) > maxBatch {
			t.Fatalf("%d entries accepted", len(cs))
		}
		if again, err := parseConns(appendConns(nil, cs)[1:]); err != nil || !reflect.DeepEqual(again, cs) {
			t.Fatalf("re-encode: %v %v", again, err)
		}
	})
}

func FuzzParseDone(f *testing.F) {
	f.Add(appendDone(nil, []doneMeta{{1, 2, 3, "ok"}})[1:])
	f.Fuzz(func(t *testing.T, p []byte) {
		ds, err := parseDone(p)
		if err != nil {
			return
		}
		if again, err := parseDone(appendDone(nil, ds)[1:]); err != nil || !reflect.DeepEqual(again, ds) {
			t.Fatalf("re-encode: %v %v", again, err)
		}
	})
}
