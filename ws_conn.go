package realtime

import (
	"encoding/json"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/google/uuid"
)

// wsConn is one open WebSocket: its outgoing conn (written by
// wsTransport), its push target, the records it follows, and the inbox of
// client frames.
type wsConn struct {
	ws    *wsServer
	id    string
	ident *Identity
	c     *conn
	wt    *wsTransport
	tg    *target

	// registered is set by start once the target is in the registry;
	// served once the plugin serves the socket (onConnect). Read after
	// start by the same goroutine, or after HandleRequest returned.
	registered bool
	served     bool
	// ipKey is the client IP slot the connection holds (Config.MaxConnsPerIP;
	// "": none), given back by onDisconnect.
	ipKey string

	// records are the records c follows, one subscription each; recClosed
	// once the connection has ended. Guarded by recMu.
	recMu     sync.Mutex
	records   map[wsRecordRef]*subscription
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

	// The read loop's own: the message budget (ws_messages.go), and
	// refused once a frame over it (or not UTF-8) has closed the
	// connection: later frames are dropped.
	bucket  tokenBucket
	refused bool
}

// wsInboxMax bounds the frames a connection's read loop queues before it
// waits for them to be handled.
const wsInboxMax = 32

func newWSConn(w *wsServer, ident *Identity) *wsConn {
	p := w.p
	wc := &wsConn{ws: w, id: uuid.NewString(), ident: ident}
	wc.wt = &wsTransport{timeout: p.cfg.WriteTimeout, pongWait: p.cfg.WSPongWait}
	wc.c = newConn(wc.wt, p.pool, p.cfg.WSSendQueue, false)
	wc.c.coalesces = true
	wc.c.ident = ident
	wc.c.kind = kindWebSocket
	wc.tg = &target{id: wc.id, ident: ident, c: wc.c, all: true, acks: true, present: true}
	return wc
}

// start runs on the connection's handler goroutine once upgraded: the
// writer takes the socket, and the connection registers for pushes, its
// connected frame queued first.
func (c *wsConn) start(nc net.Conn) {
	p := c.ws.p
	c.c.mu.Lock()
	c.wt.nc = nc // under the conn's lock: its closed reads it
	c.c.mu.Unlock()
	c.wt.lastRead.Store(time.Now().UnixNano())
	_ = nc.SetDeadline(time.Time{}) // melody's read deadline: the ping sweep replaces it
	if !p.track(c.c) {
		c.closeWith(closeGoingAway, "server closing")
		c.c.setReady()
		return
	}
	c.c.setReady()
	connected := func() { c.send(connectedJSON(c.id, c.ident)) }
	if !p.pushes.open(c.tg, nil, connected) {
		c.closeWith(closeGoingAway, "server closing")
		return
	}
	c.registered = true
}

// stop runs once the read loop has ended: the inbox stops, the records
// are detached, the target and its slot are released.
func (c *wsConn) stop() {
	p := c.ws.p
	c.c.close(errClientGone)
	c.stopInbox()
	c.closeRecords()
	if c.registered {
		p.pushes.close(c.tg, true)
	} else {
		p.pushes.reg.release(c.tg.key())
	}
	p.untrack(c.c)
}

// closeWith closes c with code and reason, ahead of its queued frames (a
// publisher's goroutine may call it: it never blocks).
func (c *wsConn) closeWith(code int, reason string) {
	c.c.mu.Lock()
	kick := c.wt.closeWithLocked(c.c, code, reason)
	c.c.mu.Unlock()
	if kick {
		c.c.kick()
	}
}

// expireLocked closes a connection whose token expired with 1008, ahead
// of its queued frames and of any ping or pong (c.mu held).
func (t *wsTransport) expireLocked(c *conn) bool {
	if t.ended || c.state == connClosed {
		return false
	}
	t.pingDue, t.pongs = false, nil
	if c.state == connEnding {
		// A clean end (1001) was decided: the token's end replaces it.
		t.ended, t.code, t.reason = true, closePolicyViolation, "token expired"
		c.sealed = true
		clear(c.queue)
		c.queue = c.queue[:0]
		return c.scheduleLocked()
	}
	return t.closeWithLocked(c, closePolicyViolation, "token expired")
}

// clientClosed answers a client's close frame (from the read loop): when
// c has sent no close of its own, the frame is echoed, in one write after
// which nothing more is written (a batch being written goes first: writes
// to a connection never interleave).
func (c *wsConn) clientClosed(code int) {
	c.c.mu.Lock()
	ended := c.wt.ended
	c.wt.ended = true
	c.c.closeLocked(errClientGone)
	c.c.mu.Unlock()
	if ended {
		return
	}
	var body []byte
	if code != 1005 { // no status received: an empty close
		body = closePayload(code, "")
	}
	_ = c.wt.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.wt.nc.Write(appendWSFrame(nil, opClose, body))
}

// receive queues one client text frame for handling (from the read
// loop), once it passed the limits (admit).
func (c *wsConn) receive(b []byte) {
	if !c.admit(b, true) {
		return
	}
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
	if c.inDone.L == nil {
		c.inDone.L = &c.inMu
	}
	c.inClosed = true
	for c.inRunning {
		c.inDone.Wait()
	}
	c.inbox = nil
	c.inMu.Unlock()
}

// send queues a message; false when c no longer takes frames.
func (c *wsConn) send(msg []byte) bool {
	return c.c.send(out{ev: &Event{kind: kindAnswer, Data: msg}})
}

// sendJSON encodes v and queues it.
func (c *wsConn) sendJSON(v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	return c.send(b)
}

// receiveBinary answers a binary frame (from the read loop): counted
// like every message, refused.
func (c *wsConn) receiveBinary() {
	if c.admit(nil, false) {
		c.badInput("binary frames are not supported")
	}
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
	m, err := parseWSMessage(raw)
	if err != nil {
		c.badInput(publicMessage(err))
		return
	}
	switch m.Type {
	case wsTypePing:
		c.send(pongFrame)
	case wsTypeSubscribe, wsTypeUnsubscribe:
		c.handleSubscribe(&m)
	case wsTypeAck:
		c.ws.p.acks.receive(m.EnvelopeID, c.id, c.ident.User, m.Result)
	case wsTypeRefresh:
		c.handleRefresh(&m)
	case wsTypePublish:
		c.handlePublish(&m)
	default:
		c.badInput("unknown message type")
	}
}

// handleSubscribe serves subscribe and unsubscribe: channels (with since)
// and filters here, records in ws_records.go.
func (c *wsConn) handleSubscribe(m *wsIn) {
	p := c.ws.p
	reg := p.pushes.reg
	sub := m.Type == wsTypeSubscribe
	hasRecords := m.Records != nil
	var reqs []wsRecordReq
	if hasRecords {
		var err error
		if reqs, err = c.checkRecords(m.Records, sub); err != nil {
			c.badInput(publicMessage(err))
			return
		}
	}
	hasSince := sub && m.Since != nil
	if m.Channels == nil && m.Filters == nil {
		switch {
		case hasSince:
			c.badInput("since needs channels")
		case hasRecords && sub:
			c.subscribeRecords(reqs, nil)
		case hasRecords:
			c.unsubscribeRecords(reqs, false)
			c.sendJSON(wsChannels{Type: "unsubscribed", Channels: reg.channels(c.tg), Records: c.recordList()})
		case sub:
			c.badInput("subscribe needs channels, filters or records")
		default:
			// A bare unsubscribe removes every channel, filter and record.
			reg.removeFilters(c.tg, nil, true)
			c.unsubscribeRecords(nil, true)
			left := reg.unsubscribe(c.tg, reg.channels(c.tg))
			c.tg.dropResumes(nil, true)
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
	if sub && len(m.Channels) > p.cfg.WSMaxChannels {
		c.badInput("too many channels")
		return
	}
	var since map[string]string
	if hasSince {
		var err error
		if since, err = checkSince(m.Since, m.Channels); err != nil {
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
			reg.removeFilters(c.tg, fs, len(m.Filters) == 0)
		}
		if hasRecords {
			c.unsubscribeRecords(reqs, false)
		}
		left := reg.unsubscribe(c.tg, m.Channels)
		c.tg.dropResumes(m.Channels, false)
		c.sendJSON(wsChannels{Type: "unsubscribed", Channels: left, Records: c.recordList()})
		return
	}
	channels := c.authorizedChannels(m.Channels, since)
	if len(fs) > 0 {
		if err := reg.addFilters(c.tg, fs); err != nil {
			c.badInput(publicMessage(err))
			return
		}
	}
	// The channels resumed from a point of their buffer that c does not
	// already receive: their live pushes wait for their replay.
	var hold []string
	for ch := range since {
		if !reg.isSubscribed(c.tg, ch) {
			hold = append(hold, ch)
		}
	}
	c.tg.holdChannels(hold)
	all, err := reg.subscribe(c.tg, channels, p.cfg.WSMaxChannels)
	if err != nil {
		c.tg.dropResumes(hold, false)
		if errors.Is(err, ErrBadRequest) {
			if len(fs) > 0 {
				reg.removeFilters(c.tg, fs, false) // all or nothing
			}
			c.badInput(publicMessage(err))
		}
		return
	}
	filters := reg.filtersOf(c.tg)
	replays := make([]replay, 0, len(hold))
	for _, ch := range hold {
		replays = append(replays, p.pushes.readReplay(p.baseCtx, c.tg, ch, since[ch], filters))
	}
	if hasRecords {
		c.subscribeRecords(reqs, all)
	} else {
		c.sendJSON(wsChannels{Type: "subscribed", Channels: all, Records: c.recordList()})
	}
	for _, r := range replays {
		c.tg.release(r)
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
	out := make([]string, 0, len(channels))
	for _, ch := range channels {
		if err := p.access.channelOp(p.baseCtx, c.ident, ch, ChannelOpSubscribe); err != nil {
			_, code, msg := statusOf(err)
			c.sendJSON(wsChannelError{Type: "error", Code: code, Channel: ch, Message: msg})
			delete(since, ch)
			continue
		}
		out = append(out, ch)
	}
	return out
}
