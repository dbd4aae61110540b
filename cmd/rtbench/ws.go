package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"syscall"
	"time"

	"github.com/ginrealtime/realtime/internal/latency"

	"github.com/gin-gonic/gin"
	"github.com/ginrealtime/realtime"
	"github.com/google/uuid"
	"github.com/olahol/melody"
)

// WebSocket mode: the plugin's multiplexed WebSocket (realtime-ws) against a
// bare melody (melody.New() with its defaults, m.Broadcast), the library the
// plugin's WebSocket is built on.

const (
	realtimeWSPath = "/api/v1/ws"
	melodyPath     = "/ws"
	// wsChannel is the channel every WebSocket client subscribes to.
	wsChannel = "bench.news"
	// wsEvent is the pushes' event name.
	wsEvent = "bench"
	// wsKey is the fixed Sec-WebSocket-Key of the raw clients.
	wsKey = "dGhlIHNhbXBsZSBub25jZQ=="
)

// wsSubscribe is the subscribe message every client sends after the upgrade.
var wsSubscribe = []byte(`{"type":"subscribe","channels":["` + wsChannel + `"]}`)

// realtimeWSImpl is the plugin's WebSocket, mounted as an app mounts it;
// pushes go through rt.Notify on the channel the clients subscribed to.
type realtimeWSImpl struct {
	rt     *realtime.Plugin
	engine *gin.Engine
}

func newRealtimeWSImpl(sendQueue int) (*realtimeWSImpl, error) {
	rt, e, err := newPluginApp(realtime.Config{
		WSSendQueue: sendQueue,
		// Every client uses the same token (one user of one tenant): lift
		// the per-user (16) and per-tenant (10,000) caps above the
		// benchmark's connection counts. Nothing else changes.
		WSMaxConnsPerUser:   50_000,
		WSMaxConnsPerTenant: 50_000,
	})
	if err != nil {
		return nil, err
	}
	return &realtimeWSImpl{rt: rt, engine: e}, nil
}

func (r *realtimeWSImpl) handler() http.Handler { return r.engine }

func (r *realtimeWSImpl) publish(ctx context.Context, _ string, data []byte) error {
	_, err := r.rt.Notify(ctx, realtime.Notification{
		Tenant: realtime.DefaultTenant, Channel: wsChannel, Event: wsEvent, Data: json.RawMessage(data),
	})
	return err
}

func (r *realtimeWSImpl) subscribers() int64 {
	_, n, _ := r.rt.Presence(context.Background(), realtime.DefaultTenant)
	return int64(n)
}

func (r *realtimeWSImpl) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = r.rt.Close(ctx)
}

// melodyImpl is the reference: melody.New() with its defaults on /ws
// (MessageBufferSize 256 unless -queue says otherwise), pushing with
// m.Broadcast. The pushed frame has the plugin's envelope shape (same
// fields, about the same size), marshalled once per push.
type melodyImpl struct {
	m *melody.Melody
}

type melodyEnvelope struct {
	Type       string          `json:"type"`
	EnvelopeID string          `json:"envelopeId"`
	Channel    string          `json:"channel"`
	Event      string          `json:"event"`
	Data       json.RawMessage `json:"data"`
	Timestamp  string          `json:"timestamp"`
}

func newMelodyImpl(queue int) *melodyImpl {
	m := melody.New()
	if queue > 0 {
		m.Config.MessageBufferSize = queue
	}
	return &melodyImpl{m: m}
}

func (mi *melodyImpl) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+melodyPath, func(w http.ResponseWriter, r *http.Request) { _ = mi.m.HandleRequest(w, r) })
	return mux
}

func (mi *melodyImpl) publish(_ context.Context, _ string, data []byte) error {
	frame, err := json.Marshal(melodyEnvelope{
		Type: "message", EnvelopeID: uuid.NewString(), Channel: wsChannel, Event: wsEvent, Data: data,
		Timestamp: time.Now().UTC().Format(time.RFC3339Nano),
	})
	if err != nil {
		return err
	}
	return mi.m.Broadcast(frame)
}

func (mi *melodyImpl) subscribers() int64 { return int64(mi.m.Len()) }

func (mi *melodyImpl) close() { _ = mi.m.Close() }

// wsClientFrame is a masked client frame (FIN set) with opcode op. The mask
// key is fixed: the benchmark needs valid frames, not unpredictable ones.
func wsClientFrame(op byte, payload []byte) []byte {
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	b := make([]byte, 0, len(payload)+14)
	b = append(b, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	b = append(b, mask[:]...)
	for i, x := range payload {
		b = append(b, x^mask[i&3])
	}
	return b
}

// wsUpgradeRequest is the handshake, written by hand.
func wsUpgradeRequest(host, path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + wsKey + "\r\nUser-Agent: rtbench\r\n\r\n"
}

// wsMaxPayload bounds the payload a client keeps of one frame (the pushes
// are a few hundred bytes; the send time is near the start).
const wsMaxPayload = 4 << 10

// wsFeed parses server frames (unmasked; 7-, 16- and 64-bit lengths),
// counts the text frames that carry a send time, answers pings with masked
// pongs and ends on a close frame. The caller holds c.mu. State: cstate 0
// header, 1 payload, 3 ended; csize is the payload left.
func (c *clientConn) wsFeed(p []byte, now int64) {
	for len(p) > 0 && c.cstate != 3 {
		if c.cstate == 0 {
			need := 2
			for {
				if c.hlen >= 2 {
					need = 2
					switch c.hdr[1] & 0x7f {
					case 126:
						need += 2
					case 127:
						need += 8
					}
					if c.hdr[1]&0x80 != 0 {
						need += 4 // a masked server frame (not expected): skip the key
					}
				}
				if c.hlen >= need {
					break
				}
				if len(p) == 0 {
					return
				}
				c.hdr[c.hlen] = p[0]
				c.hlen++
				p = p[1:]
			}
			var n int64
			switch l := c.hdr[1] & 0x7f; l {
			case 126:
				n = int64(c.hdr[2])<<8 | int64(c.hdr[3])
			case 127:
				for _, b := range c.hdr[2:10] {
					n = n<<8 | int64(b)
				}
			default:
				n = int64(l)
			}
			c.op = c.hdr[0] & 0x0f
			c.hlen = 0
			c.csize = n
			c.pend = c.pend[:0]
			c.cstate = 1
			if n == 0 {
				c.wsFrame(now)
				continue
			}
		}
		k := min(int64(len(p)), c.csize)
		if room := wsMaxPayload - len(c.pend); room > 0 {
			c.pend = append(c.pend, p[:min(k, int64(room))]...)
		}
		p = p[k:]
		c.csize -= k
		if c.csize == 0 {
			c.wsFrame(now)
		}
	}
}

// wsFrame handles the complete frame in c.pend.
func (c *clientConn) wsFrame(now int64) {
	c.cstate = 0
	switch c.op {
	case 0x1, 0x0: // text (or a continuation: pushes are never fragmented)
		i := bytes.Index(c.pend, tKey)
		if i < 0 {
			return // connected, subscribed, …
		}
		var t int64
		for _, b := range c.pend[i+len(tKey):] {
			if b < '0' || b > '9' {
				break
			}
			t = t*10 + int64(b-'0')
		}
		c.events++
		if c.firstNs == 0 {
			c.firstNs = now
		}
		c.lastNs = now
		if t > 0 {
			if c.lat == nil {
				c.lat = new(latency.Hist)
			}
			c.lat.Add(time.Duration(now - t))
		}
	case 0x9: // ping: answer with a masked pong carrying its payload
		c.wsWrite(wsClientFrame(0xA, c.pend))
	case 0x8: // close
		c.cstate = 3
	}
}

// wsWrite writes a small frame to the connection (on the poll loop, or on
// the opening goroutine before the handover). A short write on a socket
// whose send buffer is full is not retried: it only carries pongs.
func (c *clientConn) wsWrite(b []byte) {
	if c.fd >= 0 {
		_, _ = syscall.Write(c.fd, b)
		return
	}
	if c.conn != nil {
		_, _ = c.conn.Write(b)
	}
}

// wsOpen finishes a WebSocket open after the 101 head: it sends the
// subscribe message and, when wait is set, reads until it appears in the
// server's frames. It returns every byte read past the head.
func (cs *clientSet) wsOpen(c *clientConn, rest []byte) ([]byte, error) {
	if _, err := c.conn.Write(wsClientFrame(0x1, wsSubscribe)); err != nil {
		return nil, err
	}
	if cs.wsWait == "" {
		return rest, nil
	}
	want := []byte(cs.wsWait)
	buf := make([]byte, 0, 1024)
	buf = append(buf, rest...)
	for !bytes.Contains(buf, want) {
		if len(buf) == cap(buf) {
			if len(buf) >= 64<<10 {
				return nil, errors.New("no subscribe answer in 64 KiB")
			}
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		m, err := c.conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil && !bytes.Contains(buf, want) {
			return nil, err
		}
	}
	return buf, nil
}
