package latency

import (
	"testing"
	"time"
)

// TestBuckets: every value lands in a bucket whose upper bound is at least
// the value and within 1/16 of it; buckets are increasing.
func TestBuckets(t *testing.T) {
	for _, us := range []uint64{0, 1, 15, 16, 17, 31, 32, 100, 1000, 12345, 1 << 30} {
		i := histIndex(us)
		up := histUpper(i)
		if up < us || float64(up-us) > float64(us)/16+1 {
			t.Errorf("%d µs: bucket %d, upper %d", us, i, up)
		}
	}
	for i := 1; i < histBuckets; i++ {
		if histUpper(i) <= histUpper(i-1) {
			t.Fatalf("bucket %d's upper %d not above %d", i, histUpper(i), histUpper(i-1))
		}
	}
}

// TestQuantileAndSparse: quantiles of a known sample, and a histogram sent
// as its sparse form comes back equal.
func TestQuantileAndSparse(t *testing.T) {
	var h Hist
	if h.Quantile(0.5) != 0 {
		t.Fatal("empty histogram: quantile not 0")
	}
	for i := 1; i <= 100; i++ {
		h.Add(time.Duration(i) * time.Millisecond)
	}
	h.Add(-time.Second) // counts as 0
	if h.Count() != 101 {
		t.Fatalf("count %d", h.Count())
	}
	for q, want := range map[float64]time.Duration{0.5: 50 * time.Millisecond, 0.99: 99 * time.Millisecond} {
		got := h.Quantile(q)
		if got < want || got > want+want/16 {
			t.Errorf("quantile %v = %v, want about %v", q, got, want)
		}
	}
	var back Hist
	back.AddSparse(h.Sparse())
	back.AddSparse([][2]uint64{{histBuckets + 5, 1}}) // out of range: ignored
	if back != h {
		t.Fatal("sparse round trip differs")
	}
	var m Hist
	m.Merge(&h)
	m.Merge(&h)
	if m.Count() != 2*h.Count() {
		t.Fatalf("merged count %d", m.Count())
	}
}
