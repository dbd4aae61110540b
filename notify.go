package realtime

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// MaxAwaitAcks is the longest Notification.AwaitAcks.
const MaxAwaitAcks = 30 * time.Second

// DefaultPushEvent is the event name of a push that names none
// (PROTOCOL.md §7).
const DefaultPushEvent = "message"

// Notification is a push to the WebSocket connections of a tenant.
type Notification struct {
	// Tenant is the tenant whose connections are targeted. Default: the
	// tenant of ctx (WithTenant), else DefaultTenant.
	Tenant string
	// Users restricts the push to these users' connections (duplicates are
	// ignored). Default: every connection of the tenant.
	Users []string
	// ExcludeUsers are never pushed to.
	ExcludeUsers []string
	// Channel, when set, restricts the push to connections subscribed to a
	// matching pattern; it must be a concrete channel name.
	Channel string
	// Event is the push's event name. Default: DefaultPushEvent ("message").
	Event string
	// Data is the push's payload: a json.RawMessage or []byte is taken as
	// JSON as is, anything else is marshalled with encoding/json.
	Data any
	// AwaitAcks, when positive, makes Notify wait up to this long (at most
	// MaxAwaitAcks) for the ack frames of the connections it delivered to.
	AwaitAcks time.Duration
	// From, when set, is the envelope's "from": the user who published it
	// (the plugin sets it to the publisher of a client's publish message).
	// Default: empty, no from field.
	From string
}

// Ack is one connection's answer to a push.
type Ack struct {
	User         string          `json:"user"`
	ConnectionID string          `json:"connectionId"`
	Result       json.RawMessage `json:"result"`
}

// NotifyResult is what a Notify did.
type NotifyResult struct {
	// EnvelopeID identifies the push (the envelope's envelopeId).
	EnvelopeID string `json:"envelopeId"`
	// Delivered is the number of connections the push was queued to.
	Delivered int `json:"delivered"`
	// Users is the number of distinct users reached.
	Users int `json:"users"`
	// Acks are the acks received within AwaitAcks (empty without it).
	Acks []Ack `json:"acks"`
	// TimedOut is the number of delivered connections that did not ack
	// within AwaitAcks (0 without it).
	TimedOut int `json:"timedOut"`
}

// envelope is the server → client push frame.
type envelope struct {
	Type       string          `json:"type"`
	EnvelopeID string          `json:"envelopeId"`
	Channel    string          `json:"channel"`
	Event      string          `json:"event"`
	Data       json.RawMessage `json:"data"`
	Timestamp  string          `json:"timestamp"`
	From       string          `json:"from,omitempty"`
}

// Notify pushes n to the connections it targets (PROTOCOL.md §7), on every
// node: WebSockets and, for a push with a Channel, SSE channel streams
// subscribed to it (§8). It never waits for a connection: each target's
// frame is queued (a full queue closes that connection: 1013 on a
// WebSocket, the end of an SSE stream). A push with a Channel is first
// appended to the channel's buffer (history, since, Last-Event-ID); when
// that fails nothing is delivered and the error wraps ErrUnavailable. The
// answer comes once every node has counted its deliveries (at most
// countWaitMax); with AwaitAcks it then waits for the delivered WebSockets'
// acks (SSE streams cannot ack and are not awaited), until ctx ends or the
// plugin closes. Errors wrap ErrBadRequest, ErrUnavailable or ErrClosed.
func (p *Plugin) Notify(ctx context.Context, n Notification) (NotifyResult, error) {
	res, err := p.pushes.notify(ctx, n)
	if err != nil {
		return NotifyResult{}, fmt.Errorf("realtime: notify: %w", err)
	}
	return res, nil
}

// pushes is the push side of the plugin: this node's push targets, the
// pushes it delivers for any node, and the delivery counts its own Notify
// calls wait for.
type pushes struct {
	p   *Plugin
	reg *registry

	countMu sync.Mutex
	counts  map[string]*countWait // this node's Notify calls, by envelope id
}

func newPushes(p *Plugin) *pushes {
	return &pushes{p: p, reg: newRegistry(), counts: make(map[string]*countWait)}
}

// countWaitMax bounds how long Notify waits for the nodes' delivery counts.
const countWaitMax = 2 * time.Second

// notify is Notify: the push is published to the topics of its targets,
// every node (this one included) delivers to its own connections and
// answers with what it delivered.
func (ps *pushes) notify(ctx context.Context, n Notification) (NotifyResult, error) {
	p := ps.p
	if p.closed.Load() {
		return NotifyResult{}, ErrClosed
	}
	if n.Event == "" {
		n.Event = DefaultPushEvent
	}
	if strings.ContainsAny(n.Event, "\r\n\x00") {
		// It is the SSE event field of channel streams.
		return NotifyResult{}, badRequest("event must not contain CR, LF or NUL")
	}
	if n.AwaitAcks < 0 || n.AwaitAcks > MaxAwaitAcks {
		return NotifyResult{}, badRequest("awaitAcks must be between 0 and 30s")
	}
	if n.Channel != "" {
		if err := validChannel(n.Channel, false); err != nil {
			return NotifyResult{}, err
		}
	}
	data, err := dataJSON(n.Data)
	if err != nil {
		return NotifyResult{}, err
	}
	tenant := n.Tenant
	if tenant == "" {
		tenant = TenantFrom(ctx)
	}
	id := uuid.NewString()
	now := time.Now()
	frame, err := json.Marshal(envelope{
		Type: "message", EnvelopeID: id, Channel: n.Channel, Event: n.Event, Data: data,
		Timestamp: now.UTC().Format(time.RFC3339Nano), From: n.From,
	})
	if err != nil {
		return NotifyResult{}, badRequest("data is not valid JSON")
	}
	res := NotifyResult{EnvelopeID: id, Acks: []Ack{}}
	var wait *ackWait
	if n.AwaitAcks > 0 {
		wait = p.acks.open(id, tenant)
		defer p.acks.done(id)
	}
	cw := &countWait{changed: make(chan struct{}, 1), wait: wait}
	ps.countMu.Lock()
	ps.counts[id] = cw
	ps.countMu.Unlock()
	defer func() {
		ps.countMu.Lock()
		delete(ps.counts, id)
		ps.countMu.Unlock()
	}()

	m := nodeMsg{Type: "notify", Origin: p.node.id, Envelope: id, Frame: frame, Tenant: tenant,
		Exclude: n.ExcludeUsers, Channel: n.Channel, Event: n.Event, Data: data,
		AwaitMs: n.AwaitAcks.Milliseconds()}
	var topics []string
	if len(n.Users) > 0 {
		seen := make(map[string]bool, len(n.Users))
		for _, u := range n.Users {
			if !seen[u] {
				seen[u] = true
				topics = append(topics, topicUser(tenant, u))
			}
		}
	} else {
		topics = []string{topicTenant(tenant)}
	}
	var buffered *Event
	if n.Channel != "" {
		// Buffered before it is delivered anywhere: a subscriber that
		// resumes finds in the buffer whatever it did not get live.
		buffered = &Event{Type: n.Event, Ref: channelKey(tenant, n.Channel), ETag: id, Data: frame,
			Prior: targetingJSON(n.Users, n.ExcludeUsers), Time: now}
	}
	nodes, err := ps.send(ctx, buffered, topics, &m)
	if err != nil {
		return NotifyResult{}, err
	}
	p.stats.pushed()
	cw.await(ctx, nodes)
	delivered, users, awaiting := cw.result()
	res.Delivered, res.Users = delivered, users
	if wait != nil && awaiting > 0 {
		res.Acks = wait.wait(ctx, n.AwaitAcks, p.acks.closed)
		res.TimedOut = awaiting - len(res.Acks)
		p.stats.acksTimedOut(res.TimedOut)
	}
	return res, nil
}

// notifyFanout bounds the topics a Notify publishes to at once when the
// broker cannot publish them in one step.
const notifyFanout = 16

// send publishes the push m on each topic, after appending buffered (a
// channel push) to its channel's buffer, and returns how many nodes
// received it in all (a node counts once per topic). A Pusher does all of
// it in one step and one round trip to the engine; otherwise the append
// comes first and the topics are published up to notifyFanout at once.
// When the append fails nothing is published.
func (ps *pushes) send(ctx context.Context, buffered *Event, topics []string, m *nodeMsg) (int, error) {
	p := ps.p
	if pu, ok := p.broker.(Pusher); ok && p.cfg.Buffer == Buffer(p.broker) {
		msg, err := encodeMsg(m)
		if err != nil {
			return 0, err
		}
		var key StreamKey
		if buffered != nil {
			key = buffered.Ref
		}
		_, nodes, err := pu.Push(ctx, key, buffered, topics, msg)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return nodes, nil
	}
	if buffered != nil {
		seq, err := p.cfg.Buffer.Append(ctx, buffered.Ref, buffered)
		if err != nil {
			return 0, fmt.Errorf("buffer: %w: %w", ErrUnavailable, err)
		}
		m.Seq = seq
	}
	node := p.node
	if len(topics) == 1 {
		return node.publish(ctx, topics[0], m)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		nodes    int
		firstErr error
	)
	sem := make(chan struct{}, notifyFanout)
	for _, t := range topics {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			k, err := node.publish(ctx, t, m)
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

// deliver pushes a Notify of some node (this one included) to this node's
// targets and answers its origin with what it delivered: the number of
// connections, the number of their distinct users with a hash of each (so
// that the origin counts a user reached on two nodes once), and the
// connections to await acks of (only when acks are awaited): WebSockets,
// and those acking over HTTP with their users.
//
// When no acks are awaited and every target is sure to take the push
// (targetSet.takeAll, and no queue of the node half full), the answer goes
// before the frames are queued: a Notify across nodes waits for it, not
// for the node's queues. Otherwise the frames are queued first and the
// answer counts those queued.
func (ps *pushes) deliver(m *nodeMsg) {
	p := ps.p
	begin := time.Now()
	defer p.stats.pushFanoutSince(begin)
	lp := newLocalPush(m.Channel, m.Event, m.Envelope, m.Seq, m.Frame)
	set := ps.reg.targets(m.Tenant, m.Users, m.Exclude, m.Channel, m.Event, m.Data)
	reply := &nodeMsg{Type: "count", Envelope: m.Envelope}
	if m.AwaitMs == 0 && p.pool.pressed.Load() == 0 && set.takeAll() {
		reply.N = len(set.list)
		reply.Distinct, reply.UserHashes = set.users()
		p.node.reply(m.Origin, reply)
		if m.Origin != p.node.id {
			runtime.Gosched() // let the answer go out now
		}
		var sched []*conn // most are scheduled already: few to kick
		for _, t := range set.list {
			if _, kick := t.push(lp); kick {
				sched = append(sched, t.c)
			}
		}
		kickAll(p.pool, sched)
		return
	}
	var (
		sched []*conn
		// hashes are those of the users delivered to, once a target was
		// not: until then the set's own users are.
		hashes []uint64
		missed bool
	)
	for i, t := range set.list {
		ok, kick := t.push(lp)
		if kick {
			sched = append(sched, t.c)
		}
		if !ok {
			if !missed {
				missed = true
				for _, d := range set.list[:i] {
					hashes = append(hashes, userHash(d.ident.User))
				}
			}
			continue
		}
		reply.N++
		if missed {
			hashes = append(hashes, userHash(t.ident.User))
		}
		switch {
		case m.AwaitMs == 0 || !t.acks:
		case t.httpAcks:
			reply.HTTPAckers = append(reply.HTTPAckers, httpAcker{Conn: t.id, User: t.ident.User})
		default:
			reply.Ackers = append(reply.Ackers, t.id)
		}
	}
	if missed {
		reply.Distinct, reply.UserHashes = userSet(hashes)
	} else {
		reply.Distinct, reply.UserHashes = set.users()
	}
	if m.AwaitMs > 0 && len(reply.Ackers)+len(reply.HTTPAckers) > 0 && m.Origin != p.node.id {
		p.acks.remote(m.Envelope, m.Origin, time.Duration(m.AwaitMs)*time.Millisecond+time.Second)
	}
	// The count goes first: an ack can only follow the push's write, and
	// the origin must expect it by then (its forward follows the count).
	p.node.reply(m.Origin, reply)
	kickAll(p.pool, sched)
}

// userHash is the 64-bit FNV-1a hash of a user name, the same on every
// node: delivery counts carry users as hashes (8 bytes each, whatever the
// length of the names). Two users of one push whose hashes collide (a
// chance of about n²/2⁶⁵ for n users) count as one.
func userHash(u string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(u); i++ {
		h ^= uint64(u[i])
		h *= 1099511628211
	}
	return h
}

// userSet returns how many distinct hashes there are and their encoding
// (8 bytes each, little-endian, in order of first appearance): one pass
// through an open-addressing set, no sort (a node's count is on the path
// of the push's answer).
func userSet(hashes []uint64) (int, []byte) {
	if len(hashes) == 0 {
		return 0, nil
	}
	size := 1
	for size < 2*len(hashes) {
		size <<= 1
	}
	table := make([]uint64, size) // 0: empty (a hash of 0 is stored as 1)
	b := make([]byte, 0, 8*len(hashes))
	n := 0
	for _, h := range hashes {
		h = max(h, 1)
		for i := h & uint64(size-1); ; i = (i + 1) & uint64(size-1) {
			if table[i] == h {
				break
			}
			if table[i] == 0 {
				table[i] = h
				b = binary.LittleEndian.AppendUint64(b, h)
				n++
				break
			}
		}
	}
	return n, b
}

// counted records a node's delivery count of one of this node's pushes.
func (ps *pushes) counted(m *nodeMsg) {
	ps.countMu.Lock()
	w := ps.counts[m.Envelope]
	ps.countMu.Unlock()
	if w != nil {
		w.add(m)
	}
}

// countWait collects the delivery counts of one Notify.
type countWait struct {
	mu        sync.Mutex
	got       int // counts received (one per node and topic that received the push)
	delivered int
	// distinct sums the counts' distinct users; sets are their user
	// hashes, merged only when more than one count reached users.
	distinct int
	sets     [][]byte
	awaiting int
	wait     *ackWait // nil: acks not awaited
	changed  chan struct{}
}

func (w *countWait) add(m *nodeMsg) {
	w.mu.Lock()
	w.got++
	w.delivered += m.N
	if m.Distinct > 0 {
		w.distinct += m.Distinct
		w.sets = append(w.sets, m.UserHashes)
	}
	if w.wait != nil {
		for _, id := range m.Ackers {
			w.wait.expect(id)
			w.awaiting++
		}
		for _, a := range m.HTTPAckers {
			w.wait.expectHTTP(a.Conn, a.User)
			w.awaiting++
		}
	}
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// await waits until nodes counts arrived, countWaitMax passed or ctx ended.
func (w *countWait) await(ctx context.Context, nodes int) {
	timer := time.NewTimer(countWaitMax)
	defer timer.Stop()
	for {
		w.mu.Lock()
		all := w.got >= nodes
		w.mu.Unlock()
		if all {
			return
		}
		select {
		case <-w.changed:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// result returns the connections delivered to, their distinct users (one
// count: its own number; several: the union of their hashes) and the
// connections whose acks are awaited.
func (w *countWait) result() (delivered, users, awaiting int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	users = w.distinct
	if len(w.sets) > 1 {
		union := make(map[uint64]struct{}, w.distinct)
		for _, b := range w.sets {
			for i := 0; i+8 <= len(b); i += 8 {
				union[binary.LittleEndian.Uint64(b[i:])] = struct{}{}
			}
		}
		users = len(union)
	}
	return w.delivered, users, w.awaiting
}

// localPush is one push on its way to this node's targets.
type localPush struct {
	channel string
	id      string // its envelopeId
	// seq is the push's position in its channel's buffer (0 without a
	// channel): a connection resumed past it already has it.
	seq uint64
	// ev is the push as every target queues it: its envelope (the
	// WebSocket frame, the SSE data), event name and, for a channel push,
	// envelopeId (the SSE event and id), each encoding made once for all
	// targets.
	ev *Event
}

func newLocalPush(channel, event, id string, seq uint64, frame []byte) *localPush {
	ev := &Event{kind: kindPush, Type: event, Data: frame, Time: time.Now()}
	if channel != "" {
		// A push without a channel has no SSE id line: it is in no
		// buffer, so it is no resume point, and a stream's Last-Event-ID
		// stays its last channel push (pushes_http.go).
		ev.ETag = id
	}
	return &localPush{channel: channel, seq: seq, id: id, ev: ev}
}

// dataJSON returns the JSON of a push's data ("null" for nil).
func dataJSON(v any) (json.RawMessage, error) {
	switch d := v.(type) {
	case nil:
		return json.RawMessage("null"), nil
	case json.RawMessage:
		if len(d) == 0 {
			return json.RawMessage("null"), nil
		}
		if !json.Valid(d) {
			return nil, badRequest("data is not valid JSON")
		}
		return d, nil
	case []byte:
		if !json.Valid(d) {
			return nil, badRequest("data is not valid JSON")
		}
		return d, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, badRequest("data cannot be encoded as JSON")
	}
	return b, nil
}
