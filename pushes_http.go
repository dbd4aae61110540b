package realtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
)

// Pushes on every transport (PROTOCOL.md §8): what §7 would write to a
// WebSocket of the caller's identity with no subscriptions — its user
// pushes and its tenant's broadcasts — plus the pushes of the channels it
// lists, for a client that cannot hold a WebSocket:
//
//	GET  {base}/pushes/subscribe  an SSE stream: "event: connected" (data as
//	                              the WebSocket's connected frame), then
//	                              "event: <event name>", "data: <envelope>"
//	GET  {base}/pushes/poll       the same as a long poll:
//	                              {"messages":[<envelope>…],"lastEventId":…}
//	POST {base}/acks              {"envelopeId":…,"result":…}: the caller
//	                              acks a push it received that way
//
// Both take ?channels= (comma-separated, patterns allowed, authorized like
// a channel stream: all or nothing, 403) and ?filters= (a JSON array of
// the WebSocket's filters, applied to user pushes and channel pushes
// alike). Each stream or poll is a push target (targets.go) with a conn
// of the existing transports (the SSE transport, the poll transport):
// Notify reaches, counts and awaits it like a WebSocket (its acks come by
// POST /acks, acks.go), it holds a slot under WSMaxConnsPerUser and
// WSMaxConnsPerTenant, and a stream (not a poll) counts in presence.
//
// Resume follows the channel stream's rule: with exactly one concrete
// channel, Last-Event-ID (else ?lastEventId=) resumes it from its buffer,
// or brings that channel's resync frame. Only channel pushes carry an SSE
// id line (a push to users is in no buffer), so an EventSource's
// Last-Event-ID is always its last channel push. A poll answers the
// position to send back as lastEventId.

// pushQuery is what a pushes stream or poll asks for.
type pushQuery struct {
	channels []string // channel patterns, authorized (none: user pushes and broadcasts only)
	filters  []pushFilter
	resume   string // the one concrete channel, whose buffer a resume point names
	lastID   string // the resume point
}

// pushQuery reads and authorizes the query of a pushes stream or poll.
func (p *Plugin) pushQuery(c *gin.Context, ident *Identity) (pushQuery, error) {
	var q pushQuery
	if vals := c.QueryArray("channels"); strings.TrimSpace(strings.Join(vals, "")) != "" {
		chs, err := parseChannelList(vals, p.cfg.WSMaxChannels)
		if err != nil {
			return q, err
		}
		q.channels = chs
	}
	if f := c.Query("filters"); f != "" {
		var raw []json.RawMessage
		if err := json.Unmarshal([]byte(f), &raw); err != nil {
			return q, badRequest(`filters must be a JSON array of filter objects`)
		}
		fs, err := parseFilters(raw)
		if err != nil {
			return q, err
		}
		q.filters = fs
	}
	ctx := c.Request.Context()
	for _, ch := range q.channels {
		if err := p.access.channelOp(ctx, ident, ch, ChannelOpSubscribe); err != nil {
			return q, fmt.Errorf("pushes: %w", err)
		}
	}
	if len(q.channels) == 1 && validChannel(q.channels[0], false) == nil {
		q.resume = q.channels[0]
		var err error
		if q.lastID, err = resumePoint(c); err != nil {
			return q, err
		}
	}
	return q, nil
}

// resumePoint is a request's Last-Event-ID header, else its lastEventId
// query parameter.
func resumePoint(c *gin.Context) (string, error) {
	id := c.GetHeader("Last-Event-ID")
	if id == "" {
		id = c.Query("lastEventId")
	}
	if strings.ContainsAny(id, "\r\n\x00") || len(id) > 512 {
		return "", badRequest("invalid Last-Event-ID")
	}
	return id, nil
}

// newPushTarget is the target of a pushes stream (present) or poll.
func newPushTarget(ident *Identity, c *conn, filters []pushFilter, present bool) *target {
	return &target{id: uuid.NewString(), ident: ident, c: c,
		filters: filters, all: true, acks: true, httpAcks: true, present: present}
}

// reservePushSlot takes a connection slot for ident; on failure it has
// answered (429 too_many_connections, 503).
func (p *Plugin) reservePushSlot(c *gin.Context, k userKey) bool {
	err := p.pushes.reg.reserve(k, p.cfg.WSMaxConnsPerUser, p.cfg.WSMaxConnsPerTenant, nil)
	switch {
	case err == nil:
		return true
	case errors.Is(err, ErrTooManyConnections):
		writeErrorCode(c, http.StatusTooManyRequests, "too_many_connections", "too many connections")
	default:
		writeError(c, fmt.Errorf("pushes: %w", err))
	}
	return false
}

// connectedFrame is the first message of a WebSocket and of a pushes
// stream: the connection is registered for pushes.
type connectedFrame struct {
	Type         string `json:"type"`
	ConnectionID string `json:"connectionId"`
	User         string `json:"user"`
	Tenant       string `json:"tenant"`
}

func connectedJSON(id string, ident *Identity) []byte {
	b, _ := json.Marshal(connectedFrame{Type: "connected", ConnectionID: id, User: ident.User, Tenant: ident.Tenant})
	return b
}

// handlePushSubscribe serves GET {base}/pushes/subscribe.
func (p *Plugin) handlePushSubscribe(c *gin.Context) {
	ident, ok := p.identify(c)
	if !ok {
		return
	}
	q, err := p.pushQuery(c, ident)
	if err != nil {
		writeError(c, err)
		return
	}
	k := userKey{tenant: ident.Tenant, user: ident.User}
	if !p.reservePushSlot(c, k) {
		return
	}
	st := p.newSSEStream(c, ident)
	st.c.kind = kindSSEPushes
	t := newPushTarget(ident, st.c, q.filters, true)
	if err := p.admit(c, st.c); err != nil {
		p.pushes.reg.release(k)
		writeError(c, fmt.Errorf("pushes: %w", err))
		return
	}
	hold := q.lastID != ""
	if hold {
		t.holdChannels([]string{q.resume}) // its live pushes wait for its replay
	}
	connected := &Event{Type: "connected", Data: connectedJSON(t.id, ident)}
	if !p.pushes.open(t, q.channels, func() { st.c.send(out{ev: connected}) }) {
		p.untrack(st.c)
		p.pushes.reg.release(k)
		writeError(c, fmt.Errorf("pushes: %w", ErrClosed))
		return
	}
	var r replay
	if hold {
		r = p.pushes.readReplay(c.Request.Context(), t, q.resume, q.lastID, q.filters)
	}
	st.onEnd = func() { p.pushes.close(t, true) }
	st.serve(c, func() {
		if hold {
			t.release(r)
		}
	})
}

// pushPollResponse is a pushes poll's answer: the envelopes (and channel
// resync frames) in order, and the resume point of its one concrete
// channel.
type pushPollResponse struct {
	Messages    []json.RawMessage `json:"messages"`
	LastEventID string            `json:"lastEventId,omitempty"`
}

// handlePushPoll serves GET {base}/pushes/poll: it answers as soon as
// something is queued for it, or after ?timeout= seconds.
func (p *Plugin) handlePushPoll(c *gin.Context) {
	ident, ok := p.identify(c)
	if !ok {
		return
	}
	q, err := p.pushQuery(c, ident)
	if err != nil {
		writeError(c, err)
		return
	}
	wait, err := p.pollWait(c)
	if err != nil {
		writeError(c, err)
		return
	}
	k := userKey{tenant: ident.Tenant, user: ident.User}
	if !p.reservePushSlot(c, k) {
		return
	}
	pt := &pollTransport{lastID: q.lastID}
	pc := newConn(pt, p.pool, p.cfg.QueueSize, true)
	pc.ident = ident
	pc.kind = kindPoll
	t := newPushTarget(ident, pc, q.filters, false)
	if err := p.admit(c, pc); err != nil {
		p.pushes.reg.release(k)
		writeError(c, fmt.Errorf("pushes poll: %w", err))
		return
	}
	hold := q.lastID != ""
	if hold {
		t.holdChannels([]string{q.resume})
	}
	if !p.pushes.open(t, q.channels, nil) {
		p.untrack(pc)
		p.pushes.reg.release(k)
		writeError(c, fmt.Errorf("pushes poll: %w", ErrClosed))
		return
	}
	if hold {
		t.release(p.pushes.readReplay(c.Request.Context(), t, q.resume, q.lastID, q.filters))
	}
	pc.setReady()
	timer := time.NewTimer(wait)
	select {
	case <-pc.wake:
	case <-pc.done:
	case <-timer.C:
	case <-c.Request.Context().Done():
	}
	timer.Stop()
	// Ended first: a push queued from now on is refused (and not counted
	// as delivered); what was queued before is answered.
	pc.end()
	pc.drain(false)
	pc.close(errClientGone)
	p.pushes.close(t, true)
	p.untrack(pc)
	if pc.pastDeadline(time.Now().UnixNano()) {
		writeError(c, fmt.Errorf("pushes poll: %w: token expired", ErrUnauthorized))
		return
	}
	resp := pushPollResponse{Messages: pt.messages}
	if resp.Messages == nil {
		resp.Messages = []json.RawMessage{}
	}
	if q.resume != "" {
		resp.LastEventID = pt.lastID
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, resp)
}

// ackRequest is the body of POST {base}/acks.
type ackRequest struct {
	EnvelopeID string          `json:"envelopeId"`
	Result     json.RawMessage `json:"result"`
}

// handleAck serves POST {base}/acks: the caller acks a push it received
// over a pushes stream or poll (204).
func (p *Plugin) handleAck(c *gin.Context) {
	ident, ok := p.identify(c)
	if !ok {
		return
	}
	var req ackRequest
	if !p.decodeBody(c, "ack", &req) {
		return
	}
	if req.EnvelopeID == "" || len(req.EnvelopeID) > 512 {
		writeError(c, badRequest("envelopeId is required"))
		return
	}
	if err := p.acks.receiveHTTP(c.Request.Context(), req.EnvelopeID, ident.Tenant, ident.User, req.Result); err != nil {
		p.logFailure("ack", err)
		writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
