package realtime

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/gorilla/websocket"
)

// Record subscriptions over a WebSocket (PROTOCOL.md §6, records): each
// (connection, record) is one subscriber attached to the hub like an SSE
// subscriber, with the viaSocket transport. Its first frames are those of
// §3 (firstFrames), the hand-over to live events is release's, and the
// writer pool checks authorization before each frame and queues it to the
// connection without blocking.

// wsRecordReq is one entry of a subscribe/unsubscribe message's records.
type wsRecordReq struct {
	Collection  string `json:"collection"`
	ID          string `json:"id"`
	LastEventID string `json:"lastEventId"`
}

// wsRecordRef names a record of the connection's tenant.
type wsRecordRef struct {
	Collection string `json:"collection"`
	ID         string `json:"id"`
}

type wsRecordError struct {
	Type       string `json:"type"`
	Code       string `json:"code"`
	Collection string `json:"collection"`
	ID         string `json:"id"`
}

type wsRecordResync struct {
	Type       string `json:"type"`
	Collection string `json:"collection"`
	ID         string `json:"id"`
	Reason     string `json:"reason"`
}

// recordErrorFrame is {"type":"error","code":…,"collection":…,"id":…}.
func recordErrorFrame(code string, key StreamKey) []byte {
	b, _ := json.Marshal(wsRecordError{Type: "error", Code: code, Collection: key.Collection, ID: key.ID})
	return b
}

// socketFrame is the WebSocket frame of ev for the subscriber of key: the
// event's shared frame, or a resync frame naming the record.
func socketFrame(key StreamKey, ev *Event) []byte {
	if ev.Type != EventResync {
		return ev.WSFrame()
	}
	reason := "buffer-miss"
	if ev != resyncEvent {
		var d struct {
			Reason string `json:"reason"`
		}
		if json.Unmarshal(ev.Data, &d) == nil && d.Reason != "" {
			reason = d.Reason
		}
	}
	b, _ := json.Marshal(wsRecordResync{Type: EventResync, Collection: key.Collection, ID: key.ID, Reason: reason})
	return b
}

// sendSocket queues b to the subscriber's connection unless the
// subscriber is closed: under s.mu, so that once close returns nothing more
// is sent for the record. The send never blocks.
func (s *subscriber) sendSocket(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == subClosed {
		return false
	}
	return s.ws.send(b)
}

// parseRecords decodes and validates a message's records. For a subscribe
// it also checks the per-connection limit (Config.WSMaxRecords).
func (c *wsConn) parseRecords(raw json.RawMessage, sub bool) ([]wsRecordReq, error) {
	var reqs []wsRecordReq
	if err := json.Unmarshal(raw, &reqs); err != nil {
		return nil, badRequest("records must be a list of {collection, id, lastEventId}")
	}
	max := c.ws.p.cfg.WSMaxRecords
	if len(reqs) > max {
		return nil, badRequest("too many records")
	}
	seen := make(map[wsRecordRef]struct{}, len(reqs))
	out := reqs[:0]
	for _, r := range reqs {
		if err := validName("collection", r.Collection); err != nil {
			return nil, err
		}
		if err := validName("id", r.ID); err != nil {
			return nil, err
		}
		if len(r.LastEventID) > 1024 || strings.ContainsAny(r.LastEventID, "\r\n\x00") {
			return nil, badRequest("invalid lastEventId")
		}
		k := wsRecordRef{r.Collection, r.ID}
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		out = append(out, r)
	}
	if sub {
		c.recMu.Lock()
		n := len(c.records)
		for k := range seen {
			if _, ok := c.records[k]; !ok {
				n++
			}
		}
		c.recMu.Unlock()
		if n > max {
			return nil, badRequest("too many records")
		}
	}
	return out, nil
}

// subscribeRecords subscribes c to reqs (validated), answers subscribed
// with channels and every record now subscribed, then starts each new
// record's delivery (its first frames follow the subscribed frame).
// Records c may not see are answered with an error frame each.
func (c *wsConn) subscribeRecords(reqs []wsRecordReq, channels []string) {
	p := c.ws.p
	type pending struct {
		s     *subscriber
		first []item
		base  uint64
		skip  string
	}
	var ready []pending
	for _, r := range reqs {
		key := StreamKey{Tenant: c.tenant, Collection: r.Collection, ID: r.ID}
		k := wsRecordRef{r.Collection, r.ID}
		c.recMu.Lock()
		_, already := c.records[k]
		c.recMu.Unlock()
		if already {
			continue
		}
		s := newSubscriber(p, key, c.ident, viaSocket)
		s.ws = c
		if !p.track(s) {
			c.send(recordErrorFrame("unavailable", key))
			continue
		}
		first, base, skip, err := p.prepare(p.baseCtx, s, r.LastEventID)
		if err != nil {
			p.untrack(s)
			p.logFailure("websocket record subscribe", err)
			_, code, _ := statusOf(err)
			c.send(recordErrorFrame(code, key))
			continue
		}
		if !c.addRecord(k, s) {
			s.close(ErrClosed)
			p.detach(s)
			p.untrack(s)
			continue
		}
		ready = append(ready, pending{s, first, base, skip})
	}
	if channels == nil {
		channels = c.channelsSnapshot()
	}
	c.sendJSON(wsChannels{Type: "subscribed", Channels: channels, Records: c.recordList()})
	for _, r := range ready {
		r.s.release(r.first, r.base, r.skip)
	}
}

// noResumePoint is a resume point no buffer holds (not a valid ETag): a
// subscription resumed from it gets resync and the stored record (§3).
const noResumePoint = "\x00"

// resyncRecord tells a record followed over c that it may have missed
// events (a bulk write's Resync, or a gap in the broker's delivery): the
// subscription is replaced by one resumed from nowhere, so c gets ev (the
// resync frame, with its reason), then the record as stored now
// (snapshot, or deleted when gone), then live events, with the hand-over
// of every subscription. It runs on a goroutine of its own (the Loader may
// block), counted by the new subscriber's tracking.
func (c *wsConn) resyncRecord(s *subscriber, ev *Event) {
	p := c.ws.p
	ns := newSubscriber(p, s.key, c.ident, viaSocket)
	ns.ws = c
	if !p.track(ns) {
		return // closing: s ends with the connection
	}
	go func() {
		key := s.key
		if !c.dropRecord(s, ErrClosed) {
			p.untrack(ns) // unsubscribed or gone meanwhile
			return
		}
		first, base, skip, err := p.prepare(p.baseCtx, ns, noResumePoint)
		if err != nil {
			p.untrack(ns)
			p.logFailure("websocket record resync", err)
			_, code, _ := statusOf(err)
			c.send(socketFrame(key, ev))
			c.send(recordErrorFrame(code, key))
			return
		}
		if len(first) > 0 && first[0].ev == resyncEvent {
			first[0] = item{ev: ev} // the caller's reason
		}
		if !c.addRecord(wsRecordRef{key.Collection, key.ID}, ns) {
			ns.close(ErrClosed)
			p.detach(ns)
			p.untrack(ns)
			return
		}
		ns.release(first, base, skip)
	}()
}

// addRecord registers s as c's subscriber of k; false once c's records
// are closed.
func (c *wsConn) addRecord(k wsRecordRef, s *subscriber) bool {
	c.recMu.Lock()
	defer c.recMu.Unlock()
	if c.recClosed {
		return false
	}
	if c.records == nil {
		c.records = make(map[wsRecordRef]*subscriber)
	}
	c.records[k] = s
	return true
}

// dropRecord ends s's subscription with cause. Whoever removes s from c's
// records detaches and untracks it: exactly once. It reports whether this
// call removed it.
func (c *wsConn) dropRecord(s *subscriber, cause error) bool {
	k := wsRecordRef{s.key.Collection, s.key.ID}
	c.recMu.Lock()
	owned := c.records[k] == s
	if owned {
		delete(c.records, k)
	}
	c.recMu.Unlock()
	s.close(cause)
	if owned {
		c.ws.p.detach(s)
		c.ws.p.untrack(s)
	}
	return owned
}

// unsubscribeRecords detaches the records of reqs (all of them with all).
func (c *wsConn) unsubscribeRecords(reqs []wsRecordReq, all bool) {
	var drop []*subscriber
	c.recMu.Lock()
	if all {
		for _, s := range c.records {
			drop = append(drop, s)
		}
	} else {
		for _, r := range reqs {
			if s := c.records[wsRecordRef{r.Collection, r.ID}]; s != nil {
				drop = append(drop, s)
			}
		}
	}
	c.recMu.Unlock()
	for _, s := range drop {
		c.dropRecord(s, errClientGone)
	}
}

// closeRecords detaches every record subscriber of c and refuses new ones
// (the connection has ended).
func (c *wsConn) closeRecords() {
	c.recMu.Lock()
	c.recClosed = true
	c.recMu.Unlock()
	c.unsubscribeRecords(nil, true)
}

// recordList returns c's subscribed records, sorted.
func (c *wsConn) recordList() []wsRecordRef {
	c.recMu.Lock()
	out := make([]wsRecordRef, 0, len(c.records))
	for k := range c.records {
		out = append(out, k)
	}
	c.recMu.Unlock()
	slices.SortFunc(out, func(a, b wsRecordRef) int {
		if a.Collection != b.Collection {
			return strings.Compare(a.Collection, b.Collection)
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// tooSlow closes c with 1013 because one of its record queues overflowed
// (non-blocking: the close frame is written by a goroutine of its own).
func (c *wsConn) tooSlow() {
	if !c.closing.Load() {
		c.ws.p.log.Info("realtime: closing a WebSocket whose record queue overflowed (1013)",
			"tenant", c.tenant, "user", c.user, "connection", c.id)
	}
	c.closeWith(websocket.CloseTryAgainLater, "too slow")
}
