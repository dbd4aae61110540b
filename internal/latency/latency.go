// Package latency is the latency histogram of the project's load tools
// (cmd/rtbench and the bench module): log-linear buckets in microseconds,
// cheap to fill on a client's hot loop and to ship between processes as
// sparse [bucket, count] pairs.
package latency

import (
	"math/bits"
	"time"
)

// Hist is a log-linear latency histogram in microseconds: exact below 16 µs,
// then 16 buckets per power of two (at most 1/16 = 6 % relative error).
// The zero value is empty.
type Hist [histBuckets]uint64

const (
	histSub     = 16
	histBuckets = 512
)

func histIndex(us uint64) int {
	if us < histSub {
		return int(us)
	}
	e := bits.Len64(us) - 5 // us>>e is in [16, 32)
	i := (e+1)*histSub + int(us>>e) - histSub
	return min(i, histBuckets-1)
}

// histUpper is the largest value (µs) counted in bucket i.
func histUpper(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	e := i/histSub - 1
	m := uint64(i%histSub + histSub)
	return (m+1)<<e - 1
}

// Add counts one latency (negative: 0).
func (h *Hist) Add(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	h[histIndex(uint64(us))]++
}

// Merge adds o's counts to h.
func (h *Hist) Merge(o *Hist) {
	for i, v := range o {
		h[i] += v
	}
}

// Count is the number of latencies counted.
func (h *Hist) Count() uint64 {
	var n uint64
	for _, v := range h {
		n += v
	}
	return n
}

// Quantile returns the upper bound of the bucket holding quantile q.
func (h *Hist) Quantile(q float64) time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(q * float64(n))
	if rank >= n {
		rank = n - 1
	}
	var seen uint64
	for i, v := range h {
		seen += v
		if seen > rank {
			return time.Duration(histUpper(i)) * time.Microsecond
		}
	}
	return 0
}

// Sparse lists the non-empty buckets as [index, count] pairs.
func (h *Hist) Sparse() [][2]uint64 {
	var out [][2]uint64
	for i, v := range h {
		if v != 0 {
			out = append(out, [2]uint64{uint64(i), v})
		}
	}
	return out
}

// AddSparse adds the pairs of another histogram's Sparse (unknown buckets ignored).
func (h *Hist) AddSparse(s [][2]uint64) {
	for _, p := range s {
		if p[0] < histBuckets {
			h[p[0]] += p[1]
		}
	}
}
