package realtime

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// wsConn is one open WebSocket. Its channels and filters are guarded by the
// registry's lock.
type wsConn struct {
	id      string
	tenant  string
	user    string
	expires time.Time // zero: no expiry
	s       *melody.Session
	conn    *websocket.Conn // s's connection, set by onConnect
	ws      *wsServer

	// The send queue: frames waiting for the writer pool, in order. It is
	// allocated when a frame is queued (an idle connection holds none) and
	// bounded by Config.WSSendQueue (overflow closes with 1013). outSched is
	// set while the connection is on the pool's ready list or held by a
	// worker: one writer at a time. pingDue asks that worker for a ping.
	// Guarded by outMu; deadline is the worker's own.
	outMu    sync.Mutex
	out      [][]byte
	outSpare [][]byte
	outSched bool
	pingDue  bool
	deadline time.Time

	// registered is set by onConnect once the connection is in the
	// registry, clustered once the broker knows it; read by onDisconnect
	// on the same goroutine.
	registered bool
	clustered  bool

	// closing is set once the connection is being closed by the server
	// (close frame sent or under way): nothing more is queued to it.
	closing atomic.Bool

	channels map[string]struct{}
	filters  []pushFilter

	// stream is set on the registry entry of an SSE channel stream (not a
	// WebSocket): pushes go to that subscriber; streamSeq when it follows
	// one concrete channel (positions drop what its resume replayed).
	stream    *subscriber
	streamSeq bool

	// resume holds the channels subscribed with since (channel_resume.go):
	// their live pushes are held while the replay is read, then dropped
	// when replayed. hasResume is set while resume is not empty (so that a
	// push to a connection without any takes no lock). Guarded by resMu.
	resMu     sync.Mutex
	resume    map[string]*chanResume
	hasResume atomic.Bool

	// ident is the connection's verified identity, for the Authorizer.
	ident *Identity
	// records are the records c follows, one subscriber each; recClosed
	// once the connection has ended. Guarded by recMu.
	recMu     sync.Mutex
	records   map[wsRecordRef]*subscriber
	recClosed bool

	// The inbox: client frames waiting to be handled, in order, by a
	// goroutine started when the first one arrives and ending when none is
	// left. The read loop only queues, so its stack stays at the few KiB a
	// blocked read needs instead of keeping what handling a subscribe grew
	// it to (an idle connection's largest cost). It is bounded by
	// wsInboxMax: a client sending faster than its frames are handled
	// waits (the read loop stops reading) rather than losing any. Guarded
	// by inMu; inDone is broadcast when the handler ends.
	inMu      sync.Mutex
	inDone    sync.Cond
	inbox     [][]byte
	inRunning bool
	inClosed  bool
}

// wsInboxMax bounds the frames a connection's read loop queues before it
// waits for them to be handled.
const wsInboxMax = 32

// receive queues one client frame for handling (from the read loop).
func (c *wsConn) receive(b []byte) {
	c.inMu.Lock()
	if c.inDone.L == nil {
		c.inDone.L = &c.inMu
	}
	for len(c.inbox) >= wsInboxMax && !c.inClosed {
		c.inDone.Wait()
	}
	if c.inClosed {
		c.inMu.Unlock()
		return
	}
	c.inbox = append(c.inbox, b)
	start := !c.inRunning
	c.inRunning = true
	c.inMu.Unlock()
	if start {
		go c.handleInbox()
	}
}

// handleInbox handles queued frames until none is left.
func (c *wsConn) handleInbox() {
	for {
		c.inMu.Lock()
		if len(c.inbox) == 0 || c.inClosed {
			c.inbox = nil
			c.inRunning = false
			c.inDone.Broadcast()
			c.inMu.Unlock()
			return
		}
		b := c.inbox[0]
		c.inbox[0] = nil
		c.inbox = c.inbox[1:]
		c.inDone.Broadcast()
		c.inMu.Unlock()
		c.handle(b)
	}
}

// stopInbox drops the frames not yet handled and waits for the one being
// handled (from the read loop, once it has ended).
func (c *wsConn) stopInbox() {
	c.inMu.Lock()
	c.inClosed = true
	for c.inRunning {
		c.inDone.Wait()
	}
	c.inbox = nil
	c.inMu.Unlock()
}

func (c *wsConn) key() userKey { return userKey{tenant: c.tenant, user: c.user} }

// channelList returns c's channels, sorted (registry lock held).
func (c *wsConn) channelList() []string {
	out := make([]string, 0, len(c.channels))
	for p := range c.channels {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// send queues msg without blocking; false when c is closing or its queue
// overflowed (the overflow closes it with 1013). msg is shared, not copied:
// it must not be changed afterwards.
func (c *wsConn) send(msg []byte) bool {
	ok, schedule := c.enqueue(msg)
	if schedule {
		c.ws.p.writers.addConn(c)
	}
	return ok
}

// enqueue is send without scheduling: schedule tells the caller to hand c
// to the writer pool (addConns, for many connections with one lock).
func (c *wsConn) enqueue(msg []byte) (ok, schedule bool) {
	if c.closing.Load() {
		return false, false
	}
	c.outMu.Lock()
	if len(c.out) >= c.ws.p.cfg.WSSendQueue {
		c.outMu.Unlock()
		if !c.closing.Load() {
			c.ws.p.log.Info("realtime: closing a WebSocket that could not keep up (1013)",
				"tenant", c.tenant, "user", c.user, "connection", c.id)
		}
		c.closeWith(websocket.CloseTryAgainLater, "too slow")
		return false, false
	}
	if c.out == nil && c.outSpare != nil {
		c.out, c.outSpare = c.outSpare, nil
	}
	c.out = append(c.out, msg)
	schedule = !c.outSched
	c.outSched = true
	c.outMu.Unlock()
	return !c.closing.Load(), schedule
}

// queuePing asks for a ping; it reports whether c must be scheduled (the
// caller schedules it).
func (c *wsConn) queuePing() bool {
	if c.closing.Load() {
		return false
	}
	c.outMu.Lock()
	defer c.outMu.Unlock()
	c.pingDue = true
	need := !c.outSched
	c.outSched = true
	return need
}

// maxSpareFrames is the largest drained queue a connection keeps for reuse.
const maxSpareFrames = 16

// flushConn writes what c has queued, in order, one text frame per
// message (a round's frames within one write deadline), then a ping if one
// is due (the worker holding c is its only
// writer; close frames go through WriteControl, safe alongside). A write
// error other than a close already sent ends the connection: its read loop
// returns and onDisconnect runs.
func (w *writerPool) flushConn(c *wsConn) {
	conn := c.conn
	for round := 0; ; round++ {
		c.outMu.Lock()
		q, ping := c.out, c.pingDue
		c.out, c.pingDue = nil, false
		if len(q) == 0 && !ping {
			c.outSched = false
			c.outMu.Unlock()
			return
		}
		c.outMu.Unlock()
		var err error
		if len(q) > 0 {
			w.renewConnDeadline(c) // per round, as for SSE: a round is bounded by WriteTimeout
		}
		for _, m := range q {
			if err = conn.WriteMessage(websocket.TextMessage, m); err != nil {
				break
			}
		}
		if err == nil && ping {
			err = conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(w.p.cfg.WriteTimeout))
		}
		clear(q)
		if cap(q) <= maxSpareFrames {
			c.outMu.Lock()
			if c.outSpare == nil {
				c.outSpare = q[:0]
			}
			c.outMu.Unlock()
		}
		if err != nil {
			if !errors.Is(err, websocket.ErrCloseSent) {
				_ = conn.Close()
			}
			c.outMu.Lock()
			clear(c.out)
			c.out, c.outSpare, c.pingDue, c.outSched = nil, nil, false, false
			c.outMu.Unlock()
			return
		}
		if round >= roundsBatch {
			w.addConn(c) // still scheduled: let others have a turn
			return
		}
	}
}

// renewConnDeadline is renewDeadline for a WebSocket: a write deadline of
// between WriteTimeout/2 and WriteTimeout ahead of each round of frames
// (gorilla applies it to every frame's write).
func (w *writerPool) renewConnDeadline(c *wsConn) {
	now := time.Now()
	if c.deadline.Sub(now) >= w.p.cfg.WriteTimeout/2 {
		return
	}
	c.deadline = now.Add(w.p.cfg.WriteTimeout)
	_ = c.conn.SetWriteDeadline(c.deadline)
}

// sendJSON encodes v and queues it.
func (c *wsConn) sendJSON(v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	return c.send(b)
}

// closeWith starts closing c with code, once: it writes the close frame
// ahead of the queued frames (a control frame may interleave a fragmented
// message) on a goroutine counted by the server, then lets the read loop
// drain the client's input until the client answers the close or
// closeGrace passes, so the client can read the code.
func (c *wsConn) closeWith(code int, reason string) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	w := c.ws
	w.closeMu.Lock()
	if w.stopped {
		w.closeMu.Unlock()
		_ = c.conn.Close()
		return
	}
	w.closers.Add(1)
	w.closeMu.Unlock()
	go func() {
		defer w.closers.Done()
		conn := c.conn
		deadline := time.Now().Add(w.p.cfg.WriteTimeout)
		if err := conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), deadline); err != nil {
			_ = conn.Close() // cannot tell the client: end it now
			return
		}
		_ = conn.SetReadDeadline(time.Now().Add(closeGrace))
	}()
}

// closeGrace is how long the server keeps reading after its close frame,
// waiting for the client's, before it closes the TCP connection.
const closeGrace = 2 * time.Second

// wsIn is a client → server message.
type wsIn struct {
	Type       string            `json:"type"`
	Channels   []string          `json:"channels"`
	Filters    []json.RawMessage `json:"filters"`
	Records    json.RawMessage   `json:"records"`
	Since      json.RawMessage   `json:"since"`
	EnvelopeID string            `json:"envelopeId"`
	Result     json.RawMessage   `json:"result"`
}

type wsError struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

type wsChannels struct {
	Type     string        `json:"type"`
	Channels []string      `json:"channels"`
	Records  []wsRecordRef `json:"records,omitempty"`
}

var pongFrame = []byte(`{"type":"pong"}`)

func (c *wsConn) badInput(msg string) {
	c.sendJSON(wsError{Type: "error", Code: "bad_request", Message: msg})
}

// handle serves one text frame from the client.
func (c *wsConn) handle(raw []byte) {
	trimmed := bytes.TrimSpace(raw)
	if bytes.EqualFold(trimmed, []byte("ping")) {
		c.send(pongFrame)
		return
	}
	var m wsIn
	if len(trimmed) == 0 || trimmed[0] != '{' || json.Unmarshal(trimmed, &m) != nil {
		c.badInput("a frame must be one JSON object")
		return
	}
	switch m.Type {
	case "ping":
		c.send(pongFrame)
	case "subscribe", "unsubscribe":
		c.handleSubscribe(&m)
	case "ack":
		if m.EnvelopeID == "" {
			c.badInput("ack needs an envelopeId")
			return
		}
		if cl := c.ws.p.cluster; cl != nil && cl.forwardAck(m.EnvelopeID, c.id, c.user, m.Result) {
			return
		}
		c.ws.acks.deliver(m.EnvelopeID, c.id, c.user, m.Result)
	default:
		c.badInput("unknown message type")
	}
}

func (c *wsConn) handleSubscribe(m *wsIn) {
	sub := m.Type == "subscribe"
	hasRecords := len(m.Records) > 0 && !bytes.Equal(m.Records, []byte("null"))
	var reqs []wsRecordReq
	if hasRecords {
		var err error
		if reqs, err = c.parseRecords(m.Records, sub); err != nil {
			c.badInput(publicMessage(err))
			return
		}
	}
	hasSince := sub && len(m.Since) > 0 && !bytes.Equal(m.Since, []byte("null"))
	reg := c.ws.reg
	if m.Channels == nil && m.Filters == nil {
		switch {
		case hasSince:
			c.badInput("since needs channels")
		case hasRecords && sub:
			c.subscribeRecords(reqs, nil)
		case hasRecords:
			c.unsubscribeRecords(reqs, false)
			c.sendJSON(wsChannels{Type: "unsubscribed", Channels: c.channelsSnapshot(), Records: c.recordList()})
		case sub:
			c.badInput("subscribe needs channels, filters or records")
		default:
			// A bare unsubscribe removes every channel, filter and record.
			reg.removeFilters(c, nil, true)
			c.unsubscribeRecords(nil, true)
			left := reg.unsubscribe(c, c.channelsSnapshot())
			c.dropResume(nil, true)
			c.sendJSON(wsChannels{Type: "unsubscribed", Channels: left})
		}
		return
	}
	for _, ch := range m.Channels {
		if err := validChannel(ch, true); err != nil {
			c.badInput(publicMessage(err))
			return
		}
	}
	if sub && len(m.Channels) > c.ws.p.cfg.WSMaxChannels {
		c.badInput("too many channels")
		return
	}
	var since map[string]string
	if hasSince {
		var err error
		if since, err = parseSince(m.Since, m.Channels); err != nil {
			c.badInput(publicMessage(err))
			return
		}
	}
	var fs []pushFilter
	if m.Filters != nil {
		var err error
		if fs, err = parseFilters(m.Filters); err != nil {
			c.badInput(publicMessage(err))
			return
		}
	}
	if !sub {
		if m.Filters != nil {
			reg.removeFilters(c, fs, len(m.Filters) == 0)
		}
		if hasRecords {
			c.unsubscribeRecords(reqs, false)
		}
		left := reg.unsubscribe(c, m.Channels)
		c.dropResume(m.Channels, false)
		c.sendJSON(wsChannels{Type: "unsubscribed", Channels: left, Records: c.recordList()})
		return
	}
	channels := c.authorizedChannels(m.Channels, since)
	if len(fs) > 0 {
		if err := reg.addFilters(c, fs); err != nil {
			c.badInput(publicMessage(err))
			return
		}
	}
	hold := c.holdChannels(since) // live pushes of these wait for their replay
	all, err := reg.subscribe(c, channels, c.ws.p.cfg.WSMaxChannels)
	if err != nil {
		c.dropResume(hold, false)
		if errors.Is(err, ErrBadRequest) {
			if len(fs) > 0 {
				reg.removeFilters(c, fs, false) // all or nothing
			}
			c.badInput(publicMessage(err))
		}
		return
	}
	type replay struct {
		ch     string
		frames [][]byte
		base   uint64
		ok     bool
	}
	replays := make([]replay, 0, len(hold))
	for _, ch := range hold {
		frames, base, ok := c.replayChannel(ch, since[ch])
		replays = append(replays, replay{ch, frames, base, ok})
	}
	if hasRecords {
		c.subscribeRecords(reqs, all)
	} else {
		c.sendJSON(wsChannels{Type: "subscribed", Channels: all, Records: c.recordList()})
	}
	for _, r := range replays {
		c.releaseChannel(r.ch, r.frames, r.base, r.ok)
	}
}

// wsChannelError refuses one channel of a subscribe.
type wsChannelError struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Channel string `json:"channel"`
	Message string `json:"message"`
}

// authorizedChannels returns the channels of a subscribe that
// Config.AuthorizeChannel allows, answering an error frame for each one
// refused (the others are subscribed) and removing it from since.
func (c *wsConn) authorizedChannels(channels []string, since map[string]string) []string {
	p := c.ws.p
	if p.cfg.AuthorizeChannel == nil {
		return channels
	}
	out := make([]string, 0, len(channels))
	for _, ch := range channels {
		if err := p.authorizeChannel(p.baseCtx, c.ident, ch, ChannelOpSubscribe); err != nil {
			_, code, msg := statusOf(err)
			c.sendJSON(wsChannelError{Type: "error", Code: code, Channel: ch, Message: msg})
			delete(since, ch)
			continue
		}
		out = append(out, ch)
	}
	return out
}

// channelsSnapshot returns c's channels under the registry's read lock.
func (c *wsConn) channelsSnapshot() []string {
	c.ws.reg.mu.RLock()
	defer c.ws.reg.mu.RUnlock()
	return c.channelList()
}

// sameFilter reports whether two filters are equal.
func sameFilter(a, b pushFilter) bool { return reflect.DeepEqual(a, b) }
