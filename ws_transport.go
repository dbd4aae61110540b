package realtime

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// wsTransport writes a WebSocket's frames (RFC 6455 §5) itself, on the
// connection melody took over: a batch of queued messages is encoded into
// one buffer, server frames unmasked, and written in one write, like an
// SSE stream's chunk. Pings, pongs and the close frame go through the same
// writer, after the batch's messages, so a control frame never lands
// inside another frame. melody and gorilla only read: nothing else writes
// to the connection, except gorilla's own close answer to a frame over
// the size limit (1009) and the echo of a client's close, each one whole
// write after which no message follows.
type wsTransport struct {
	nc       net.Conn
	timeout  time.Duration
	deadline time.Time
	// lastRead is when the client's last frame arrived (unix ns): the ping
	// ticker closes a connection silent for longer than pongWait.
	lastRead atomic.Int64
	pongWait time.Duration

	// Under the conn's lock.
	pingDue bool
	pongs   [][]byte
	code    int    // the close code of an end (0: 1001, going away)
	reason  string // its reason
	ended   bool   // a close frame is decided: nothing more is queued
}

var _ transport = (*wsTransport)(nil)

// WebSocket opcodes.
const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

func (t *wsTransport) write(c *conn, batch []out, end, signal bool) error {
	var (
		ping   bool
		pongs  [][]byte
		code   int
		reason string
	)
	if signal || end {
		c.mu.Lock()
		ping, pongs = t.pingDue, t.pongs
		t.pingDue, t.pongs = false, nil
		code, reason = t.code, t.reason
		c.mu.Unlock()
	}
	bp := writeBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxScratch {
			writeBufs.Put(bp)
		}
	}()
	buf := (*bp)[:0]
	for _, o := range batch {
		if p := wsPayload(o); p != nil {
			buf = appendWSFrame(buf, opText, p)
		}
	}
	for _, p := range pongs {
		buf = appendWSFrame(buf, opPong, p)
	}
	if ping {
		buf = appendWSFrame(buf, opPing, nil)
	}
	if end {
		if code == 0 {
			code = closeGoingAway
		}
		buf = appendWSFrame(buf, opClose, closePayload(code, reason))
	}
	*bp = buf
	if len(buf) == 0 {
		return nil
	}
	t.renewDeadline()
	n, err := t.nc.Write(buf)
	c.wrote = n
	return err
}

// wsPayload is the WebSocket message of a queued item (nil: none).
func wsPayload(o out) []byte {
	ev := o.ev
	switch {
	case ev.kind == kindPush || ev.kind == kindAnswer:
		return ev.Data
	case ev.kind == kindChannelResync:
		b, _ := json.Marshal(wsChannelResync{Type: EventResync, Channel: ev.Ref.ID, Reason: reasonBufferMiss})
		return b
	case ev == keepaliveEvent:
		return nil
	case o.sub != nil:
		return recordFrame(o.sub.key, ev)
	}
	return ev.WSFrame()
}

// appendWSFrame appends one unmasked, final frame of opcode op.
func appendWSFrame(b []byte, op byte, payload []byte) []byte {
	b = append(b, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// closePayload is a close frame's body: the code, then the reason (cut to
// the 123 bytes a control frame leaves, on a rune boundary).
func closePayload(code int, reason string) []byte {
	for len(reason) > 123 {
		_, size := utf8.DecodeLastRuneInString(reason)
		reason = reason[:len(reason)-size]
	}
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), uint16(code))
	return append(b, reason...)
}

// renewDeadline keeps a write deadline of between timeout/2 and timeout
// ahead of every write (as sseTransport.renewDeadline).
func (t *wsTransport) renewDeadline() {
	now := time.Now()
	if t.deadline.Sub(now) >= t.timeout/2 {
		return
	}
	t.deadline = now.Add(t.timeout)
	_ = t.nc.SetWriteDeadline(t.deadline)
}

// closeWithLocked ends c with a close frame of code and reason, ahead of
// the frames still queued (c.mu held); the first close decided wins. It
// reports whether c must be kicked.
func (t *wsTransport) closeWithLocked(c *conn, code int, reason string) bool {
	if t.ended || c.state != connOpen {
		return false
	}
	t.ended, t.code, t.reason = true, code, reason
	return c.sealLocked()
}

// overflow closes a WebSocket too slow to keep up with 1013: its client
// reconnects and resumes each record from its last ETag.
func (t *wsTransport) overflow(c *conn) {
	if t.closeWithLocked(c, closeTryAgainLater, "too slow") {
		c.kick()
	}
}

// closed lets the read loop end (c.mu held): after closeGrace once the
// close frame is out (the client can answer it and read its code:
// PROTOCOL.md §6), at once when a write failed.
func (t *wsTransport) closed(c *conn) {
	switch {
	case t.nc == nil: // not started
	case errors.Is(c.cause, ErrClosed): // the close frame is out
		_ = t.nc.SetReadDeadline(time.Now().Add(closeGrace))
	case errors.Is(c.cause, errClientGone): // the read side ends it
	default: // a write failed: the client cannot be told
		_ = t.nc.Close()
	}
}

// ping queues a ping (from the plugin's ping ticker), or closes the
// socket of a peer silent for longer than pongWait (dead: its read loop
// ends). No timer per connection: this sweep is the read deadline.
func (t *wsTransport) ping(c *conn) {
	if last := t.lastRead.Load(); last != 0 && time.Since(time.Unix(0, last)) > t.pongWait {
		_ = t.nc.Close()
		return
	}
	c.mu.Lock()
	t.pingDue = true
	c.mu.Unlock()
	c.signalTransport()
}

// pong queues the answer to a client's ping.
func (t *wsTransport) pong(c *conn, data []byte) {
	c.mu.Lock()
	if len(t.pongs) < 4 {
		t.pongs = append(t.pongs, data)
	}
	c.mu.Unlock()
	c.signalTransport()
}

// recordFrame is the WebSocket frame of a record subscription's event:
// the event's shared frame, its resync frame naming the record, or the
// error frame that ends the subscription.
func recordFrame(key StreamKey, ev *Event) []byte {
	switch ev.Type {
	case EventResync:
		b, _ := json.Marshal(wsRecordResync{Type: EventResync, Collection: key.Collection, ID: key.ID, Reason: resyncReason(ev)})
		return b
	case "error":
		return recordErrorFrame(string(ev.Data), key)
	}
	return ev.WSFrame()
}
