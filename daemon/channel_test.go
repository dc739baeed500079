package daemon

import (
	"reflect"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/serve"
)

func TestConnsRoundTrip(t *testing.T) {
	in := []connMeta{{1, 0, "127.0.0.1:5000"}, {2, connProxy | connAdmit, "[::1]:6000"}, {1 << 60, connProxy, ""}}
	got, err := parseConns(appendConns(nil, in)[1:])
	if err != nil || !reflect.DeepEqual(got, in) {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestDoneRoundTrip(t *testing.T) {
	in := []doneMeta{{id: 1, bytes: 100, requests: 3, outcome: "closed"}, {id: 9}}
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
	f.Add(appendDone(nil, []doneMeta{{id: 1, bytes: 2, requests: 3, outcome: "ok"}})[1:])
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

// TestBatchDue: a batch of done reports is sent lazyDoneDelay after its
// first entry, unless a prompt entry makes it due doneDelay after that
// one arrived; a later entry never delays it.
func TestBatchDue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	lazy, prompt := doneMeta{id: 1}, doneMeta{id: 2, prompt: true}
	tests := []struct {
		name    string
		entries []doneMeta
		at      []time.Time // when each arrived
		want    time.Time
		sooner  []bool // add's result per entry
	}{
		{"one lazy", []doneMeta{lazy}, []time.Time{ms(0)}, ms(20), []bool{true}},
		{"one prompt", []doneMeta{prompt}, []time.Time{ms(0)}, ms(2), []bool{true}},
		{"lazy then prompt", []doneMeta{lazy, prompt}, []time.Time{ms(0), ms(5)}, ms(7), []bool{true, true}},
		{"prompt late in a lazy batch", []doneMeta{lazy, prompt}, []time.Time{ms(0), ms(19)}, ms(20), []bool{true, false}},
		{"prompt then lazy", []doneMeta{prompt, lazy}, []time.Time{ms(0), ms(1)}, ms(2), []bool{true, false}},
		{"prompt then prompt", []doneMeta{prompt, prompt}, []time.Time{ms(0), ms(1)}, ms(2), []bool{true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := batchDue{lazy: lazyDoneDelay}
			for i, d := range tt.entries {
				if got := b.add(d, tt.at[i]); got != tt.sooner[i] {
					t.Errorf("entry %d: add = %v, want %v", i, got, tt.sooner[i])
				}
			}
			if !b.at.Equal(tt.want) {
				t.Errorf("due at %v, want %v", b.at.Sub(t0), tt.want.Sub(t0))
			}
		})
	}
}

// TestDoneAllocs: the supervisor's reader decodes a done report into the
// slice it keeps, and the outcomes a worker reports are not copied.
func TestDoneAllocs(t *testing.T) {
	in := []doneMeta{{id: 1, bytes: 4096, requests: 1, outcome: string(serve.OutcomeClosed)},
		{id: 2, outcome: string(outcomeDropped)}, {id: 3, requests: 9, outcome: string(serve.OutcomeClientGone)}}
	p := appendDone(nil, in)[1:]
	out := make([]doneMeta, 0, len(in))
	if n := testing.AllocsPerRun(100, func() { out, _ = appendDoneMetas(out[:0], p) }); n != 0 {
		t.Errorf("%v allocations per report, want 0", n)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("decoded %+v, want %+v", out, in)
	}
	// An outcome no worker sends today still decodes, as a copy.
	odd := appendDone(nil, []doneMeta{{id: 4, outcome: "something-new"}})[1:]
	if got, err := parseDone(odd); err != nil || got[0].outcome != "something-new" {
		t.Errorf("parseDone = %+v, %v", got, err)
	}
}
