package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsMonotonic(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<20; v++ {
		b := bucket(v)
		if b < prev || b > prev+1 {
			t.Fatalf("bucket(%d)=%d after %d", v, b, prev)
		}
		if lower(b) > v || (b+1 < histBuckets && lower(b+1) <= v) {
			t.Fatalf("value %d outside bucket %d [%d,%d)", v, b, lower(b), lower(b+1))
		}
		prev = b
	}
}

func TestQuantile(t *testing.T) {
	var h hist
	var all []time.Duration
	for range 100000 {
		d := time.Duration(rand.ExpFloat64() * float64(200*time.Microsecond))
		h.add(d)
		all = append(all, d)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := all[int(q*float64(len(all)))-1]
		got := h.quantile(q)
		if diff := float64(got-want) / float64(want); diff > 0.02 || diff < -0.02 {
			t.Errorf("q%.3f: got %v, want %v", q, got, want)
		}
	}
	if h.quantile(1) != all[len(all)-1] {
		t.Errorf("max: got %v, want %v", h.quantile(1), all[len(all)-1])
	}
}
