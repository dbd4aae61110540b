package realtime

// Subscription gauges (SubscriptionStats): counted where subscriptions
// and channel patterns are added and removed, under the lock that guards
// them, and read under it.

// hubCounts are the hub's subscriptions and streams, of records and of
// collections (under hub.mu).
type hubCounts struct {
	records, collections             int
	recordStreams, collectionStreams int
}

// add changes the counts of key's kind by subs subscriptions and streams
// streams.
func (n *hubCounts) add(key StreamKey, subs, streams int) {
	if key.ID != "" {
		n.records += subs
		n.recordStreams += streams
		return
	}
	n.collections += subs
	n.collectionStreams += streams
}

// counts returns the hub's subscriptions and streams.
func (h *hub) counts() SubscriptionStats {
	h.mu.RLock()
	n := h.n
	h.mu.RUnlock()
	return SubscriptionStats{
		Records: uint64(n.records), Collections: uint64(n.collections),
		RecordStreams: uint64(n.recordStreams), CollectionStreams: uint64(n.collectionStreams),
	}
}

// countChannels adds to the registry's count the channels t gained since
// it had before (registry lock held; deferred by the methods that change
// t's channels).
func (r *registry) countChannels(t *target, before int) {
	r.nchan += len(t.channels) - before
}

// channelCount returns the channel patterns of every target.
func (r *registry) channelCount() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return uint64(r.nchan)
}
