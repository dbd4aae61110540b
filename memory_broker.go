package realtime

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// MemoryBroker is an in-process Broker engine: plugins in one process
// share it through Node handles, as nodes share a Redis. It serves tests
// of multi-node behaviour without a server, and is the reference the Redis
// adapter is checked against (package brokertest). It calls the nodes'
// methods synchronously, under its locks: a Node must not call back into
// the broker from them (the plugin's Node does not).
type MemoryBroker struct {
	buf *MemoryBuffer

	mu    sync.Mutex // orders appends and their deliveries, publishes
	nodes map[*memoryNode]struct{}
	down  error // set by SetUnavailable

	presence map[PresenceConn]time.Time // open connections, until when
}

// NewMemoryBroker returns an engine whose streams are bounded by cfg.
func NewMemoryBroker(cfg MemoryBufferConfig) *MemoryBroker {
	return &MemoryBroker{buf: NewMemoryBuffer(cfg), nodes: make(map[*memoryNode]struct{})}
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
	m.mu.Lock()
	was := m.down
	m.down = err
	nodes := make([]*memoryNode, 0, len(m.nodes))
	for n := range m.nodes {
		nodes = append(nodes, n)
	}
	m.mu.Unlock()
	for _, n := range nodes {
		// Under the node's lock, as Append's deliveries: no call once Stop
		// has returned, and a Gap is ordered with the key's deliveries.
		n.mu.Lock()
		if n.node != nil && !n.stopped {
			n.node.Health(err)
			if err == nil && was != nil {
				for k := range n.watch {
					n.node.Gap(k)
				}
			}
		}
		n.mu.Unlock()
	}
}

type memoryNode struct {
	m *MemoryBroker

	mu      sync.Mutex
	node    Node
	watch   map[StreamKey]int
	listen  map[string]int
	stopped bool
}

var _ Broker = (*memoryNode)(nil)

func (n *memoryNode) unavailable(op string) error {
	if err := n.m.down; err != nil {
		return fmt.Errorf("memory broker: %s: %w", op, err)
	}
	return nil
}

// Append implements Buffer: the position is assigned and the event handed
// to every watching node under one lock, so every node sees one order.
func (n *memoryNode) Append(ctx context.Context, key StreamKey, ev *Event) (uint64, error) {
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := n.unavailable("append"); err != nil {
		return 0, err
	}
	seq, err := m.buf.Append(ctx, key, ev)
	if err != nil {
		return 0, err
	}
	m.deliverLocked(key, Entry{Seq: seq, Event: ev})
	return seq, nil
}

// AppendRecord implements Broker.
func (n *memoryNode) AppendRecord(ctx context.Context, ev *Event, gap bool) (bool, error) {
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := n.unavailable("append"); err != nil {
		return false, err
	}
	seqs, dup, err := m.buf.appendRecord(ev, gap)
	if err != nil || dup {
		return dup, err
	}
	for i, key := range [2]StreamKey{ev.Ref, ev.Ref.collectionKey()} {
		m.deliverLocked(key, Entry{Seq: seqs[i], Event: ev})
	}
	return false, nil
}

// deliverLocked hands e to every node watching key (m.mu held).
func (m *MemoryBroker) deliverLocked(key StreamKey, e Entry) {
	for o := range m.nodes {
		o.mu.Lock()
		if o.watch[key] > 0 && !o.stopped {
			o.node.Deliver(key, e)
		}
		o.mu.Unlock()
	}
}

// Since implements Buffer.
func (n *memoryNode) Since(ctx context.Context, key StreamKey, lastID string) (Lookup, error) {
	n.m.mu.Lock()
	err := n.unavailable("since")
	n.m.mu.Unlock()
	if err != nil {
		return Lookup{}, err
	}
	return n.m.buf.Since(ctx, key, lastID)
}

// Invalidate implements Buffer.
func (n *memoryNode) Invalidate(ctx context.Context, tenant, collection string) error {
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	if err := n.unavailable("invalidate"); err != nil {
		return err
	}
	return n.m.buf.Invalidate(ctx, tenant, collection)
}

// Start implements Broker.
func (n *memoryNode) Start(node Node) error {
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.node != nil {
		return fmt.Errorf("memory broker: %w: started twice", ErrInvalidConfig)
	}
	n.node = node
	n.m.nodes[n] = struct{}{}
	return nil
}

// Watch implements Broker. The wish is recorded even when the engine is
// down (the error says so), as a real link would resubscribe once back.
func (n *memoryNode) Watch(_ context.Context, key StreamKey) error {
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	n.mu.Lock()
	n.watch[key]++
	n.mu.Unlock()
	return n.unavailable("watch")
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
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	n.mu.Lock()
	n.listen[topic]++
	n.mu.Unlock()
	return n.unavailable("listen")
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
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := n.unavailable("publish"); err != nil {
		return 0, err
	}
	msg = bytes.Clone(msg) // the publisher may reuse its buffer
	count := 0
	for o := range m.nodes {
		o.mu.Lock()
		if o.listen[topic] > 0 && !o.stopped {
			count++
			o.node.Message(topic, msg)
		}
		o.mu.Unlock()
	}
	return count, nil
}

// Stop implements Broker: once it returns no call reaches the node.
func (n *memoryNode) Stop(context.Context) error {
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopped = true
	delete(n.m.nodes, n)
	return nil
}

var _ PresenceStore = (*memoryNode)(nil)

// presenceNow is the engine's clock for presence expiry.
func (m *MemoryBroker) presenceNow() time.Time {
	if m.buf.cfg.Now != nil {
		return m.buf.cfg.Now()
	}
	return time.Now()
}

// AddPresence implements PresenceStore.
func (n *memoryNode) AddPresence(_ context.Context, ttl time.Duration, conns ...PresenceConn) error {
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := n.unavailable("add presence"); err != nil {
		return err
	}
	if m.presence == nil {
		m.presence = make(map[PresenceConn]time.Time)
	}
	until := m.presenceNow().Add(ttl)
	for _, c := range conns {
		m.presence[c] = until
	}
	return nil
}

// RemovePresence implements PresenceStore.
func (n *memoryNode) RemovePresence(_ context.Context, conns ...PresenceConn) error {
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := n.unavailable("remove presence"); err != nil {
		return err
	}
	for _, c := range conns {
		delete(m.presence, c)
	}
	return nil
}

// Presence implements PresenceStore.
func (n *memoryNode) Presence(_ context.Context, tenant string) ([]string, int, error) {
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := n.unavailable("presence"); err != nil {
		return nil, 0, err
	}
	now := m.presenceNow()
	seen := make(map[string]bool)
	users := []string{}
	count := 0
	for c, until := range m.presence {
		if c.Tenant != tenant || !until.After(now) {
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
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := n.unavailable("user presence"); err != nil {
		return 0, err
	}
	now := m.presenceNow()
	count := 0
	for c, until := range m.presence {
		if c.Tenant == tenant && c.User == user && until.After(now) {
			count++
		}
	}
	return count, nil
}
