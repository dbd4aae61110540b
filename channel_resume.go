package realtime

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/gorilla/websocket"
)

// chanResume is the hand-over state of one channel a WebSocket subscribed
// to with since (PROTOCOL.md §8): while holding, the channel's live pushes
// to the connection wait in held; once the replay is queued they follow
// it, except those at or below base (the newest position the replay read:
// the replay had them, or they precede the resume point). base keeps
// dropping such late deliveries (a Notify that appended before the replay
// was read but delivers after it) while the channel stays subscribed.
type chanResume struct {
	holding bool
	held    []heldPush
	base    uint64
}

type heldPush struct {
	seq   uint64
	frame []byte
}

// pushFrame queues a push's frame to c (enqueue), through the resume state
// of its channel when there is one.
func (c *wsConn) pushFrame(channel string, seq uint64, frame []byte) (ok, schedule bool) {
	if channel == "" || !c.hasResume.Load() {
		return c.enqueue(frame)
	}
	c.resMu.Lock()
	defer c.resMu.Unlock()
	r := c.resume[channel]
	switch {
	case r == nil:
		return c.enqueue(frame)
	case seq != 0 && seq <= r.base:
		return !c.closing.Load(), false // the replay carried it
	case r.holding:
		if len(r.held) >= c.ws.p.cfg.WSSendQueue {
			c.closeWith(websocket.CloseTryAgainLater, "too slow")
			return false, false
		}
		r.held = append(r.held, heldPush{seq: seq, frame: frame})
		return !c.closing.Load(), false
	}
	return c.enqueue(frame)
}

// parseSince decodes a subscribe's since object: concrete channels, each
// listed in channels, to a resume point (an envelopeId).
func parseSince(raw json.RawMessage, channels []string) (map[string]string, error) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var since map[string]string
	if err := json.Unmarshal(raw, &since); err != nil {
		return nil, badRequest(`since must be an object of channel names to envelopeIds`)
	}
	listed := make(map[string]bool, len(channels))
	for _, ch := range channels {
		listed[ch] = true
	}
	for ch, id := range since {
		if err := validChannel(ch, false); err != nil {
			return nil, badRequest("since applies to concrete channels only: " + publicMessage(err))
		}
		if !listed[ch] {
			return nil, badRequest("since names a channel that is not in channels: " + ch)
		}
		if id == "" || len(id) > 512 || strings.ContainsAny(id, "\r\n\x00") {
			return nil, badRequest("since: invalid envelopeId for " + ch)
		}
	}
	return since, nil
}

// holdChannels starts holding the live pushes of channels (those of since
// that c does not already receive) and returns them; the caller then
// subscribes them, reads the replays and calls releaseChannel for each
// (or dropResume on failure).
func (c *wsConn) holdChannels(since map[string]string) []string {
	if len(since) == 0 {
		return nil
	}
	var hold []string
	c.ws.reg.mu.RLock()
	for ch := range since {
		if !c.subscribedTo(ch) { // already received: nothing was missed here
			hold = append(hold, ch)
		}
	}
	c.ws.reg.mu.RUnlock()
	if len(hold) == 0 {
		return nil
	}
	c.resMu.Lock()
	if c.resume == nil {
		c.resume = make(map[string]*chanResume, len(hold))
	}
	for _, ch := range hold {
		c.resume[ch] = &chanResume{holding: true}
	}
	c.hasResume.Store(true)
	c.resMu.Unlock()
	return hold
}

// dropResume forgets the resume state of channels (unsubscribed, or a
// subscribe that failed); all with all set.
func (c *wsConn) dropResume(channels []string, all bool) {
	if !c.hasResume.Load() {
		return
	}
	c.resMu.Lock()
	if all {
		c.resume = nil
	}
	for _, ch := range channels {
		delete(c.resume, ch)
	}
	if len(c.resume) == 0 {
		c.resume = nil
		c.hasResume.Store(false)
	}
	c.resMu.Unlock()
}

// channelResync is the resync frame of a channel whose resume point is
// not (or no longer) in its buffer.
type channelResync struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Reason  string `json:"reason"`
}

// replayChannel reads ch's buffer after lastID: the envelopes c may see,
// oldest first, and the position they bring it to; ok false on a miss
// (unknown or evicted resume point, or a buffer that cannot be read).
func (c *wsConn) replayChannel(ch, lastID string) (frames [][]byte, base uint64, ok bool) {
	p := c.ws.p
	lk, err := p.cfg.Buffer.Since(p.baseCtx, channelKey(c.tenant, ch), lastID)
	if err != nil {
		// Never an error the client cannot act on: it resyncs.
		p.log.Warn("realtime: channel buffer unavailable, resyncing the subscriber", "err", err)
		return nil, 0, false
	}
	switch lk.Status {
	case LookupUpToDate:
		return nil, lk.Seq, true
	case LookupFound:
		base = lk.Seq
		for _, e := range lk.Events {
			base = max(base, e.Seq)
			if c.mayReceive(e.Event) {
				frames = append(frames, e.Event.Data)
			}
		}
		return frames, base, true
	}
	return nil, 0, false
}

// mayReceive reports whether a buffered channel push would have been
// delivered to c: its targeting and c's filters (read on c's inbox
// goroutine, their only writer).
func (c *wsConn) mayReceive(ev *Event) bool {
	if ev == nil || !targetsUser(ev.Prior, c.user) {
		return false
	}
	if len(c.filters) == 0 {
		return true
	}
	var env envelope
	if json.Unmarshal(ev.Data, &env) != nil {
		return false
	}
	d := decodePushData(env.Data)
	return anyFilterMatchesData(c.filters, env.Event, &d)
}

// releaseChannel queues ch's replay (or its resync frame when ok is
// false), then the live pushes held meanwhile that come after base, and
// ends the holding: later pushes go straight to the queue.
func (c *wsConn) releaseChannel(ch string, frames [][]byte, base uint64, ok bool) {
	if !ok {
		b, _ := json.Marshal(channelResync{Type: EventResync, Channel: ch, Reason: "buffer-miss"})
		frames = [][]byte{b}
	}
	sched := false
	c.resMu.Lock()
	r := c.resume[ch]
	for _, f := range frames {
		_, s := c.enqueue(f)
		sched = sched || s
	}
	if r != nil {
		for _, h := range r.held {
			if h.seq != 0 && h.seq <= base {
				continue // in the replay
			}
			_, s := c.enqueue(h.frame)
			sched = sched || s
		}
		r.held, r.holding, r.base = nil, false, base
		if base == 0 { // nothing to drop later
			delete(c.resume, ch)
			if len(c.resume) == 0 {
				c.resume = nil
				c.hasResume.Store(false)
			}
		}
	}
	c.resMu.Unlock()
	if sched {
		c.ws.p.writers.addConn(c)
	}
}
