package realtime

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
)

// Long poll (PROTOCOL.md §4): the selection of the record stream as JSON.
// A poll is a conn drained by its handler goroutine, whose transport
// collects the events instead of writing them.

// pollResponse is the long poll's answer.
type pollResponse struct {
	Events []pollEvent `json:"events"`
}

// pollEvent is an event in a long-poll answer.
type pollEvent struct {
	Event string          `json:"event"`
	ID    string          `json:"id,omitempty"`
	Data  json.RawMessage `json:"data"`
}

// handlePoll serves GET …/:id/poll: the selection of the record stream as
// JSON, waiting up to timeout seconds for something to send.
func (p *Plugin) handlePoll(collection string) gin.HandlerFunc {
	return func(c *gin.Context) {
		ident, ok := p.identify(c)
		if !ok {
			return
		}
		key, err := routeKey(c, ident, collection, true)
		if err != nil {
			writeError(c, err)
			return
		}
		wait, err := p.pollWait(c)
		if err != nil {
			writeError(c, err)
			return
		}
		lastID := c.GetHeader("Last-Event-ID")
		if lastID == "" {
			lastID = c.Query("lastEventId")
		}
		t := &pollTransport{}
		pc := newConn(t, p.pool, p.cfg.QueueSize, true)
		pc.ident = ident
		pc.solo = true
		pc.kind, pc.key = kindPoll, &key
		s := newSubscription(p.streams, key, ident, pc, true)
		if err := p.admit(c, pc); err != nil {
			writeError(c, fmt.Errorf("poll: %w", err))
			return
		}
		defer p.untrack(pc)
		st, err := p.streams.subscribe(c.Request.Context(), s, lastID)
		if err != nil {
			p.logFailure("poll", err)
			writeError(c, err)
			return
		}
		s.release(st)
		pc.setReady()
		timer := time.NewTimer(wait)
		done := pc.doneChan()
		select {
		case <-pc.wake:
		case <-done:
		case <-timer.C:
		case <-c.Request.Context().Done():
		}
		timer.Stop()
		pc.drain(false)
		pc.close(errClientGone)
		p.streams.detach(s)
		if pc.pastDeadline(time.Now().UnixNano()) {
			// Nothing is answered past the token's expiry (PROTOCOL.md §1):
			// the client polls again, from its last id, with a fresh token.
			writeError(c, fmt.Errorf("poll: %w: token expired", ErrUnauthorized))
			return
		}
		resp := pollResponse{Events: t.events}
		if resp.Events == nil {
			resp.Events = []pollEvent{}
		}
		c.Header("Cache-Control", "no-store")
		c.JSON(http.StatusOK, resp)
	}
}

// pollWait is the wait a poll asks for (?timeout= seconds), capped.
func (p *Plugin) pollWait(c *gin.Context) (time.Duration, error) {
	v := c.Query("timeout")
	if v == "" {
		return p.cfg.PollTimeout, nil
	}
	secs, err := strconv.ParseFloat(v, 64)
	if err != nil || secs < 0 || math.IsNaN(secs) || math.IsInf(secs, 0) {
		return 0, badRequest("timeout must be a number of seconds")
	}
	// Cap before converting: a float beyond int64 nanoseconds converts to
	// a negative Duration (no wait at all).
	if secs >= p.cfg.PollMaxTimeout.Seconds() {
		return p.cfg.PollMaxTimeout, nil
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// pollTransport collects a poll's events (its handler answers them): a
// record poll's events, a pushes poll's messages (pushes_http.go) and the
// position of the last push of a channel.
type pollTransport struct {
	events   []pollEvent
	messages []json.RawMessage
	lastID   string
}

var _ transport = (*pollTransport)(nil)

func (t *pollTransport) write(_ *conn, batch []out, _, _ bool) error {
	for _, o := range batch {
		switch {
		case o.ev.kind == kindPush:
			t.messages = append(t.messages, o.ev.Data)
			if o.ev.ETag != "" { // a channel push: a resume point
				t.lastID = o.ev.ETag
			}
		case o.ev.kind == kindChannelResync: // as on a WebSocket
			t.messages = append(t.messages, wsPayload(o))
		case o.ev != keepaliveEvent:
			t.events = append(t.events, pollEvent{Event: o.ev.Type, ID: o.ev.ETag, Data: o.ev.Data})
		}
	}
	return nil
}

// overflow ends the poll: it answers what it has (the client polls again
// from its last id).
func (t *pollTransport) overflow(c *conn) {
	if c.endLocked() {
		c.kick() // never blocks, takes no lock of c's
	}
}

func (t *pollTransport) closed(*conn) {}
