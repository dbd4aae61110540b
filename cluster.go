package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
)

// cluster is a Plugin's side of its Broker (Config.Broker): the node that
// receives events and messages from the other nodes, and the background
// goroutine that sends what must not be sent on a caller's goroutine.
type cluster struct {
	p      *Plugin
	b      Broker
	ps     PresenceStore // nil: the broker keeps no presence
	nodeID string

	// ops is the bounded queue of broker calls made off the caller's
	// goroutine (replies, acks, unwatch, unlisten, presence removal), run
	// in order by one goroutine. When it is full the call runs on a
	// goroutine of its own (counted by overflow): nothing is dropped, and
	// no caller waits, not even the broker's delivery goroutine calling
	// the Node (a broker call made there could wait for that goroutine).
	ops      chan func(context.Context)
	opsDone  chan struct{}
	overflow sync.WaitGroup
	opsMu    sync.Mutex // guards opsOff and the sends on ops
	opsOff   bool       // stop has begun: calls are no longer made

	healthMu sync.Mutex
	health   error

	// counts are the Notify calls of this node waiting for the other
	// nodes' delivery counts, by envelope id.
	countMu sync.Mutex
	counts  map[string]*countWait

	// remoteAcks maps the pushes delivered here and awaited by another
	// node to that node, until they expire.
	ackMu      sync.Mutex
	remoteAcks map[string]remoteAck
}

type remoteAck struct {
	origin string
	until  time.Time
}

// Topics. Names are built so that no tenant or user name can make two
// topics equal: lengths prefix the parts.
const (
	topicControl = "ctl"
)

func topicNode(id string) string { return "n:" + id }
func topicTenant(tenant string) string {
	return "t:" + strconv.Itoa(len(tenant)) + ":" + tenant
}
func topicUser(tenant, user string) string {
	return "u:" + strconv.Itoa(len(tenant)) + ":" + tenant + ":" + user
}

// clusterMsg is a message between nodes.
type clusterMsg struct {
	Type string `json:"type"` // resync, notify, count, ack
	// resync
	Tenant     string `json:"tenant,omitempty"`
	Collection string `json:"collection,omitempty"`
	// notify
	Origin   string          `json:"origin,omitempty"`
	Envelope string          `json:"envelope,omitempty"`
	Frame    json.RawMessage `json:"frame,omitempty"`
	Users    []string        `json:"users,omitempty"`
	Exclude  []string        `json:"exclude,omitempty"`
	Channel  string          `json:"channel,omitempty"`
	Event    string          `json:"event,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	AwaitMs  int64           `json:"awaitMs,omitempty"`
	Seq      uint64          `json:"seq,omitempty"` // the push's position in its channel's buffer
	// count: the connections a node delivered to, with their users
	Conns []connRef `json:"conns,omitempty"`
	// ack
	Conn   string          `json:"conn,omitempty"`
	User   string          `json:"user,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

type connRef struct {
	ID   string `json:"id"`
	User string `json:"user"`
	// Stream: an SSE channel stream, which cannot ack.
	Stream bool `json:"s,omitempty"`
}

const (
	clusterOpsQueue = 4096
	// countWait bounds how long Notify waits for the other nodes'
	// delivery counts.
	countWaitMax = 2 * time.Second
	// presenceTTL is how long a connection stays present in the broker
	// without a refresh (refreshed every presenceTTL/3).
	presenceTTL = 30 * time.Second
)

func newCluster(p *Plugin, b Broker) *cluster {
	c := &cluster{p: p, b: b, nodeID: uuid.NewString(),
		ops: make(chan func(context.Context), clusterOpsQueue), opsDone: make(chan struct{}),
		counts: make(map[string]*countWait), remoteAcks: make(map[string]remoteAck)}
	c.ps, _ = b.(PresenceStore)
	return c
}

// start connects the node: the broker starts delivering, the node listens
// to the control topic and its own.
func (c *cluster) start() error {
	go c.runOps()
	if err := c.b.Start(clusterNode{c}); err != nil {
		return fmt.Errorf("realtime: broker start: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, t := range []string{topicControl, topicNode(c.nodeID)} {
		if err := c.b.Listen(ctx, t); err != nil {
			// Recorded by the broker: it listens once the engine is back.
			c.p.log.Warn("realtime: broker unavailable at start", "err", err)
		}
	}
	return nil
}

// stop ends the node: queued operations run, then the broker stops.
func (c *cluster) stop(ctx context.Context) error {
	c.opsMu.Lock()
	c.opsOff = true
	close(c.ops)
	c.opsMu.Unlock()
	select {
	case <-c.opsDone:
	case <-ctx.Done():
	}
	c.overflow.Wait() // each bounded by its own 5 s context
	if err := c.b.Stop(ctx); err != nil {
		return fmt.Errorf("realtime: broker stop: %w", err)
	}
	return nil
}

func (c *cluster) runOps() {
	defer close(c.opsDone)
	for op := range c.ops {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		op(ctx)
		cancel()
	}
}

// async runs op on the ops goroutine, or on a goroutine of its own when
// the queue is full or closed (the node is stopping).
// Once the node stops, calls are dropped: the broker stops too.
func (c *cluster) async(op func(context.Context)) {
	c.opsMu.Lock()
	defer c.opsMu.Unlock()
	if c.opsOff {
		return
	}
	select {
	case c.ops <- op:
	default:
		c.overflow.Add(1)
		go func() {
			defer c.overflow.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			op(ctx)
		}()
	}
}

func (c *cluster) publish(ctx context.Context, topic string, m clusterMsg) (int, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	n, err := c.b.Publish(ctx, topic, b)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return n, nil
}

// healthErr is the broker's last reported state.
func (c *cluster) healthErr() error {
	c.healthMu.Lock()
	defer c.healthMu.Unlock()
	return c.health
}

// clusterNode is the Node the broker delivers to.
type clusterNode struct{ c *cluster }

var _ Node = clusterNode{}

// Deliver implements Node: the event goes to the stream's subscribers of
// this node, as a local publish would.
func (n clusterNode) Deliver(key StreamKey, e Entry) {
	p := n.c.p
	if e.Event == nil {
		return
	}
	var sched []*subscriber
	mu := p.hub.stripe(key)
	mu.Lock()
	for _, s := range p.hub.subscribersLocked(key) {
		sched = s.offer(item{ev: e.Event, seq: e.Seq}, sched)
	}
	mu.Unlock()
	p.writers.addMany(sched)
}

// Gap implements Node: the stream's subscribers here may have missed
// events: they are resynced.
func (n clusterNode) Gap(key StreamKey) {
	p := n.c.p
	mu := p.hub.stripe(key)
	mu.Lock()
	subs := append([]*subscriber(nil), p.hub.subscribersLocked(key)...)
	mu.Unlock()
	p.resyncSubscribers(subs, resyncEvent)
}

// Health implements Node.
func (n clusterNode) Health(err error) {
	c := n.c
	c.healthMu.Lock()
	was := c.health
	c.health = err
	c.healthMu.Unlock()
	switch {
	case err != nil && was == nil:
		c.p.log.Warn("realtime: broker unavailable", "err", err)
	case err == nil && was != nil:
		c.p.log.Info("realtime: broker available again")
	}
}

// Message implements Node.
func (n clusterNode) Message(topic string, msg []byte) {
	c := n.c
	var m clusterMsg
	if err := json.Unmarshal(msg, &m); err != nil {
		c.p.log.Warn("realtime: undecodable broker message", "topic", topic, "err", err)
		return
	}
	switch m.Type {
	case "resync":
		c.p.resyncLocal(m.Tenant, m.Collection)
	case "notify":
		c.deliverNotify(&m)
	case "count":
		c.countMu.Lock()
		w := c.counts[m.Envelope]
		c.countMu.Unlock()
		if w != nil {
			w.add(m.Conns)
		}
	case "ack":
		c.p.ws.acks.deliver(m.Envelope, m.Conn, m.User, m.Result)
	}
}

// deliverNotify pushes a Notify of some node to this node's targets and
// reports them to its origin.
func (c *cluster) deliverNotify(m *clusterMsg) {
	p := c.p
	targets := p.ws.reg.targets(m.Tenant, m.Users, m.Exclude, m.Channel, m.Event, m.Data)
	conns := make([]connRef, 0, len(targets))
	lp := &localPush{channel: m.Channel, event: m.Event, id: m.Envelope, seq: m.Seq, frame: m.Frame}
	var batch pushBatch
	for _, t := range targets {
		if batch.push(t, lp) {
			conns = append(conns, connRef{ID: t.id, User: t.user, Stream: t.stream != nil})
		}
	}
	batch.flush(p)
	if m.AwaitMs > 0 && len(conns) > 0 {
		c.ackMu.Lock()
		c.remoteAcks[m.Envelope] = remoteAck{origin: m.Origin,
			until: time.Now().Add(time.Duration(m.AwaitMs)*time.Millisecond + time.Second)}
		c.ackMu.Unlock()
	}
	reply := clusterMsg{Type: "count", Envelope: m.Envelope, Conns: conns}
	origin := m.Origin
	c.async(func(ctx context.Context) {
		if _, err := c.publish(ctx, topicNode(origin), reply); err != nil {
			p.log.Warn("realtime: delivery count not sent", "err", err)
		}
	})
}

// forwardAck sends a connection's ack of a push awaited by another node to
// that node; false when no other node awaits it.
func (c *cluster) forwardAck(envelopeID, connID, user string, result json.RawMessage) bool {
	c.ackMu.Lock()
	ra, ok := c.remoteAcks[envelopeID]
	c.ackMu.Unlock()
	if !ok || time.Now().After(ra.until) {
		return false
	}
	if len(result) == 0 {
		result = json.RawMessage("null")
	}
	m := clusterMsg{Type: "ack", Envelope: envelopeID, Conn: connID, User: user, Result: append(json.RawMessage(nil), result...)}
	c.async(func(ctx context.Context) {
		if _, err := c.publish(ctx, topicNode(ra.origin), m); err != nil {
			c.p.log.Warn("realtime: ack not forwarded", "err", err)
		}
	})
	return true
}

// expireAcks forgets the remote acks no longer awaited (heartbeat).
func (c *cluster) expireAcks(now time.Time) {
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	for id, ra := range c.remoteAcks {
		if now.After(ra.until) {
			delete(c.remoteAcks, id)
		}
	}
}

// countWait collects the delivery counts of one Notify.
type countWait struct {
	mu      sync.Mutex
	want    int // counts expected (nodes that received the push)
	got     int
	conns   []connRef
	onConns func([]connRef) // called with each count's connections, under mu
	changed chan struct{}
}

func (w *countWait) add(conns []connRef) {
	w.mu.Lock()
	w.got++
	w.conns = append(w.conns, conns...)
	if w.onConns != nil {
		w.onConns(conns)
	}
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// notify is Notify through the broker: the push is published to the
// topics of its targets, every node delivers to its own connections and
// answers with what it delivered.
func (c *cluster) notify(ctx context.Context, tenant string, n Notification, id string, frame, data json.RawMessage, seq uint64) (NotifyResult, error) {
	p := c.p
	res := NotifyResult{EnvelopeID: id, Acks: []Ack{}}
	var wait *ackWait
	if n.AwaitAcks > 0 {
		wait = p.ws.acks.open(id)
		defer p.ws.acks.done(id)
	}
	cw := &countWait{changed: make(chan struct{}, 1)}
	if wait != nil {
		cw.onConns = func(conns []connRef) {
			for _, cr := range conns {
				if !cr.Stream {
					wait.expect(cr.ID)
				}
			}
		}
	}
	c.countMu.Lock()
	c.counts[id] = cw
	c.countMu.Unlock()
	defer func() {
		c.countMu.Lock()
		delete(c.counts, id)
		c.countMu.Unlock()
	}()

	m := clusterMsg{Type: "notify", Origin: c.nodeID, Envelope: id, Frame: frame, Tenant: tenant,
		Exclude: n.ExcludeUsers, Channel: n.Channel, Event: n.Event, Data: data, AwaitMs: n.AwaitAcks.Milliseconds(), Seq: seq}
	var topics []string
	var perTopic [][]string
	if len(n.Users) > 0 {
		seen := make(map[string]bool, len(n.Users))
		for _, u := range n.Users {
			if seen[u] {
				continue
			}
			seen[u] = true
			topics = append(topics, topicUser(tenant, u))
			perTopic = append(perTopic, []string{u})
		}
	} else {
		topics = []string{topicTenant(tenant)}
		perTopic = [][]string{nil}
	}
	nodes, err := c.publishAll(ctx, topics, perTopic, m)
	if err != nil {
		return NotifyResult{}, err
	}
	cw.mu.Lock()
	cw.want = nodes
	cw.mu.Unlock()
	timer := time.NewTimer(countWaitMax)
	defer timer.Stop()
	for {
		cw.mu.Lock()
		all := cw.got >= cw.want
		cw.mu.Unlock()
		if all {
			break
		}
		select {
		case <-cw.changed:
			continue
		case <-timer.C:
		case <-ctx.Done():
		}
		break
	}
	cw.mu.Lock()
	conns := append([]connRef(nil), cw.conns...)
	cw.mu.Unlock()
	users := make(map[string]struct{})
	awaiting := 0
	for _, cr := range conns {
		users[cr.User] = struct{}{}
		if !cr.Stream {
			awaiting++
		}
	}
	res.Delivered = len(conns)
	res.Users = len(users)
	if wait != nil && awaiting > 0 {
		res.Acks = wait.wait(ctx, n.AwaitAcks, p.ws.acks.closed)
		res.TimedOut = awaiting - len(res.Acks)
	}
	return res, nil
}

// notifyFanout bounds the topics a Notify publishes to at once.
const notifyFanout = 16

// publishAll publishes m to each topic (with that topic's users), up to
// notifyFanout at once, and returns how many nodes received them in all;
// the first error, if any (a push to k users costs about k/16 round trips,
// not k).
func (c *cluster) publishAll(ctx context.Context, topics []string, perTopic [][]string, m clusterMsg) (int, error) {
	if len(topics) == 1 {
		m.Users = perTopic[0]
		return c.publish(ctx, topics[0], m)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		nodes    int
		firstErr error
	)
	sem := make(chan struct{}, notifyFanout)
	for i, t := range topics {
		msg := m
		msg.Users = perTopic[i]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			k, err := c.publish(ctx, t, msg)
			mu.Lock()
			nodes += k
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return nodes, firstErr
}

// connOpened registers a new WebSocket with the broker: its tenant's and
// user's topics, and its presence. Failures are logged: the broker
// listens again once the engine is back.
func (c *cluster) connOpened(conn *wsConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, t := range []string{topicTenant(conn.tenant), topicUser(conn.tenant, conn.user)} {
		if err := c.b.Listen(ctx, t); err != nil {
			c.p.log.Warn("realtime: broker listen failed", "err", err)
		}
	}
	if c.ps != nil {
		if err := c.ps.AddPresence(ctx, presenceTTL, PresenceConn{Tenant: conn.tenant, User: conn.user, ConnID: conn.id}); err != nil {
			c.p.log.Warn("realtime: presence not recorded", "err", err)
		}
	}
}

// connClosed undoes connOpened, off the caller's goroutine.
func (c *cluster) connClosed(conn *wsConn) {
	tenant, user, id := conn.tenant, conn.user, conn.id
	c.async(func(ctx context.Context) {
		_ = c.b.Unlisten(ctx, topicTenant(tenant))
		_ = c.b.Unlisten(ctx, topicUser(tenant, user))
		if c.ps != nil {
			_ = c.ps.RemovePresence(ctx, PresenceConn{Tenant: tenant, User: user, ConnID: id})
		}
	})
}

// streamOpened makes the broker bring this node the pushes an SSE channel
// stream of (tenant, user) may be targeted by (no presence: a stream is
// not a connection of §7's presence).
func (c *cluster) streamOpened(tenant, user string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, t := range []string{topicTenant(tenant), topicUser(tenant, user)} {
		if err := c.b.Listen(ctx, t); err != nil {
			c.p.log.Warn("realtime: broker listen failed", "err", err)
		}
	}
}

// streamClosed undoes streamOpened, off the caller's goroutine.
func (c *cluster) streamClosed(tenant, user string) {
	c.async(func(ctx context.Context) {
		_ = c.b.Unlisten(ctx, topicTenant(tenant))
		_ = c.b.Unlisten(ctx, topicUser(tenant, user))
	})
}

// refreshPresence renews the presence of every open WebSocket of this node
// (from the heartbeat loop, every presenceTTL/3).
func (c *cluster) refreshPresence() {
	if c.ps == nil {
		return
	}
	conns := c.p.ws.reg.all()
	if len(conns) == 0 {
		return
	}
	pcs := make([]PresenceConn, len(conns))
	for i, conn := range conns {
		pcs[i] = PresenceConn{Tenant: conn.tenant, User: conn.user, ConnID: conn.id}
	}
	c.async(func(ctx context.Context) {
		if err := c.ps.AddPresence(ctx, presenceTTL, pcs...); err != nil {
			c.p.log.Warn("realtime: presence not refreshed", "err", err)
		}
	})
}

// watch makes the broker deliver key's events to this node (before a
// subscriber reads its first frames); s is unwatched on detach.
func (c *cluster) watch(ctx context.Context, s *subscriber) {
	s.watched.Store(true)
	if err := c.b.Watch(ctx, s.key); err != nil {
		// The broker watches once the engine is back and reports the
		// gap then: the subscriber is resynced.
		c.p.log.Warn("realtime: broker watch failed", "err", err)
	}
}

func (c *cluster) unwatch(key StreamKey) {
	c.async(func(ctx context.Context) { _ = c.b.Unwatch(ctx, key) })
}
