package gormhook

import (
	"hash/maphash"
	"sync"
)

// sequencer keeps concurrent flushes from publishing an older version of a
// record after a newer one.
//
// Each flush takes a sequence number right after its commit, before it
// reloads anything. The flush with the higher number therefore reloads after
// every commit with a lower number: its versions are at least as new. A
// record's event is published only if no flush with a higher number has
// published that record already; a stale version (or a changed after a
// newer deleted) is dropped instead of overwriting the subscribers' view.
//
// Memory: a record's entry is needed only while a flush with a lower number
// may still publish; entries below the lowest number in flight are pruned.
type sequencer struct {
	mu       sync.Mutex
	next     uint64
	inflight map[uint64]struct{}

	seed    maphash.Seed
	stripes [64]stripe
}

type stripe struct {
	mu    sync.Mutex
	last  map[string]uint64 // record → number of the flush that last published it
	limit int               // prune when last grows past this
}

const minPruneLimit = 256

func newSequencer() *sequencer {
	return &sequencer{inflight: map[uint64]struct{}{}, seed: maphash.MakeSeed()}
}

// begin numbers a flush that starts now; end must follow.
func (s *sequencer) begin() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	s.inflight[s.next] = struct{}{}
	return s.next
}

func (s *sequencer) end(seq uint64) {
	s.mu.Lock()
	delete(s.inflight, seq)
	s.mu.Unlock()
}

// low is the lowest number a flush in flight or to come can have.
func (s *sequencer) low() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	low := s.next + 1
	for q := range s.inflight {
		low = min(low, q)
	}
	return low
}

// publish calls pub for record unless a flush numbered above seq has
// published it; it reports whether pub was called. Calls for one record are
// serialised.
func (s *sequencer) publish(record string, seq uint64, pub func()) bool {
	st := &s.stripes[maphash.String(s.seed, record)%uint64(len(s.stripes))]
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.last[record] > seq {
		return false
	}
	pub()
	if st.last == nil {
		st.last = map[string]uint64{}
		st.limit = minPruneLimit
	}
	st.last[record] = seq
	if len(st.last) > st.limit {
		low := s.low()
		for k, q := range st.last {
			if q < low {
				delete(st.last, k)
			}
		}
		st.limit = max(minPruneLimit, 2*len(st.last))
	}
	return true
}
