package realtime

import (
	"sync/atomic"
	"time"
)

// Delivery metering: frames, bytes and writes per transport, and the
// publish-to-write latency of live record events (metered), counted at
// no measurable cost on the delivery path.
//
// Nothing is counted per frame in shared memory. The drainer of a conn
// (conn.drainMetered) adds each write to a tally, a plain struct of its
// own goroutine: a worker of the writer pool keeps one for its life and
// adds it to the pool's meter (atomics) every tallyJobs jobs and before it
// waits for work; a conn drained by its handler goroutine (HTTP/2, long
// polls) adds its tally once per wake. Latencies go into the tally's
// histogram buckets (a few comparisons, no allocation), from one clock
// reading per drain (the writer pool reads the clock anyway for its stall
// supervisor) taken only when the batch holds a live record event.

// connKind is a conn's transport, the label of its counts.
type connKind uint8

const (
	kindOther connKind = iota // a transport that does not say
	kindSSERecord
	kindSSECollection
	kindSSEChannel
	kindSSEPushes
	kindWebSocket
	kindPoll
	numKinds
)

// kindNames are the transports' names in PerTransport.Each (metric labels).
var kindNames = [numKinds]string{"other", "sse_record", "sse_collection", "sse_channel", "sse_pushes", "websocket", "poll"}

// tallyJobs is how many jobs a writer-pool worker tallies before it adds
// its tally to the meter (it also does before waiting for work).
const tallyJobs = 64

// Latency buckets (upper bounds, nanoseconds): those of DeliveryStats.Latency
// (publish to write) and of the fan-out histograms.
var (
	latencyBounds = []int64{
		int64(500 * time.Microsecond), int64(time.Millisecond), int64(2500 * time.Microsecond),
		int64(5 * time.Millisecond), int64(10 * time.Millisecond), int64(25 * time.Millisecond),
		int64(50 * time.Millisecond), int64(100 * time.Millisecond), int64(250 * time.Millisecond),
		int64(500 * time.Millisecond), int64(time.Second), int64(2500 * time.Millisecond),
		int64(5 * time.Second), int64(10 * time.Second),
	}
	fanoutBounds = []int64{
		int64(10 * time.Microsecond), int64(25 * time.Microsecond), int64(50 * time.Microsecond),
		int64(100 * time.Microsecond), int64(250 * time.Microsecond), int64(500 * time.Microsecond),
		int64(time.Millisecond), int64(2500 * time.Microsecond), int64(5 * time.Millisecond),
		int64(10 * time.Millisecond), int64(25 * time.Millisecond), int64(50 * time.Millisecond),
		int64(100 * time.Millisecond), int64(250 * time.Millisecond), int64(time.Second),
	}
)

// maxBuckets bounds the buckets of a histogram (bounds plus +Inf).
const maxBuckets = 16

// bucketOf returns the index of the bucket of d in bounds (len(bounds):
// above the last). Negative durations (clocks of two nodes) count as 0.
func bucketOf(bounds []int64, d int64) int {
	for i, b := range bounds {
		if d <= b {
			return i
		}
	}
	return len(bounds)
}

// deliveryMeter holds what the drainers of one plugin wrote (writerPool.meter).
type deliveryMeter struct {
	frames, bytes, writes [numKinds]atomic.Uint64
	latency               atomicHistogram
	// stalls counts the extra workers the stall supervisor started.
	stalls atomic.Uint64
}

// tally is one drainer's counts since it last added them to the meter.
// Only its drainer touches it: no atomics.
type tally struct {
	frames, bytes, writes [numKinds]uint64
	lat                   [maxBuckets]uint64
	latSum, latN          uint64
	jobs                  int
}

// add counts one successful write of batch to c, and the latency of its
// live record events at now (zero: read now, if needed). It returns the
// clock reading used, for the next write of the same drain.
func (t *tally) add(c *conn, batch []out, now time.Time) time.Time {
	n := 0
	for i := range batch {
		o := &batch[i]
		if o.ev == keepaliveEvent {
			continue
		}
		n++
		if metered(o) {
			if now.IsZero() {
				now = time.Now()
			}
			d := max(int64(now.Sub(o.ev.Time)), 0)
			t.lat[bucketOf(latencyBounds, d)]++
			t.latSum += uint64(d)
			t.latN++
		}
	}
	if n == 0 && c.wrote == 0 {
		return now
	}
	k := c.kind
	t.frames[k] += uint64(n)
	t.bytes[k] += uint64(c.wrote)
	t.writes[k]++
	c.wrote = 0
	if n > 0 {
		c.frames.Add(uint64(n))
	}
	return now
}

// metered reports whether o is a live record event, whose latency is
// metered: a published event of a subscription, published since the
// subscription began. Not metered: a snapshot or tombstone from the
// Loader, resync frames (no Event.Time: nothing published them), events
// replayed from before the subscription, and pushes (no subscription).
func metered(o *out) bool {
	s := o.sub
	return s != nil && o.ev != nil && !o.ev.Time.IsZero() && !o.ev.Time.Before(s.started)
}

// flush adds t to m and clears it.
func (t *tally) flush(m *deliveryMeter) {
	t.jobs = 0
	for k := range numKinds {
		if t.writes[k] == 0 {
			continue
		}
		m.frames[k].Add(t.frames[k])
		m.bytes[k].Add(t.bytes[k])
		m.writes[k].Add(t.writes[k])
		t.frames[k], t.bytes[k], t.writes[k] = 0, 0, 0
	}
	if t.latN == 0 {
		return
	}
	for i, v := range t.lat {
		if v != 0 {
			m.latency.counts[i].Add(v)
			t.lat[i] = 0
		}
	}
	m.latency.sum.Add(t.latSum)
	t.latSum, t.latN = 0, 0
}

// atomicHistogram is a histogram updated with atomics: counts per bucket
// (not cumulative) and the sum in nanoseconds (the number of observations
// is the buckets' total).
type atomicHistogram struct {
	counts [maxBuckets]atomic.Uint64
	sum    atomic.Uint64
}

// observe adds one observation of d to h, bucketed by bounds.
func (h *atomicHistogram) observe(bounds []int64, d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(bounds, v)].Add(1)
	h.sum.Add(uint64(v))
}

// snapshot returns h as a Histogram with bounds.
func (h *atomicHistogram) snapshot(bounds []int64) Histogram {
	out := Histogram{
		Bounds: make([]float64, len(bounds)),
		Counts: make([]uint64, len(bounds)+1),
	}
	for i, b := range bounds {
		out.Bounds[i] = time.Duration(b).Seconds()
	}
	for i := range out.Counts {
		out.Counts[i] = h.counts[i].Load()
	}
	var n uint64
	for _, c := range out.Counts {
		n += c
	}
	out.Count = n
	out.Sum = time.Duration(h.sum.Load()).Seconds()
	return out
}

// perTransport converts counts per kind.
func perTransport(get func(k connKind) uint64) PerTransport {
	return PerTransport{
		SSERecord:     get(kindSSERecord),
		SSECollection: get(kindSSECollection),
		SSEChannel:    get(kindSSEChannel),
		SSEPushes:     get(kindSSEPushes),
		WebSocket:     get(kindWebSocket),
		Poll:          get(kindPoll),
		Other:         get(kindOther),
	}
}

// fill adds the meter's counts to s.
func (m *deliveryMeter) fill(s *Stats) {
	s.Delivery.Frames = perTransport(func(k connKind) uint64 { return m.frames[k].Load() })
	s.Delivery.Bytes = perTransport(func(k connKind) uint64 { return m.bytes[k].Load() })
	s.Delivery.Writes = perTransport(func(k connKind) uint64 { return m.writes[k].Load() })
	s.Delivery.Latency = m.latency.snapshot(latencyBounds)
	s.Writers.Stalls = m.stalls.Load()
}
