package realtime

import (
	"hash/maphash"
	"sync"
)

// hub routes the events the broker delivers to this node's subscriptions
// of each stream.
//
// Handing an event to a stream's subscriptions and attaching or detaching
// one happen under the key's stripe lock: a subscription attached before a
// delivery gets it live (held until its first frames are queued), one
// attached after finds it in the buffer, and positions (Entry.Seq) drop
// whatever it would get twice.
type hub struct {
	seed    maphash.Seed
	stripes [256]sync.Mutex

	mu   sync.RWMutex
	subs map[StreamKey]*subList
	// n counts the subscriptions and the streams, of records and of
	// collections (Stats), under mu.
	n hubCounts
}

type subList struct {
	subs []*subscription // mutated under the key's stripe lock and hub.mu
}

func newHub() *hub {
	return &hub{seed: maphash.MakeSeed(), subs: make(map[StreamKey]*subList)}
}

func (h *hub) stripe(k StreamKey) *sync.Mutex {
	var mh maphash.Hash
	mh.SetSeed(h.seed)
	mh.WriteString(k.Tenant)
	mh.WriteByte(0)
	mh.WriteString(k.Collection)
	mh.WriteByte(0)
	mh.WriteString(k.ID)
	return &h.stripes[mh.Sum64()%uint64(len(h.stripes))]
}

// attach adds s to its key's subscriptions.
func (h *hub) attach(s *subscription) {
	mu := h.stripe(s.key)
	mu.Lock()
	h.mu.Lock()
	l := h.subs[s.key]
	if l == nil {
		l = &subList{}
		h.subs[s.key] = l
		h.n.add(s.key, 0, 1)
	}
	s.idx = len(l.subs)
	l.subs = append(l.subs, s)
	h.n.add(s.key, 1, 0)
	h.mu.Unlock()
	mu.Unlock()
}

// detach removes s from its key's subscriptions, if attached.
func (h *hub) detach(s *subscription) {
	mu := h.stripe(s.key)
	mu.Lock()
	h.mu.Lock()
	if l := h.subs[s.key]; l != nil && s.idx >= 0 && s.idx < len(l.subs) && l.subs[s.idx] == s {
		last := len(l.subs) - 1
		l.subs[s.idx] = l.subs[last]
		l.subs[s.idx].idx = s.idx
		l.subs[last] = nil
		l.subs = l.subs[:last]
		h.n.add(s.key, -1, 0)
		if len(l.subs) == 0 {
			delete(h.subs, s.key)
			h.n.add(s.key, 0, -1)
		}
	}
	s.idx = -1
	h.mu.Unlock()
	mu.Unlock()
}

// deliver hands o to every subscription of key, under the key's stripe (in
// the order the broker delivers), and appends the conns to kick to sched.
func (h *hub) deliver(key StreamKey, o item, sched []*conn) []*conn {
	mu := h.stripe(key)
	mu.Lock()
	h.mu.RLock()
	l := h.subs[key]
	h.mu.RUnlock()
	if l != nil {
		for _, s := range l.subs {
			o.sub = s
			if s.offer(o) {
				sched = append(sched, s.c)
			}
		}
	}
	mu.Unlock()
	return sched
}

// each calls f, under the key's stripe, for every subscription of key
// (the broker's gap: they resume before any later delivery).
func (h *hub) each(key StreamKey, f func(*subscription)) {
	mu := h.stripe(key)
	mu.Lock()
	h.mu.RLock()
	l := h.subs[key]
	h.mu.RUnlock()
	if l != nil {
		for _, s := range l.subs {
			f(s)
		}
	}
	mu.Unlock()
}

// collect returns the subscriptions of a tenant's collection: its records'
// and the collection stream's.
func (h *hub) collect(tenant, collection string) []*subscription {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var out []*subscription
	for k, l := range h.subs {
		if k.Tenant == tenant && k.Collection == collection {
			out = append(out, l.subs...)
		}
	}
	return out
}
