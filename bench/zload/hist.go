package main

import (
	"math/bits"
	"time"
)

// hist is a log-linear latency histogram in nanoseconds: exact below 64 ns,
// then 64 buckets per power of two (under 1.6% error), up to 2^40 ns. Each
// connection has its own, merged at the end, so recording is a few
// instructions and no shared cache line.
type hist struct {
	counts [histBuckets]uint32
	n      uint64
	max    time.Duration
}

const (
	subBits     = 6
	sub         = 1 << subBits
	maxExp      = 40 - subBits - 1
	histBuckets = sub + (maxExp+1)*sub
)

func bucket(v uint64) int {
	if v < sub {
		return int(v)
	}
	e := bits.Len64(v) - subBits - 1
	if e > maxExp {
		return histBuckets - 1
	}
	return sub + e*sub + int(v>>uint(e)) - sub
}

// lower returns the smallest value that falls in bucket i.
func lower(i int) uint64 {
	if i < sub {
		return uint64(i)
	}
	e := (i - sub) / sub
	m := uint64(sub + (i-sub)%sub)
	return m << uint(e)
}

func (h *hist) add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucket(uint64(d))]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the value at quantile q (0..1): the middle of the
// bucket holding the q*n-th sample, or the exact maximum for the last one.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = max(rank, 1)
	if rank >= h.n {
		return h.max
	}
	var seen uint64
	for i, c := range h.counts {
		seen += uint64(c)
		if seen >= rank {
			lo, hi := lower(i), lower(i+1)
			if i+1 >= histBuckets {
				hi = lo
			}
			return min(time.Duration(lo+(hi-lo)/2), h.max)
		}
	}
	return h.max
}
