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

// node is the plugin's side of its Broker: the Node the broker delivers to
// (record events, gaps, topic messages, health), and the queue of broker
// calls that must not run on a caller's goroutine. A single node runs on
// the in-process engine (NewMemoryBroker), so one node and many take the
// same path: a publish goes to the broker and comes back through Deliver.
type node struct {
	p  *Plugin
	b  Broker
	ps PresenceStore // nil: the broker keeps no presence
	id string

	// ops is the bounded queue of broker calls made off the caller's
	// goroutine (delivery counts, forwarded acks, unwatch, unlisten,
	// presence), run in order by one goroutine. When it is full the call
	// runs on a goroutine of its own (counted by overflow): nothing is
	// dropped, and no caller waits, not even the broker's delivery
	// goroutine calling the Node (a broker call made there could wait for
	// that goroutine).
	ops      chan func(context.Context)
	opsDone  chan struct{}
	overflow sync.WaitGroup
	opsMu    sync.Mutex // guards opsOff and the sends on ops
	opsOff   bool       // stop has begun: calls are no longer made

	healthMu sync.Mutex
	health   error
}

// Topics. Names are built so that no tenant or user name can make two
// topics equal: lengths prefix the parts.
const topicControl = "ctl"

func topicNode(id string) string { return "n:" + id }
func topicTenant(tenant string) string {
	return "t:" + strconv.Itoa(len(tenant)) + ":" + tenant
}
func topicUser(tenant, user string) string {
	return "u:" + strconv.Itoa(len(tenant)) + ":" + tenant + ":" + user
}

// nodeMsg is a message between nodes.
type nodeMsg struct {
	Type string `json:"type"` // resync, notify, count, ack, httpack
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
	// count: how many connections a node delivered to, its distinct users,
	// and the connections that will ack (only when acks are awaited)
	N          int         `json:"n,omitempty"`
	Reached    []string    `json:"reached,omitempty"`
	Ackers     []string    `json:"ackers,omitempty"`
	HTTPAckers []httpAcker `json:"httpAckers,omitempty"` // connections acking by POST {base}/acks
	// ack (Conn empty: by POST {base}/acks, the User's), httpack (the
	// same, to every node: the origin takes it)
	Conn   string          `json:"conn,omitempty"`
	User   string          `json:"user,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// httpAcker is a connection that acks over HTTP, and its user.
type httpAcker struct {
	Conn string `json:"c"`
	User string `json:"u"`
}

// localMessenger is the optional ability of the in-process engine to hand a
// node's messages over as Go values, without encoding them.
type localMessenger interface {
	publishLocal(topic string, m *nodeMsg) (nodes int, err error)
}

// localReceiver is what the in-process engine hands such messages to.
type localReceiver interface {
	messageLocal(topic string, m *nodeMsg)
}

const (
	nodeOpsQueue = 4096
	// presenceTTL is how long a connection stays present in the broker
	// without a refresh (refreshed every presenceTTL/3).
	presenceTTL = 30 * time.Second
)

func newNode(p *Plugin, b Broker) *node {
	n := &node{p: p, b: b, id: uuid.NewString(),
		ops: make(chan func(context.Context), nodeOpsQueue), opsDone: make(chan struct{})}
	n.ps, _ = b.(PresenceStore)
	return n
}

// start connects the node: the broker starts delivering, the node listens
// to the control topic and its own.
func (n *node) start() error {
	go n.runOps()
	if err := n.b.Start(nodeHandle{n}); err != nil {
		return fmt.Errorf("realtime: broker start: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, t := range []string{topicControl, topicNode(n.id)} {
		if err := n.b.Listen(ctx, t); err != nil {
			// Recorded by the broker: it listens once the engine is back.
			n.p.log.Warn("realtime: broker unavailable at start", "err", err)
		}
	}
	return nil
}

// stop ends the node: queued operations run, then the broker stops.
func (n *node) stop(ctx context.Context) error {
	n.opsMu.Lock()
	n.opsOff = true
	close(n.ops)
	n.opsMu.Unlock()
	select {
	case <-n.opsDone:
	case <-ctx.Done():
	}
	n.overflow.Wait() // each bounded by its own 5 s context
	if err := n.b.Stop(ctx); err != nil {
		return fmt.Errorf("realtime: broker stop: %w", err)
	}
	return nil
}

func (n *node) runOps() {
	defer close(n.opsDone)
	for op := range n.ops {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		op(ctx)
		cancel()
	}
}

// async runs op on the ops goroutine, or on a goroutine of its own when
// the queue is full. Once the node stops, calls are dropped: the broker
// stops too.
func (n *node) async(op func(context.Context)) {
	n.opsMu.Lock()
	defer n.opsMu.Unlock()
	if n.opsOff {
		return
	}
	select {
	case n.ops <- op:
	default:
		n.overflow.Add(1)
		go func() {
			defer n.overflow.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			op(ctx)
		}()
	}
}

// publish sends m on topic and returns how many nodes received it.
func (n *node) publish(ctx context.Context, topic string, m *nodeMsg) (int, error) {
	var k int
	var err error
	if lm, ok := n.b.(localMessenger); ok {
		k, err = lm.publishLocal(topic, m)
	} else {
		var b []byte
		if b, err = json.Marshal(m); err != nil {
			return 0, err
		}
		k, err = n.b.Publish(ctx, topic, b)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return k, nil
}

// reply sends m to the node origin, off the caller's goroutine; a reply to
// this node is handled at once.
func (n *node) reply(origin string, m *nodeMsg) {
	if origin == n.id {
		n.message(m)
		return
	}
	n.async(func(ctx context.Context) {
		if _, err := n.publish(ctx, topicNode(origin), m); err != nil {
			n.p.log.Warn("realtime: reply to a node not sent", "type", m.Type, "err", err)
		}
	})
}

// healthErr is the broker's last reported state.
func (n *node) healthErr() error {
	n.healthMu.Lock()
	defer n.healthMu.Unlock()
	return n.health
}

// message handles a message of another node (or of this one).
func (n *node) message(m *nodeMsg) {
	p := n.p
	switch m.Type {
	case "resync":
		p.streams.resyncCollection(m.Tenant, m.Collection)
	case "notify":
		p.pushes.deliver(m)
	case "count":
		p.pushes.counted(m)
	case "ack":
		if m.Conn == "" {
			p.acks.deliverHTTP(m.Envelope, m.Tenant, m.User, m.Result)
			return
		}
		p.acks.deliver(m.Envelope, m.Conn, m.User, m.Result)
	case "httpack":
		p.acks.deliverHTTP(m.Envelope, m.Tenant, m.User, m.Result)
	}
}

// nodeHandle is the Node the broker delivers to.
type nodeHandle struct{ n *node }

var (
	_ Node          = nodeHandle{}
	_ localReceiver = nodeHandle{}
)

// Deliver implements Node: the event goes to this node's subscriptions of
// the stream.
func (h nodeHandle) Deliver(key StreamKey, e Entry) {
	if e.Event != nil {
		h.n.p.streams.deliver(key, e)
	}
}

// Gap implements Node: this node's subscriptions of key may have missed
// events: they resume before any later delivery.
func (h nodeHandle) Gap(key StreamKey) { h.n.p.streams.gap(key) }

// Health implements Node.
func (h nodeHandle) Health(err error) {
	n := h.n
	n.healthMu.Lock()
	was := n.health
	n.health = err
	n.healthMu.Unlock()
	n.p.stats.brokerHealth(err)
	switch {
	case err != nil && was == nil:
		n.p.log.Warn("realtime: broker unavailable", "err", err)
	case err == nil && was != nil:
		n.p.log.Info("realtime: broker available again")
	}
}

// Message implements Node.
func (h nodeHandle) Message(topic string, msg []byte) {
	var m nodeMsg
	if err := json.Unmarshal(msg, &m); err != nil {
		h.n.p.log.Warn("realtime: undecodable broker message", "topic", topic, "err", err)
		return
	}
	h.n.message(&m)
}

// messageLocal implements localReceiver: a message of the in-process engine.
func (h nodeHandle) messageLocal(_ string, m *nodeMsg) { h.n.message(m) }
