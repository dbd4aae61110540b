package realtime

import (
	"bytes"
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/ginrealtime/realtime/internal/strictjson"
)

// Client → server WebSocket messages (PROTOCOL.md §6): their parser and
// the limits every message passes before it is handled.
//
// Each message is one JSON object whose "type" names its shape; its other
// keys must be those of that type, with their types (the plugin's strict
// decoder, input.go): anything else is a bad_request error frame and the
// connection stays open. Before that, on the read loop: a text frame that
// is not valid UTF-8 closes the connection with 1007, and a client sending
// faster than Config.WSMessageRate (bursts of WSMessageBurst) is closed
// with 1008. Frames over WSMaxMessageBytes never get here (gorilla closes
// with 1009).

// Message types a client sends.
const (
	wsTypePing        = "ping"
	wsTypeSubscribe   = "subscribe"
	wsTypeUnsubscribe = "unsubscribe"
	wsTypeAck         = "ack"
	wsTypeRefresh     = "refresh"
	wsTypePublish     = "publish"
)

// wsIn is a parsed client message: Type, and the fields of that type.
type wsIn struct {
	Type string
	// subscribe, unsubscribe. A nil slice or map: the key was absent (or
	// null); an empty one: present and empty.
	Channels []string
	Filters  []json.RawMessage
	Records  []wsRecordReq
	Since    map[string]string
	// ack
	EnvelopeID string
	Result     json.RawMessage
	// refresh
	Token string
	// publish
	Channel string
	Event   string
	Data    json.RawMessage
}

// The shape of each message type, for the strict decoder.
type (
	wsPingMsg struct {
		Type string `json:"type"`
	}
	wsSubscribeMsg struct {
		Type     string            `json:"type"`
		Channels []string          `json:"channels"`
		Filters  []json.RawMessage `json:"filters"`
		Records  []wsRecordReq     `json:"records"`
		Since    map[string]string `json:"since"`
	}
	wsAckMsg struct {
		Type       string          `json:"type"`
		EnvelopeID string          `json:"envelopeId"`
		Result     json.RawMessage `json:"result"`
	}
	wsRefreshMsg struct {
		Type  string `json:"type"`
		Token string `json:"token"`
	}
	wsPublishMsg struct {
		Type    string          `json:"type"`
		Channel string          `json:"channel"`
		Event   string          `json:"event"`
		Data    json.RawMessage `json:"data"`
	}
)

// parseWSMessage parses one client text frame: the text "ping" (any case,
// spaces around it allowed) or a JSON object of a known type with the
// fields of that type. The error wraps ErrBadRequest; its message is the
// error frame's. It checks shapes only: limits that depend on the
// configuration or the connection are the handlers'.
func parseWSMessage(raw []byte) (wsIn, error) {
	trimmed := bytes.TrimSpace(raw)
	if bytes.EqualFold(trimmed, []byte(wsTypePing)) {
		return wsIn{Type: wsTypePing}, nil
	}
	obj, err := strictjson.Object(trimmed)
	if err != nil {
		return wsIn{}, badRequest("a frame must be one JSON object")
	}
	var typ string
	if t, ok := obj["type"]; !ok || json.Unmarshal(t, &typ) != nil {
		return wsIn{}, badRequest(`field "type" must be a string: the message type`)
	}
	fields := func(dst any) error {
		if err := strictjson.Fields(obj, dst); err != nil {
			return badRequest(err.Error())
		}
		return nil
	}
	switch typ {
	case wsTypePing:
		var m wsPingMsg
		if err := fields(&m); err != nil {
			return wsIn{}, err
		}
		return wsIn{Type: typ}, nil
	case wsTypeSubscribe, wsTypeUnsubscribe:
		var m wsSubscribeMsg
		if err := fields(&m); err != nil {
			return wsIn{}, err
		}
		return wsIn{Type: typ, Channels: m.Channels, Filters: m.Filters, Records: m.Records, Since: m.Since}, nil
	case wsTypeAck:
		var m wsAckMsg
		if err := fields(&m); err != nil {
			return wsIn{}, err
		}
		if m.EnvelopeID == "" {
			return wsIn{}, badRequest("ack needs an envelopeId")
		}
		return wsIn{Type: typ, EnvelopeID: m.EnvelopeID, Result: m.Result}, nil
	case wsTypeRefresh:
		var m wsRefreshMsg
		if err := fields(&m); err != nil {
			return wsIn{}, err
		}
		if m.Token == "" {
			return wsIn{}, badRequest("refresh needs a token")
		}
		return wsIn{Type: typ, Token: m.Token}, nil
	case wsTypePublish:
		var m wsPublishMsg
		if err := fields(&m); err != nil {
			return wsIn{}, err
		}
		if m.Channel == "" {
			return wsIn{}, badRequest("publish needs a channel")
		}
		return wsIn{Type: typ, Channel: m.Channel, Event: m.Event, Data: m.Data}, nil
	}
	return wsIn{}, badRequest("unknown message type")
}

// admit applies the read loop's limits to a client frame (text or not):
// the connection's message rate, then, for a text frame, UTF-8. A frame
// refused closes the connection (1008, 1007) and is dropped, like every
// frame after it. It runs on the read loop only, which owns the bucket.
func (c *wsConn) admit(b []byte, text bool) bool {
	if c.refused {
		return false
	}
	p := c.ws.p
	if !c.bucket.take(time.Now(), p.cfg.WSMessageRate, float64(p.cfg.WSMessageBurst)) {
		c.refused = true
		c.closeWith(closePolicyViolation, "message rate exceeded")
		return false
	}
	if text && !utf8.Valid(b) {
		c.refused = true
		c.closeWith(closeInvalidPayload, "text frame is not valid UTF-8")
		return false
	}
	return true
}

// tokenBucket is a connection's message budget: it holds up to burst
// tokens, refilled at rate per second, one taken per message. It is
// computed on each message (no timer, no goroutine).
type tokenBucket struct {
	tokens float64
	at     time.Time // zero: full
}

// take takes a token at now; false when none is left.
func (b *tokenBucket) take(now time.Time, rate, burst float64) bool {
	if b.at.IsZero() {
		b.tokens = burst
	} else if d := now.Sub(b.at); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*rate)
	}
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
