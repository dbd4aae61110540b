package realtime

import (
	"encoding/json"
	"slices"
	"strings"
)

// Record subscriptions over a WebSocket (PROTOCOL.md §6, records): each
// (connection, record) is one subscription (subscription.go) whose frames
// go to the connection's queue; its first frames, hand-over, order and
// access checks are those of every record stream. A record the
// connection may no longer see, or that cannot be resumed, ends that
// subscription only (an error frame), never the connection.

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

// recordErrorFrame is {"type":"error","code":…,"collection":…,"id":…}.
func recordErrorFrame(code string, key StreamKey) []byte {
	b, _ := json.Marshal(wsRecordError{Type: "error", Code: code, Collection: key.Collection, ID: key.ID})
	return b
}

// checkRecords validates a message's records (decoded by
// parseWSMessage), without duplicates. For a subscribe it also checks the
// per-connection limit (Config.WSMaxRecords).
func (c *wsConn) checkRecords(reqs []wsRecordReq, sub bool) ([]wsRecordReq, error) {
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
		s  *subscription
		st start
	}
	var ready []pending
	for _, r := range reqs {
		key := StreamKey{Tenant: c.ident.Tenant, Collection: r.Collection, ID: r.ID}
		k := wsRecordRef{r.Collection, r.ID}
		c.recMu.Lock()
		_, already := c.records[k]
		c.recMu.Unlock()
		if already {
			continue
		}
		s := newSubscription(p.streams, key, c.ident, c.c, false)
		s.drop = c.dropRecord
		st, err := p.streams.subscribe(p.baseCtx, s, r.LastEventID)
		if err != nil {
			p.logFailure("websocket record subscribe", err)
			_, code, _ := statusOf(err)
			c.send(recordErrorFrame(code, key))
			continue
		}
		if !c.addRecord(k, s) {
			p.streams.detach(s)
			continue
		}
		for i := range st.first {
			st.first[i].sub = s
		}
		ready = append(ready, pending{s, st})
	}
	if channels == nil {
		channels = p.pushes.reg.channels(c.tg)
	}
	c.sendJSON(wsChannels{Type: "subscribed", Channels: channels, Records: c.recordList()})
	for _, r := range ready {
		r.s.release(r.st)
	}
}

// addRecord registers s as c's subscription of k; false once c's records
// are closed.
func (c *wsConn) addRecord(k wsRecordRef, s *subscription) bool {
	c.recMu.Lock()
	defer c.recMu.Unlock()
	if c.recClosed {
		return false
	}
	if c.records == nil {
		c.records = make(map[wsRecordRef]*subscription)
	}
	c.records[k] = s
	c.ws.p.streams.multiplexed.Add(1)
	return true
}

// dropRecord ends s's subscription: whoever removes s from c's records
// detaches it, exactly once.
func (c *wsConn) dropRecord(s *subscription) {
	k := wsRecordRef{s.key.Collection, s.key.ID}
	c.recMu.Lock()
	owned := c.records[k] == s
	if owned {
		delete(c.records, k)
	}
	c.recMu.Unlock()
	if owned {
		c.ws.p.streams.multiplexed.Add(-1)
		c.ws.p.streams.detach(s)
	}
}

// unsubscribeRecords detaches the records of reqs (all of them with all).
func (c *wsConn) unsubscribeRecords(reqs []wsRecordReq, all bool) {
	var drop []*subscription
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
		c.dropRecord(s)
	}
}

// closeRecords detaches every record subscription of c and refuses new
// ones (the connection has ended).
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
