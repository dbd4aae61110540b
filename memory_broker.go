package realtime

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryBroker is the in-process Broker engine. A plugin without
// Config.Broker runs on one of its own, so that one node and many take the
// same path; plugins in one process may share one through Node handles, as
// nodes share a Redis (tests of multi-node behaviour). It is the reference
// the Redis adapter is checked against (package brokertest).
//
// Appends are ordered per stream by striped locks (never one lock for all
// publishes): an event is stored in its buffer and handed to every node
// watching its stream under its stream's stripe, so every node sees one
// order. Node methods are called synchronously: a Node must not call back
// into the broker from them (the plugin's Node does not).
type MemoryBroker struct {
	buf     Buffer
	rec     recordAppender // buf's own AppendRecord with the version rule; nil: two Appends
	now     func() time.Time
	seed    maphash.Seed
	stripes [256]sync.Mutex

	nodesMu sync.RWMutex
	nodes   []*memoryNode
	down    atomic.Pointer[error] // set by SetUnavailable

	presMu   sync.Mutex
	presence map[PresenceConn]int64 // open connections, until when (unix ns)
}

// NewMemoryBroker returns an engine whose streams are bounded by cfg.
func NewMemoryBroker(cfg MemoryBufferConfig) *MemoryBroker {
	buf := NewMemoryBuffer(cfg)
	return newMemoryBroker(buf, buf.cfg.Now)
}

func newMemoryBroker(buf Buffer, now func() time.Time) *MemoryBroker {
	m := &MemoryBroker{buf: buf, now: now, seed: maphash.MakeSeed()}
	m.rec, _ = buf.(recordAppender)
	if m.now == nil {
		m.now = time.Now
	}
	return m
}

// newLocalBroker is the engine of a plugin without Config.Broker: a node
// of its own in-process engine, on buf.
func newLocalBroker(buf Buffer) Broker { return newMemoryBroker(buf, nil).Node() }

// recordAppender is a Buffer's own AppendRecord (MemoryBuffer's): both
// streams and the version rule in one step.
type recordAppender interface {
	appendRecord(ev *Event, mode AppendMode) (seqs [2]uint64, dup bool, err error)
}

// Node returns a new node handle: the Broker of one plugin.
func (m *MemoryBroker) Node() Broker {
	return &memoryNode{m: m, watch: make(map[StreamKey]int), listen: make(map[string]int)}
}

// SetUnavailable simulates an outage of the engine: with a non-nil err
// every call fails with it and nodes are told (Node.Health); with nil the
// engine is back, and every node is told that each stream it watches may
// have lost events (Node.Gap), as a reconnect would.
func (m *MemoryBroker) SetUnavailable(err error) {
	var was error
	if p := m.down.Swap(ptrOrNil(err)); p != nil {
		was = *p
	}
	for _, n := range m.nodesNow() {
		n.mu.Lock()
		node, stopped := n.node, n.stopped
		var keys []StreamKey
		for k := range n.watch {
			keys = append(keys, k)
		}
		n.mu.Unlock()
		if node == nil || stopped {
			continue
		}
		node.Health(err)
		if err == nil && was != nil {
			for _, k := range keys {
				// Under the stream's stripe, as its deliveries: a Gap is
				// ordered with them.
				mu := m.stripe(k)
				mu.Lock()
				n.call(func(nd Node) {
					if n.watch[k] > 0 {
						nd.Gap(k)
					}
				})
				mu.Unlock()
			}
		}
	}
}

func ptrOrNil(err error) *error {
	if err == nil {
		return nil
	}
	return &err
}

func (m *MemoryBroker) nodesNow() []*memoryNode {
	m.nodesMu.RLock()
	defer m.nodesMu.RUnlock()
	return slices.Clone(m.nodes)
}

func (m *MemoryBroker) stripe(k StreamKey) *sync.Mutex { return &m.stripes[m.stripeIndex(k)] }

func (m *MemoryBroker) stripeIndex(k StreamKey) uint64 {
	var h maphash.Hash
	h.SetSeed(m.seed)
	h.WriteString(k.Tenant)
	h.WriteByte(0)
	h.WriteString(k.Collection)
	h.WriteByte(0)
	h.WriteString(k.ID)
	return h.Sum64() % uint64(len(m.stripes))
}

// lockPair locks the stripes of two streams, in index order, once when
// they are the same; unlockPair(i, j) undoes it.
func (m *MemoryBroker) lockPair(a, b StreamKey) (i, j uint64) {
	i, j = m.stripeIndex(a), m.stripeIndex(b)
	if i > j {
		i, j = j, i
	}
	m.stripes[i].Lock()
	if i != j {
		m.stripes[j].Lock()
	}
	return i, j
}

func (m *MemoryBroker) unlockPair(i, j uint64) {
	if i != j {
		m.stripes[j].Unlock()
	}
	m.stripes[i].Unlock()
}

// unavailable is the error of a call while the engine is down.
func (m *MemoryBroker) unavailable(op string) error {
	if p := m.down.Load(); p != nil {
		return fmt.Errorf("memory broker: %s: %w", op, *p)
	}
	return nil
}

// deliver hands e to every node watching key (key's stripe held).
func (m *MemoryBroker) deliver(key StreamKey, e Entry) {
	m.nodesMu.RLock()
	defer m.nodesMu.RUnlock()
	for _, n := range m.nodes {
		n.mu.RLock()
		if n.watch[key] > 0 && !n.stopped {
			n.node.Deliver(key, e)
		}
		n.mu.RUnlock()
	}
}

type memoryNode struct {
	m *MemoryBroker

	// mu guards the counts and is held (read) around every call to node:
	// Stop takes it (write), so once Stop returns no call reaches it.
	mu      sync.RWMutex
	node    Node
	watch   map[StreamKey]int
	listen  map[string]int
	stopped bool
}

var (
	_ Broker         = (*memoryNode)(nil)
	_ localMessenger = (*memoryNode)(nil)
)

// call runs f with the node under its read lock, unless stopped.
func (n *memoryNode) call(f func(Node)) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.node != nil && !n.stopped {
		f(n.node)
	}
}

// Append implements Buffer: the position is assigned and the event handed
// to every watching node under the stream's stripe.
func (n *memoryNode) Append(ctx context.Context, key StreamKey, ev *Event) (uint64, error) {
	m := n.m
	if err := m.unavailable("append"); err != nil {
		return 0, err
	}
	mu := m.stripe(key)
	mu.Lock()
	defer mu.Unlock()
	seq, err := m.buf.Append(ctx, key, ev)
	if err != nil {
		return 0, err
	}
	m.deliver(key, Entry{Seq: seq, Event: ev})
	return seq, nil
}

// AppendRecord implements Broker.
func (n *memoryNode) AppendRecord(ctx context.Context, ev *Event, mode AppendMode) (bool, error) {
	m := n.m
	if err := m.unavailable("append"); err != nil {
		return false, err
	}
	if err := mode.Validate(); err != nil {
		return false, err
	}
	coll := ev.Ref.collectionKey()
	i, j := m.lockPair(ev.Ref, coll)
	defer m.unlockPair(i, j)
	var seqs [2]uint64
	if m.rec != nil {
		var dup bool
		var err error
		if seqs, dup, err = m.rec.appendRecord(ev, mode); err != nil || dup {
			return dup, err
		}
	} else {
		// A Buffer of the app's keeps no versions: the last one is never
		// known.
		if _, err := versionRule(0, ev.Version, mode); err != nil {
			return false, err
		}
		for i, k := range [2]StreamKey{ev.Ref, coll} {
			seq, err := m.buf.Append(ctx, k, ev)
			if err != nil {
				return false, err
			}
			seqs[i] = seq
		}
	}
	m.deliver(ev.Ref, Entry{Seq: seqs[0], Event: ev})
	m.deliver(coll, Entry{Seq: seqs[1], Event: ev})
	return false, nil
}

// Since implements Buffer.
func (n *memoryNode) Since(ctx context.Context, key StreamKey, lastID string) (Lookup, error) {
	if err := n.m.unavailable("since"); err != nil {
		return Lookup{}, err
	}
	return n.m.buf.Since(ctx, key, lastID)
}

// Invalidate implements Buffer.
func (n *memoryNode) Invalidate(ctx context.Context, tenant, collection string) error {
	if err := n.m.unavailable("invalidate"); err != nil {
		return err
	}
	return n.m.buf.Invalidate(ctx, tenant, collection)
}

// Recent implements RecentReader when the engine's buffer does.
func (n *memoryNode) Recent(ctx context.Context, key StreamKey, k int) ([]Entry, error) {
	if err := n.m.unavailable("recent"); err != nil {
		return nil, err
	}
	rr, ok := n.m.buf.(RecentReader)
	if !ok {
		return nil, fmt.Errorf("memory broker: recent: %w: the buffer cannot list recent entries", ErrUnavailable)
	}
	return rr.Recent(ctx, key, k)
}

// Start implements Broker.
func (n *memoryNode) Start(node Node) error {
	m := n.m
	m.nodesMu.Lock()
	defer m.nodesMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.node != nil {
		return fmt.Errorf("memory broker: %w: started twice", ErrInvalidConfig)
	}
	n.node = node
	m.nodes = append(m.nodes, n)
	return nil
}

// Watch implements Broker. The wish is recorded even when the engine is
// down (the error says so), as a real link would resubscribe once back.
func (n *memoryNode) Watch(_ context.Context, key StreamKey) error {
	n.mu.Lock()
	n.watch[key]++
	n.mu.Unlock()
	return n.m.unavailable("watch")
}

// Unwatch implements Broker.
func (n *memoryNode) Unwatch(_ context.Context, key StreamKey) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	uncount(n.watch, key)
	return nil
}

// uncount undoes one count of k, forgetting it at zero.
func uncount[K comparable](counts map[K]int, k K) {
	if counts[k] <= 1 {
		delete(counts, k)
	} else {
		counts[k]--
	}
}

// Listen implements Broker.
func (n *memoryNode) Listen(_ context.Context, topic string) error {
	n.mu.Lock()
	n.listen[topic]++
	n.mu.Unlock()
	return n.m.unavailable("listen")
}

// Unlisten implements Broker.
func (n *memoryNode) Unlisten(_ context.Context, topic string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	uncount(n.listen, topic)
	return nil
}

// Publish implements Broker.
func (n *memoryNode) Publish(_ context.Context, topic string, msg []byte) (int, error) {
	if err := n.m.unavailable("publish"); err != nil {
		return 0, err
	}
	msg = bytes.Clone(msg) // the publisher may reuse its buffer
	return n.m.toListeners(topic, func(nd Node) { nd.Message(topic, msg) }), nil
}

// publishLocal implements localMessenger: Publish without the encoding.
func (n *memoryNode) publishLocal(topic string, msg *nodeMsg) (int, error) {
	if err := n.m.unavailable("publish"); err != nil {
		return 0, err
	}
	return n.m.toListeners(topic, func(nd Node) {
		if lr, ok := nd.(localReceiver); ok {
			lr.messageLocal(topic, msg)
		}
	}), nil
}

// toListeners calls f for every node listening to topic and counts them.
func (m *MemoryBroker) toListeners(topic string, f func(Node)) int {
	count := 0
	for _, o := range m.nodesNow() {
		o.mu.RLock()
		if o.listen[topic] > 0 && !o.stopped && o.node != nil {
			count++
			f(o.node)
		}
		o.mu.RUnlock()
	}
	return count
}

// Stop implements Broker: once it returns no call reaches the node.
func (n *memoryNode) Stop(context.Context) error {
	m := n.m
	m.nodesMu.Lock()
	defer m.nodesMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopped = true
	m.nodes = slices.DeleteFunc(m.nodes, func(o *memoryNode) bool { return o == n })
	return nil
}

var _ PresenceStore = (*memoryNode)(nil)

// presenceNow is the engine's clock for presence expiry.
func (m *MemoryBroker) presenceNow() time.Time { return m.now() }

// AddPresence implements PresenceStore.
func (n *memoryNode) AddPresence(_ context.Context, ttl time.Duration, conns ...PresenceConn) error {
	m := n.m
	if err := m.unavailable("add presence"); err != nil {
		return err
	}
	m.presMu.Lock()
	defer m.presMu.Unlock()
	if m.presence == nil {
		m.presence = make(map[PresenceConn]int64)
	}
	until := m.presenceNow().Add(ttl).UnixNano()
	for _, c := range conns {
		m.presence[c] = until
	}
	return nil
}

// RemovePresence implements PresenceStore.
func (n *memoryNode) RemovePresence(_ context.Context, conns ...PresenceConn) error {
	m := n.m
	if err := m.unavailable("remove presence"); err != nil {
		return err
	}
	m.presMu.Lock()
	defer m.presMu.Unlock()
	for _, c := range conns {
		delete(m.presence, c)
	}
	return nil
}

// Presence implements PresenceStore.
func (n *memoryNode) Presence(_ context.Context, tenant string) ([]string, int, error) {
	m := n.m
	if err := m.unavailable("presence"); err != nil {
		return nil, 0, err
	}
	m.presMu.Lock()
	defer m.presMu.Unlock()
	now := m.presenceNow().UnixNano()
	seen := make(map[string]bool)
	users := []string{}
	count := 0
	for c, until := range m.presence {
		if c.Tenant != tenant || until <= now {
			continue
		}
		count++
		if !seen[c.User] {
			seen[c.User] = true
			users = append(users, c.User)
		}
	}
	slices.Sort(users)
	return users, count, nil
}

// UserPresence implements PresenceStore.
func (n *memoryNode) UserPresence(_ context.Context, tenant, user string) (int, error) {
	m := n.m
	if err := m.unavailable("user presence"); err != nil {
		return 0, err
	}
	m.presMu.Lock()
	defer m.presMu.Unlock()
	now := m.presenceNow().UnixNano()
	count := 0
	for c, until := range m.presence {
		if c.Tenant == tenant && c.User == user && until > now {
			count++
		}
	}
	return count, nil
}

var _ StatsSource = (*memoryNode)(nil)

// ReportStats implements StatsSource: the engine's buffer, when it reports
// itself (a MemoryBuffer does).
func (n *memoryNode) ReportStats(s *Stats) {
	if src, ok := n.m.buf.(StatsSource); ok {
		src.ReportStats(s)
	}
}
