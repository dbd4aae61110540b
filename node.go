package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
	ops     chan func(context.Context)
	opsDone chan struct{}
	// replies is the bounded queue of this node's answers to other nodes'
	// pushes (delivery counts), sent by one goroutine in batches: a
	// Pusher sends a batch in one round trip, so that concurrent pushes
	// are answered without queueing behind each other. When it is full a
	// reply takes the ops queue.
	replies     chan nodeReply
	repliesDone chan struct{}
	overflow    sync.WaitGroup
	opsMu       sync.Mutex // guards opsOff and the sends on ops
	opsOff      bool       // stop has begun: calls are no longer made
	// opsCtx is the parent of every queued call's context (each bounded
	// by 5 s): cut when stop's context ends, so that the calls
	// still queued end at once and stop still waits for them.
	opsCtx    context.Context
	opsCancel context.CancelFunc

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

// topicUserOf returns the user of a topicUser topic.
func topicUserOf(topic string) (string, bool) {
	rest, ok := strings.CutPrefix(topic, "u:")
	if !ok {
		return "", false
	}
	n, rest, ok := strings.Cut(rest, ":")
	k, err := strconv.Atoi(n)
	if !ok || err != nil || k < 0 || len(rest) < k+1 || rest[k] != ':' {
		return "", false
	}
	return rest[k+1:], true
}

// forTopic completes a message received on topic: a push received on a
// user's topic targets that user (the publisher sends one message to all
// the topics of a push).
func (m *nodeMsg) forTopic(topic string) {
	if m.Type != "notify" {
		return
	}
	if u, ok := topicUserOf(topic); ok {
		m.Users = []string{u}
	}
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
	// Users is not sent: a push to users is published on each user's
	// topic, and its receivers take the user from the topic (forTopic).
	Users   []string        `json:"-"`
	Exclude []string        `json:"exclude,omitempty"`
	Channel string          `json:"channel,omitempty"`
	Event   string          `json:"event,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	AwaitMs int64           `json:"awaitMs,omitempty"`
	Seq     uint64          `json:"seq,omitempty"` // the push's position in its channel's buffer
	// count: how many connections a node delivered to, the number of
	// their distinct users and those users' hashes (userSet), and the
	// connections that will ack (only when acks are awaited)
	N          int         `json:"n,omitempty"`
	Distinct   int         `json:"d,omitempty"`
	UserHashes []byte      `json:"-"` // after the JSON (encodeMsg)
	Ackers     []string    `json:"ackers,omitempty"`
	HTTPAckers []httpAcker `json:"httpAckers,omitempty"` // connections acking by POST {base}/acks
	// ack (Conn empty: by POST {base}/acks, the User's), httpack (the
	// same, to every node: the origin takes it)
	Conn   string          `json:"conn,omitempty"`
	User   string          `json:"user,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// encodeMsg encodes m for a Broker: its JSON, then, when it has user
// hashes, a NUL byte and the hashes as they are (JSON never holds a NUL
// byte: the origin of a count reads its JSON without decoding the hashes,
// and needs them only when several nodes reached users).
func encodeMsg(m *nodeMsg) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil || len(m.UserHashes) == 0 {
		return b, err
	}
	b = append(b, 0)
	return append(b, m.UserHashes...), nil
}

// decodeMsg decodes what encodeMsg encoded into m; m keeps a part of b.
func decodeMsg(b []byte, m *nodeMsg) error {
	head, tail, _ := bytes.Cut(b, []byte{0})
	if err := json.Unmarshal(head, m); err != nil {
		return err
	}
	if len(tail) > 0 {
		m.UserHashes = tail
	}
	return nil
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

// nodeReply is a message to one node.
type nodeReply struct {
	origin string
	m      *nodeMsg
}

const (
	nodeOpsQueue = 4096
	// nodeReplyBatch bounds the replies sent in one round trip.
	nodeReplyBatch = 256
	// presenceTTL is how long a connection stays present in the broker
	// without a refresh (refreshed every presenceTTL/3).
	presenceTTL = 30 * time.Second
)

func newNode(p *Plugin, b Broker) *node {
	n := &node{p: p, b: b, id: uuid.NewString(),
		ops: make(chan func(context.Context), nodeOpsQueue), opsDone: make(chan struct{}),
		replies: make(chan nodeReply, nodeOpsQueue), repliesDone: make(chan struct{})}
	n.opsCtx, n.opsCancel = context.WithCancel(context.Background())
	n.ps, _ = b.(PresenceStore)
	return n
}

// start connects the node: the broker starts delivering, the node listens
// to the control topic and its own.
func (n *node) start() error {
	go n.runOps()
	go n.runReplies()
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

// stop ends the node: queued operations run (once ctx ends, with their
// contexts cut: they fail at once rather than outlive Close), then the
// broker stops.
func (n *node) stop(ctx context.Context) error {
	n.opsMu.Lock()
	n.opsOff = true
	close(n.ops)
	close(n.replies)
	n.opsMu.Unlock()
	stopped := make(chan struct{})
	go func() {
		<-n.repliesDone
		<-n.opsDone
		n.overflow.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		n.opsCancel() // what is left fails at once: an engine call, not a local one
		<-stopped
	}
	n.opsCancel()
	if err := n.b.Stop(ctx); err != nil {
		return fmt.Errorf("realtime: broker stop: %w", err)
	}
	return nil
}

func (n *node) runOps() {
	defer close(n.opsDone)
	for op := range n.ops {
		ctx, cancel := context.WithTimeout(n.opsCtx, 5*time.Second)
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
			ctx, cancel := context.WithTimeout(n.opsCtx, 5*time.Second)
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
		if b, err = encodeMsg(m); err != nil {
			return 0, err
		}
		k, err = n.b.Publish(ctx, topic, b)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return k, nil
}

// reply sends m to the node origin, off the caller's goroutine (the
// replies queue, else the ops queue); a reply to this node is handled at
// once.
func (n *node) reply(origin string, m *nodeMsg) {
	if origin == n.id {
		n.message(m)
		return
	}
	n.opsMu.Lock()
	if n.opsOff {
		n.opsMu.Unlock()
		return
	}
	select {
	case n.replies <- nodeReply{origin, m}:
		n.opsMu.Unlock()
		return
	default:
	}
	n.opsMu.Unlock()
	n.async(func(ctx context.Context) { n.sendReplies(ctx, []nodeReply{{origin, m}}) })
}

// runReplies sends the queued replies, each time all those waiting (up to
// nodeReplyBatch) at once.
func (n *node) runReplies() {
	defer close(n.repliesDone)
	batch := make([]nodeReply, 0, nodeReplyBatch)
	for r := range n.replies {
		batch = append(batch[:0], r)
	fill:
		for len(batch) < nodeReplyBatch {
			select {
			case r, ok := <-n.replies:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		ctx, cancel := context.WithTimeout(n.opsCtx, 5*time.Second)
		n.sendReplies(ctx, batch)
		cancel()
		clear(batch)
	}
}

// sendReplies sends replies: in one round trip through a Pusher, else one
// by one.
func (n *node) sendReplies(ctx context.Context, rs []nodeReply) {
	var err error
	if pu, ok := n.b.(Pusher); ok {
		topics := make([]string, len(rs))
		msgs := make([][]byte, len(rs))
		for i, r := range rs {
			topics[i] = topicNode(r.origin)
			if msgs[i], err = encodeMsg(r.m); err != nil {
				break
			}
		}
		if err == nil {
			err = pu.PublishEach(ctx, topics, msgs)
		}
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	} else {
		for _, r := range rs {
			if _, e := n.publish(ctx, topicNode(r.origin), r.m); e != nil && err == nil {
				err = e
			}
		}
	}
	if err != nil {
		n.p.log.Warn("realtime: replies to nodes not sent", "replies", len(rs), "err", err)
	}
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

// Message implements Node. A message a Pusher published with an event
// begins with the event's position (Pusher.Push).
func (h nodeHandle) Message(topic string, msg []byte) {
	var m nodeMsg
	seq, body, err := cutPosition(msg)
	if err == nil {
		err = decodeMsg(body, &m)
	}
	if err != nil {
		h.n.p.log.Warn("realtime: undecodable broker message", "topic", topic, "err", err)
		return
	}
	if seq > 0 {
		m.Seq = seq
	}
	m.forTopic(topic)
	h.n.message(&m)
}

// cutPosition splits a message into the position before its first newline
// (digits only) and the rest; a message that begins with '{' has none.
func cutPosition(msg []byte) (uint64, []byte, error) {
	if len(msg) == 0 || msg[0] < '0' || msg[0] > '9' {
		return 0, msg, nil
	}
	i := bytes.IndexByte(msg, '\n')
	if i < 0 {
		return 0, nil, errors.New("a position without a message")
	}
	seq, err := strconv.ParseUint(string(msg[:i]), 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("position: %w", err)
	}
	return seq, msg[i+1:], nil
}

// messageLocal implements localReceiver: a message of the in-process engine
// (shared by the nodes that receive it: completed on a copy).
func (h nodeHandle) messageLocal(topic string, m *nodeMsg) {
	if m.Type == "notify" {
		c := *m
		c.forTopic(topic)
		m = &c
	}
	h.n.message(m)
}
