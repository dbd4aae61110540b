package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
)

// MaxAwaitAcks is the longest Notification.AwaitAcks.
const MaxAwaitAcks = 30 * time.Second

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
	// Event is the push's event name. Required.
	Event string
	// Data is the push's payload: a json.RawMessage or []byte is taken as
	// JSON as is, anything else is marshalled with encoding/json.
	Data any
	// AwaitAcks, when positive, makes Notify wait up to this long (at most
	// MaxAwaitAcks) for the ack frames of the connections it delivered to.
	AwaitAcks time.Duration
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
}

// Notify pushes n to the WebSocket connections it targets (PROTOCOL.md §7)
// and, for a push with a Channel, to the SSE channel streams subscribed
// to it (§8). It never waits for a connection: each target's frame is
// queued (a full queue closes that connection with 1013, that stream
// ends). A push with a Channel is first appended to the channel's buffer
// (history, since, Last-Event-ID); when that fails nothing is delivered
// and the error wraps ErrUnavailable. With AwaitAcks it then waits for the
// delivered WebSockets' acks (SSE streams cannot ack and are not awaited),
// until ctx ends or the plugin closes. Errors wrap ErrBadRequest,
// ErrUnavailable or ErrClosed.
func (p *Plugin) Notify(ctx context.Context, n Notification) (NotifyResult, error) {
	if p.closed.Load() {
		return NotifyResult{}, fmt.Errorf("realtime: notify: %w", ErrClosed)
	}
	if n.Event == "" {
		return NotifyResult{}, fmt.Errorf("realtime: notify: %w", badRequest("event is required"))
	}
	if strings.ContainsAny(n.Event, "\r\n\x00") {
		// It is the SSE event field of channel streams.
		return NotifyResult{}, fmt.Errorf("realtime: notify: %w", badRequest("event must not contain CR, LF or NUL"))
	}
	if n.AwaitAcks < 0 || n.AwaitAcks > MaxAwaitAcks {
		return NotifyResult{}, fmt.Errorf("realtime: notify: %w", badRequest("awaitAcks must be between 0 and 30s"))
	}
	if n.Channel != "" {
		if err := validChannel(n.Channel, false); err != nil {
			return NotifyResult{}, fmt.Errorf("realtime: notify: %w", err)
		}
	}
	data, err := dataJSON(n.Data)
	if err != nil {
		return NotifyResult{}, fmt.Errorf("realtime: notify: %w", err)
	}
	tenant := n.Tenant
	if tenant == "" {
		tenant = TenantFrom(ctx)
	}
	id := uuid.NewString()
	now := time.Now()
	frame, err := json.Marshal(envelope{
		Type: "message", EnvelopeID: id, Channel: n.Channel, Event: n.Event, Data: data,
		Timestamp: now.UTC().Format(time.RFC3339Nano),
	})
	if err != nil {
		return NotifyResult{}, fmt.Errorf("realtime: notify: %w", badRequest("data is not valid JSON"))
	}
	lp := &localPush{channel: n.Channel, event: n.Event, id: id, frame: frame}
	if n.Channel != "" {
		// Buffered before it is delivered anywhere: a subscriber that
		// resumes finds in the buffer whatever it did not get live.
		ev := &Event{Type: n.Event, Ref: channelKey(tenant, n.Channel), ETag: id, Data: frame,
			Prior: targetingJSON(n.Users, n.ExcludeUsers), Time: now}
		seq, err := p.cfg.Buffer.Append(ctx, ev.Ref, ev)
		if err != nil {
			return NotifyResult{}, fmt.Errorf("realtime: notify: buffer: %w: %w", ErrUnavailable, err)
		}
		lp.seq, lp.ev = seq, ev
	}
	if p.cluster != nil {
		res, err := p.cluster.notify(ctx, tenant, n, id, frame, data, lp.seq)
		if err != nil {
			return NotifyResult{}, fmt.Errorf("realtime: notify: %w", err)
		}
		return res, nil
	}
	targets := p.ws.reg.targets(tenant, n.Users, n.ExcludeUsers, n.Channel, n.Event, data)

	var wait *ackWait
	if n.AwaitAcks > 0 {
		wait = p.ws.acks.open(id)
		defer p.ws.acks.done(id)
	}
	res := NotifyResult{EnvelopeID: id, Acks: []Ack{}}
	users := make(map[string]struct{})
	var (
		batch    pushBatch
		awaiting int // delivered connections that can ack (WebSockets)
	)
	for _, c := range targets {
		acks := wait != nil && c.stream == nil
		if acks {
			wait.expect(c.id)
		}
		if !batch.push(c, lp) {
			if acks {
				wait.forget(c.id)
			}
			continue
		}
		if c.stream == nil {
			awaiting++
		}
		res.Delivered++
		users[c.user] = struct{}{}
	}
	batch.flush(p) // one lock for all of them
	res.Users = len(users)
	if wait != nil && awaiting > 0 {
		res.Acks = wait.wait(ctx, n.AwaitAcks, p.ws.acks.closed)
		res.TimedOut = awaiting - len(res.Acks)
	}
	return res, nil
}

// localPush is one push on its way to this node's targets.
type localPush struct {
	channel, event, id string
	// seq is the push's position in its channel's buffer (0 without a
	// channel): a connection resumed past it already has it.
	seq   uint64
	frame []byte // the envelope: the WebSocket frame
	ev    *Event // the SSE event of channel streams, built on first use
}

// sseEvent is the push as an SSE channel stream writes it (event: name,
// id: envelopeId, data: envelope), encoded once for all streams.
func (lp *localPush) sseEvent() *Event {
	if lp.ev == nil {
		lp.ev = &Event{Type: lp.event, ETag: lp.id, Data: lp.frame, Time: time.Now()}
	}
	return lp.ev
}

// pushBatch collects the targets to schedule on the writer pool.
type pushBatch struct {
	conns []*wsConn
	subs  []*subscriber
}

// push queues lp to c (a WebSocket or an SSE channel stream) without
// blocking; false when c is closing or overflowed.
func (b *pushBatch) push(c *wsConn, lp *localPush) bool {
	if s := c.stream; s != nil {
		var seq uint64
		if c.streamSeq {
			seq = lp.seq
		}
		b.subs = s.offer(item{ev: lp.sseEvent(), seq: seq}, b.subs)
		return s.open()
	}
	ok, schedule := c.pushFrame(lp.channel, lp.seq, lp.frame)
	if schedule {
		b.conns = append(b.conns, c)
	}
	return ok
}

// flush schedules the batch's targets.
func (b *pushBatch) flush(p *Plugin) {
	p.writers.addConns(b.conns)
	p.writers.addMany(b.subs)
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

// targets returns the connections of tenant a push reaches (PROTOCOL.md §7).
func (r *wsRegistry) targets(tenant string, users, exclude []string, channel, event string, data json.RawMessage) []*wsConn {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ts := r.tenants[tenant]
	if ts == nil {
		return nil
	}
	var excluded map[string]struct{}
	if len(exclude) > 0 {
		excluded = make(map[string]struct{}, len(exclude))
		for _, u := range exclude {
			excluded[u] = struct{}{}
		}
	}
	var (
		out     []*wsConn
		decoded *pushData // the push's data, decoded once, on the first connection with filters
	)
	keep := func(c *wsConn) {
		if _, ex := excluded[c.user]; ex {
			return
		}
		if len(c.filters) > 0 {
			if decoded == nil {
				d := decodePushData(data)
				decoded = &d
			}
			if !anyFilterMatchesData(c.filters, event, decoded) {
				return
			}
		}
		out = append(out, c)
	}
	switch {
	case len(users) > 0:
		seen := make(map[string]struct{}, len(users))
		for _, u := range users {
			if _, dup := seen[u]; dup {
				continue
			}
			seen[u] = struct{}{}
			for c := range r.users[userKey{tenant: tenant, user: u}] {
				if channel == "" && c.stream != nil {
					continue // SSE channel streams get channel pushes only
				}
				if channel != "" && !c.subscribedTo(channel) {
					continue
				}
				keep(c)
			}
		}
	case channel != "":
		ts.matchMu.Lock()
		ts.channels.match(channel, keep)
		ts.matchMu.Unlock()
	default:
		for c := range ts.conns {
			keep(c)
		}
	}
	return out
}

// subscribedTo reports whether one of c's patterns matches channel
// (registry lock held).
func (c *wsConn) subscribedTo(channel string) bool {
	for p := range c.channels {
		if channelPatternMatches(p, channel) {
			return true
		}
	}
	return false
}

// channelPatternMatches reports whether pattern ("*" one segment, trailing
// ">" one or more further segments) matches the concrete channel. It is the
// per-connection check of a push to given users; channelIndex serves the
// push to a channel's subscribers.
func channelPatternMatches(pattern, channel string) bool {
	for {
		ps, prest, pmore := cutDot(pattern)
		cs, crest, cmore := cutDot(channel)
		if ps == ">" && !pmore {
			return true // cs is at least one segment
		}
		if ps != "*" && ps != cs {
			return false
		}
		if pmore != cmore {
			return false
		}
		if !pmore {
			return true
		}
		pattern, channel = prest, crest
	}
}

func cutDot(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// ackBoard holds the acks awaited by Notify calls, by envelope id.
type ackBoard struct {
	mu     sync.Mutex
	waits  map[string]*ackWait
	closed chan struct{}
	once   sync.Once
}

func newAckBoard() *ackBoard {
	return &ackBoard{waits: make(map[string]*ackWait), closed: make(chan struct{})}
}

func (b *ackBoard) open(id string) *ackWait {
	w := &ackWait{board: b, want: make(map[string]bool), changed: make(chan struct{}, 1)}
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
	acked, ok := w.want[connID]
	if !ok || acked {
		return
	}
	w.want[connID] = true
	if len(result) == 0 {
		result = json.RawMessage("null")
	}
	w.got = append(w.got, Ack{User: user, ConnectionID: connID, Result: append(json.RawMessage(nil), result...)})
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// ackWait is one Notify's wait (fields guarded by board.mu).
type ackWait struct {
	board   *ackBoard
	want    map[string]bool // connection id → acked
	got     []Ack
	changed chan struct{} // capacity 1: a new ack arrived
}

func (w *ackWait) expect(connID string) {
	w.board.mu.Lock()
	w.want[connID] = false
	w.board.mu.Unlock()
}

func (w *ackWait) forget(connID string) {
	w.board.mu.Lock()
	if !w.want[connID] {
		delete(w.want, connID)
	}
	w.board.mu.Unlock()
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

// notifyRequest is the body of POST {base}/notify.
type notifyRequest struct {
	Users        []string        `json:"users"`
	ExcludeUsers []string        `json:"excludeUsers"`
	Channel      string          `json:"channel"`
	Event        string          `json:"event"`
	Data         json.RawMessage `json:"data"`
	AwaitAcks    string          `json:"awaitAcks"`
}

// handleNotify serves POST {base}/notify (publish scope).
func (p *Plugin) handleNotify(c *gin.Context) {
	var req notifyRequest
	ident, ok := p.publisherRequest(c, "notify", &req)
	if !ok {
		return
	}
	var (
		await time.Duration
		err   error
	)
	if req.AwaitAcks != "" {
		if await, err = time.ParseDuration(req.AwaitAcks); err != nil || await < 0 || await > MaxAwaitAcks {
			writeError(c, badRequest("awaitAcks must be a duration of at most 30s"))
			return
		}
	}
	res, err := p.Notify(c.Request.Context(), Notification{
		Tenant: ident.Tenant, Users: req.Users, ExcludeUsers: req.ExcludeUsers,
		Channel: req.Channel, Event: req.Event, Data: req.Data, AwaitAcks: await,
	})
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, res)
}
