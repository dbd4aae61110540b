package realtime

import (
	"hash/maphash"
	"sync"
)

// hub routes published events to the subscribers of each stream.
//
// Appending an event to a stream's buffer and handing it to the stream's
// subscribers happen under one per-key stripe lock, and so do attaching and
// detaching subscribers: a subscriber attached after an append finds that
// event in the buffer, one attached before it gets it live, and positions
// (Entry.Seq) drop whatever it would get twice.
type hub struct {
	seed    maphash.Seed
	stripes [256]sync.Mutex

	mu   sync.RWMutex
	subs map[StreamKey]*subList
}

type subList struct {
	subs []*subscriber // mutated under the key's stripe lock and hub.mu
}

func newHub() *hub {
	return &hub{seed: maphash.MakeSeed(), subs: make(map[StreamKey]*subList)}
}

// lockPair locks the stripes of a record's stream and of its collection's
// (in index order, once when they are the same); unlockPair(i, j) undoes it.
func (h *hub) lockPair(a, b StreamKey) (i, j uint64) {
	i, j = h.stripeIndex(a), h.stripeIndex(b)
	if i > j {
		i, j = j, i
	}
	h.stripes[i].Lock()
	if i != j {
		h.stripes[j].Lock()
	}
	return i, j
}

func (h *hub) unlockPair(i, j uint64) {
	if i != j {
		h.stripes[j].Unlock()
	}
	h.stripes[i].Unlock()
}

func (h *hub) stripe(k StreamKey) *sync.Mutex { return &h.stripes[h.stripeIndex(k)] }

func (h *hub) stripeIndex(k StreamKey) uint64 {
	var mh maphash.Hash
	mh.SetSeed(h.seed)
	mh.WriteString(k.Tenant)
	mh.WriteByte(0)
	mh.WriteString(k.Collection)
	mh.WriteByte(0)
	mh.WriteString(k.ID)
	return mh.Sum64() % uint64(len(h.stripes))
}

// attach adds s to its key's subscribers; the caller holds the key's stripe.
func (h *hub) attachLocked(s *subscriber) {
	h.mu.Lock()
	l := h.subs[s.key]
	if l == nil {
		l = &subList{}
		h.subs[s.key] = l
	}
	s.idx = len(l.subs)
	l.subs = append(l.subs, s)
	h.mu.Unlock()
}

// detach removes s from its key's subscribers, if attached.
func (h *hub) detach(s *subscriber) {
	mu := h.stripe(s.key)
	mu.Lock()
	h.mu.Lock()
	if l := h.subs[s.key]; l != nil && s.idx >= 0 && s.idx < len(l.subs) && l.subs[s.idx] == s {
		last := len(l.subs) - 1
		l.subs[s.idx] = l.subs[last]
		l.subs[s.idx].idx = s.idx
		l.subs[last] = nil
		l.subs = l.subs[:last]
		if len(l.subs) == 0 {
			delete(h.subs, s.key)
		}
	}
	s.idx = -1
	h.mu.Unlock()
	mu.Unlock()
}

// subscribersLocked returns key's subscribers; the caller holds the key's
// stripe, so the slice does not change while it is read.
func (h *hub) subscribersLocked(k StreamKey) []*subscriber {
	h.mu.RLock()
	l := h.subs[k]
	h.mu.RUnlock()
	if l == nil {
		return nil
	}
	return l.subs
}

// each calls f for every attached subscriber of a tenant's collection
// (records and the collection stream), outside any stripe lock.
func (h *hub) collect(tenant, collection string) []*subscriber {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var out []*subscriber
	for k, l := range h.subs {
		if k.Tenant == tenant && k.Collection == collection {
			out = append(out, l.subs...)
		}
	}
	return out
}
