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
	ws      *wsServer

	// registered is set by onConnect once the connection is in the
	// registry; read by onDisconnect on the same goroutine.
	registered bool

	// closing is set once the connection is being closed by the server
	// (close frame sent or under way): nothing more is queued to it.
	closing atomic.Bool

	channels map[string]struct{}
	filters  []pushFilter

	// ident is the connection's verified identity, for the Authorizer.
	ident *Identity
	// records are the records c follows, one subscriber each; recClosed
	// once the connection has ended. Guarded by recMu.
	recMu     sync.Mutex
	records   map[wsRecordRef]*subscriber
	recClosed bool
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
// overflowed (the overflow closes it with 1013, from melody's error handler).
func (c *wsConn) send(msg []byte) bool {
	if c.closing.Load() {
		return false
	}
	if err := c.s.Write(msg); err != nil {
		return false
	}
	return !c.closing.Load()
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
		_ = c.s.WebsocketConnection().Close()
		return
	}
	w.closers.Add(1)
	w.closeMu.Unlock()
	go func() {
		defer w.closers.Done()
		conn := c.s.WebsocketConnection()
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
	reg := c.ws.reg
	if m.Channels == nil && m.Filters == nil {
		switch {
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
			c.sendJSON(wsChannels{Type: "unsubscribed", Channels: reg.unsubscribe(c, c.channelsSnapshot())})
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
		c.sendJSON(wsChannels{Type: "unsubscribed", Channels: reg.unsubscribe(c, m.Channels), Records: c.recordList()})
		return
	}
	if len(fs) > 0 {
		if err := reg.addFilters(c, fs); err != nil {
			c.badInput(publicMessage(err))
			return
		}
	}
	all, err := reg.subscribe(c, m.Channels, c.ws.p.cfg.WSMaxChannels)
	if err != nil {
		if errors.Is(err, ErrBadRequest) {
			if len(fs) > 0 {
				reg.removeFilters(c, fs, false) // all or nothing
			}
			c.badInput(publicMessage(err))
		}
		return
	}
	if hasRecords {
		c.subscribeRecords(reqs, all)
		return
	}
	c.sendJSON(wsChannels{Type: "subscribed", Channels: all, Records: c.recordList()})
}

// channelsSnapshot returns c's channels under the registry's read lock.
func (c *wsConn) channelsSnapshot() []string {
	c.ws.reg.mu.RLock()
	defer c.ws.reg.mu.RUnlock()
	return c.channelList()
}

// sameFilter reports whether two filters are equal.
func sameFilter(a, b pushFilter) bool { return reflect.DeepEqual(a, b) }
