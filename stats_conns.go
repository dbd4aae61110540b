package realtime

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Connection lifecycle: the open connections' gauges (by transport and by
// tenant), the disconnects by reason, and their logs (Debug when a
// connection opens and closes, Warn when a slow one is disconnected).
// Counted once per connection, in Plugin.track and untrack.

// endReason is why a connection ended (DisconnectStats).
type endReason uint8

const (
	endUnknown endReason = iota // not decided before it closed: see endReasonOf
	endSlow
	endExpired
	endRevoked
	endClosed
	endError
	numEndReasons
)

var endNames = [numEndReasons]string{"unknown", "slow", "expired", "revoked", "closed", "error"}

// markEnd records why c is about to end, when the cause it closes with
// will not tell (an expired token and a revoked stream both end cleanly);
// the first reason wins.
func (c *conn) markEnd(why endReason) {
	c.mu.Lock()
	if c.why == endUnknown {
		c.why = why
	}
	c.mu.Unlock()
}

// endReporter is a transport that knows why its conn ended (a WebSocket's
// close code).
type endReporter interface {
	// endReason is called with c.mu held.
	endReason(c *conn) endReason
}

// endReason implements endReporter: the close code the WebSocket sent.
func (t *wsTransport) endReason(*conn) endReason {
	switch t.code {
	case closeTryAgainLater:
		return endSlow
	case closePolicyViolation:
		return endExpired
	}
	return endUnknown
}

// endReasonOf is why c (closed) ended.
func endReasonOf(c *conn) endReason {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.why != endUnknown {
		return c.why
	}
	if r, ok := c.t.(endReporter); ok {
		if why := r.endReason(c); why != endUnknown {
			return why
		}
	}
	switch {
	case errors.Is(c.cause, ErrSlowSubscriber):
		return endSlow
	case c.cause == nil, errors.Is(c.cause, ErrClosed), errors.Is(c.cause, errClientGone):
		return endClosed
	}
	return endError
}

// monoEpoch is the origin of conn.opened.
var monoEpoch = time.Now()

// connOpened counts c (tracked) among the open connections and logs it.
func (p *Plugin) connOpened(c *conn) {
	st := p.stats
	st.connMu.Lock()
	c.opened = int64(time.Since(monoEpoch))
	st.open[c.kind]++
	tenant := tenantOf(c)
	n := st.tenants[tenant]
	if n == nil {
		n = new([numKinds]uint64)
		st.tenants[tenant] = n
	}
	n[c.kind]++
	st.connMu.Unlock()
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		p.log.LogAttrs(context.Background(), slog.LevelDebug, "realtime: connection opened", connAttrs(c)...)
	}
}

// connClosed counts c's end (untracked, closed) and logs it.
func (p *Plugin) connClosed(c *conn) {
	why := endReasonOf(c)
	st := p.stats
	st.connMu.Lock()
	st.open[c.kind]--
	tenant := tenantOf(c)
	if n := st.tenants[tenant]; n != nil {
		n[c.kind]--
		if *n == ([numKinds]uint64{}) {
			delete(st.tenants, tenant)
		}
	}
	dur := time.Since(monoEpoch) - time.Duration(c.opened)
	st.connMu.Unlock()
	if c.kind != kindPoll { // a poll answering is not a disconnect
		st.disconnects[why][c.kind].Add(1)
	}
	level := slog.LevelDebug
	msg := "realtime: connection closed"
	if why == endSlow {
		level, msg = slog.LevelWarn, "realtime: slow subscriber disconnected; it resumes on reconnect"
	}
	ctx := context.Background()
	if !p.log.Enabled(ctx, level) {
		return
	}
	attrs := append(connAttrs(c),
		slog.String("reason", endNames[why]),
		slog.Duration("duration", dur),
		slog.Uint64("frames", c.frames.Load()))
	p.log.LogAttrs(ctx, level, msg, attrs...)
}

// tenantOf is c's tenant ("" without an identity).
func tenantOf(c *conn) string {
	if c.ident == nil {
		return ""
	}
	return c.ident.Tenant
}

// connAttrs are the log attributes naming c: transport, tenant, user, and
// the collection and id of a record or collection stream. Never a token.
func connAttrs(c *conn) []slog.Attr {
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs, slog.String("transport", kindNames[c.kind]))
	if c.ident != nil {
		attrs = append(attrs, slog.String("tenant", c.ident.Tenant), slog.String("user", c.ident.User))
	}
	if c.key != nil {
		attrs = append(attrs, slog.String("collection", c.key.Collection))
		if c.key.ID != "" {
			attrs = append(attrs, slog.String("id", c.key.ID))
		}
	}
	return attrs
}

// kindOfKey is the transport of an SSE stream of key.
func kindOfKey(key StreamKey) connKind {
	if key.ID == "" {
		return kindSSECollection
	}
	return kindSSERecord
}
