package realtime

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// Acks (PROTOCOL.md §6, §7, §8): a connection answers a push with
// {"type":"ack","envelopeId":…,"result":…}; the Notify that pushed it with
// AwaitAcks waits for them. The push may come from another node: its
// delivery records the origin (remote), and the connection's ack travels
// there.
//
// A push received over HTTP (a pushes stream or poll) is acked by
// POST {base}/acks, which names the envelope but not the connection: the
// ack is its user's, and counts for one of that user's HTTP connections
// the push was delivered to (receiveHTTP). The node that takes the POST
// delivers it when it is the origin, forwards it when it delivered the
// push, and else hands it to every node (the control topic), where only
// the origin uses it.
//
// ackBoard holds the acks awaited by this node's Notify calls, by envelope
// id, and the pushes this node delivered for other nodes that await acks.
type ackBoard struct {
	node  *node
	stats *statsCounters

	mu     sync.Mutex
	waits  map[string]*ackWait
	origin map[string]remoteAck // pushes delivered here, awaited on another node
	closed chan struct{}
	once   sync.Once
}

type remoteAck struct {
	origin string
	until  time.Time
}

func newAckBoard() *ackBoard {
	return &ackBoard{waits: make(map[string]*ackWait), origin: make(map[string]remoteAck), closed: make(chan struct{})}
}

// receive handles a connection's ack: for a push awaited on another node
// it is forwarded there, else delivered here.
func (b *ackBoard) receive(envelopeID, connID, user string, result json.RawMessage) {
	b.stats.ackReceived()
	if len(result) == 0 {
		result = json.RawMessage("null")
	}
	b.mu.Lock()
	ra, remote := b.origin[envelopeID]
	b.mu.Unlock()
	if !remote || time.Now().After(ra.until) {
		b.deliver(envelopeID, connID, user, result)
		return
	}
	b.node.reply(ra.origin, &nodeMsg{Type: "ack", Envelope: envelopeID, Conn: connID, User: user,
		Result: append(json.RawMessage(nil), result...)})
}

// receiveHTTP handles an ack of POST {base}/acks by user of tenant (see
// above). The error wraps ErrUnavailable when the broker cannot take it.
func (b *ackBoard) receiveHTTP(ctx context.Context, envelopeID, tenant, user string, result json.RawMessage) error {
	if len(result) == 0 {
		result = json.RawMessage("null")
	}
	b.mu.Lock()
	_, local := b.waits[envelopeID]
	ra, remote := b.origin[envelopeID]
	b.mu.Unlock()
	m := &nodeMsg{Type: "ack", Envelope: envelopeID, Tenant: tenant, User: user,
		Result: append(json.RawMessage(nil), result...)}
	switch {
	case local:
		b.deliverHTTP(envelopeID, tenant, user, result)
	case remote && time.Now().Before(ra.until):
		b.node.reply(ra.origin, m)
	default:
		m.Type = "httpack"
		if _, err := b.node.publish(ctx, topicControl, m); err != nil {
			return err
		}
	}
	return nil
}

// remote records that a push delivered here is awaited by node origin for d.
func (b *ackBoard) remote(envelopeID, origin string, d time.Duration) {
	b.mu.Lock()
	b.origin[envelopeID] = remoteAck{origin: origin, until: time.Now().Add(d)}
	b.mu.Unlock()
}

// expire forgets the remote acks no longer awaited (heartbeat).
func (b *ackBoard) expire(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, ra := range b.origin {
		if now.After(ra.until) {
			delete(b.origin, id)
		}
	}
}

func (b *ackBoard) open(id, tenant string) *ackWait {
	w := &ackWait{board: b, tenant: tenant, want: make(map[string]bool), changed: make(chan struct{}, 1)}
	b.mu.Lock()
	b.waits[id] = w
	b.mu.Unlock()
	return w
}

func (b *ackBoard) done(id string) {
	b.mu.Lock()
	delete(b.waits, id)
	b.mu.Unlock()
}

func (b *ackBoard) close() { b.once.Do(func() { close(b.closed) }) }

// deliver records a connection's ack of a push. An ack of a push nobody
// waits for, from a connection it was not delivered to, or repeated, is
// ignored.
func (b *ackBoard) deliver(envelopeID, connID, user string, result json.RawMessage) {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.waits[envelopeID]
	if w == nil {
		return
	}
	if len(result) == 0 {
		result = json.RawMessage("null")
	}
	ack := Ack{User: user, ConnectionID: connID, Result: append(json.RawMessage(nil), result...)}
	acked, ok := w.want[connID]
	switch {
	case !ok:
		// An ack may outrun the delivery count that names its connection:
		// it is kept until then (at most one per connection).
		if _, dup := w.early[connID]; !dup && len(w.early) < maxEarlyAcks {
			if w.early == nil {
				w.early = make(map[string]Ack)
			}
			w.early[connID] = ack
		}
		return
	case acked:
		return
	}
	w.acked(ack)
}

// deliverHTTP records user's ack of a push over HTTP: it counts for the
// first of the user's HTTP connections the push was delivered to that has
// not acked. One that comes before the delivery count naming them is kept
// until then.
func (b *ackBoard) deliverHTTP(envelopeID, tenant, user string, result json.RawMessage) {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.waits[envelopeID]
	if w == nil || w.tenant != tenant {
		return
	}
	if len(result) == 0 {
		result = json.RawMessage("null")
	}
	result = append(json.RawMessage(nil), result...)
	for _, id := range w.http[user] {
		if !w.want[id] {
			w.acked(Ack{User: user, ConnectionID: id, Result: result})
			return
		}
	}
	if w.earlyN < maxEarlyAcks {
		if w.earlyHTTP == nil {
			w.earlyHTTP = make(map[string][]json.RawMessage)
		}
		w.earlyHTTP[user] = append(w.earlyHTTP[user], result)
		w.earlyN++
	}
}

// maxEarlyAcks bounds the acks one Notify keeps before the counts that
// name their connections.
const maxEarlyAcks = 1 << 16

// ackWait is one Notify's wait (fields guarded by board.mu).
type ackWait struct {
	board   *ackBoard
	tenant  string
	want    map[string]bool // connection id → acked
	early   map[string]Ack  // acks of connections not expected yet
	got     []Ack
	changed chan struct{} // capacity 1: a new ack arrived
	// The connections that ack over HTTP, by user, and the HTTP acks of
	// users none of whose connections is expected yet (earlyN in all).
	http      map[string][]string
	earlyHTTP map[string][]json.RawMessage
	earlyN    int
}

// acked records an ack of an expected connection (board.mu held).
func (w *ackWait) acked(a Ack) {
	w.want[a.ConnectionID] = true
	w.got = append(w.got, a)
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// expect adds a connection the push was delivered to.
func (w *ackWait) expect(connID string) {
	w.board.mu.Lock()
	defer w.board.mu.Unlock()
	if _, ok := w.want[connID]; ok {
		return
	}
	w.want[connID] = false
	if a, ok := w.early[connID]; ok {
		delete(w.early, connID)
		w.acked(a)
	}
}

// expectHTTP adds a connection of user that acks over HTTP.
func (w *ackWait) expectHTTP(connID, user string) {
	w.board.mu.Lock()
	defer w.board.mu.Unlock()
	if _, ok := w.want[connID]; ok {
		return
	}
	w.want[connID] = false
	if w.http == nil {
		w.http = make(map[string][]string)
	}
	w.http[user] = append(w.http[user], connID)
	if early := w.earlyHTTP[user]; len(early) > 0 {
		w.earlyHTTP[user] = early[1:]
		w.earlyN--
		w.acked(Ack{User: user, ConnectionID: connID, Result: early[0]})
	}
}

// wait returns the acks received once every expected connection acked, or
// when d, ctx or the plugin ends.
func (w *ackWait) wait(ctx context.Context, d time.Duration, closed <-chan struct{}) []Ack {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		w.board.mu.Lock()
		all := len(w.got) == len(w.want)
		w.board.mu.Unlock()
		if all {
			break
		}
		select {
		case <-w.changed:
			continue
		case <-t.C:
		case <-ctx.Done():
		case <-closed:
		}
		break
	}
	w.board.mu.Lock()
	defer w.board.mu.Unlock()
	return append([]Ack{}, w.got...)
}
