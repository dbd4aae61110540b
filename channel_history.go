package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/gin-gonic/gin"
)

// channelCollection is the collection name of the channel streams in the
// Buffer: no app collection can have it (validName refuses NUL), so a
// channel's history never mixes with a record's.
const channelCollection = "\x00channel"

// channelKey is the Buffer stream of a concrete channel of a tenant.
func channelKey(tenant, channel string) StreamKey {
	return StreamKey{Tenant: tenant, Collection: channelCollection, ID: channel}
}

// Channel operations seen by a ChannelAuthorizer (ChannelAccess.Op).
const (
	// ChannelOpSubscribe: a WebSocket subscribe or an SSE channel stream.
	ChannelOpSubscribe = "subscribe"
	// ChannelOpHistory: GET {base}/channels/:channel/history.
	ChannelOpHistory = "history"
)

// ChannelAccess is what a ChannelAuthorizer decides on.
type ChannelAccess struct {
	// Identity is the client's verified token.
	Identity *Identity
	// Channel is the channel name, or the pattern when Pattern is set.
	Channel string
	// Pattern reports that Channel contains "*" or ">" segments: it
	// stands for every channel it matches.
	Pattern bool
	// Op is ChannelOpSubscribe or ChannelOpHistory.
	Op string
}

// ChannelAuthorizer decides whether an identity may subscribe to a channel
// (or pattern) or read its history: nil allows, ErrForbidden refuses (403,
// or a forbidden error frame on a WebSocket). Channels are always confined
// to the token's tenant; the authorizer adds the app's own rules, e.g.
// "user.<x> only for the user x".
//
// It sees patterns as the client sent them: it must refuse a pattern that
// would reach a channel the identity may not read ("user.*", "*.123",
// "user.>", ">" for a rule about user.<x> channels). It is called on
// handler and WebSocket inbox goroutines: it must be safe for concurrent
// use and should not block.
type ChannelAuthorizer func(ctx context.Context, a ChannelAccess) error

// authorizeChannel checks one channel or pattern with Config.AuthorizeChannel.
func (p *Plugin) authorizeChannel(ctx context.Context, ident *Identity, name, op string) error {
	auth := p.cfg.AuthorizeChannel
	if auth == nil {
		return nil
	}
	pattern := validChannel(name, false) != nil // valid as a pattern, not as a channel
	if err := auth(ctx, ChannelAccess{Identity: ident, Channel: name, Pattern: pattern, Op: op}); err != nil {
		return fmt.Errorf("channel %s: %w", name, err)
	}
	return nil
}

// pushTargeting is a channel push's targeting, kept with it in the buffer
// (Event.Prior, never sent) so that replay and history show a message only
// to the users it was pushed to.
type pushTargeting struct {
	Users   []string `json:"u,omitempty"`
	Exclude []string `json:"x,omitempty"`
}

// targetingJSON encodes a push's targeting; nil when it targets everyone.
func targetingJSON(users, exclude []string) json.RawMessage {
	if len(users) == 0 && len(exclude) == 0 {
		return nil
	}
	b, _ := json.Marshal(pushTargeting{Users: users, Exclude: exclude})
	return b
}

// targets reports whether a buffered push (its Event.Prior) was meant for user.
func targetsUser(prior json.RawMessage, user string) bool {
	if len(prior) == 0 {
		return true
	}
	var t pushTargeting
	if json.Unmarshal(prior, &t) != nil {
		return false
	}
	if slices.Contains(t.Exclude, user) {
		return false
	}
	return len(t.Users) == 0 || slices.Contains(t.Users, user)
}

// RecentReader is the optional ability of a Buffer (checked by type
// assertion) to return a stream's newest entries. Channel history needs
// it: without it ChannelHistory answers ErrUnavailable.
type RecentReader interface {
	// Recent returns key's newest n entries still kept (bounded by the
	// buffer's size and age like Since), oldest first; none for an
	// unknown stream.
	Recent(ctx context.Context, key StreamKey, n int) ([]Entry, error)
}

var _ RecentReader = (*MemoryBuffer)(nil)

// Recent implements RecentReader.
func (b *MemoryBuffer) Recent(_ context.Context, key StreamKey, n int) ([]Entry, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.streams[key]
	if s == nil || n <= 0 {
		return nil, nil
	}
	b.lru.MoveToFront(s.elem)
	b.trim(s)
	es := s.entries
	if len(es) > n {
		es = es[len(es)-n:]
	}
	return append([]Entry(nil), es...), nil
}

// Recent implements RecentReader.
func (n *memoryNode) Recent(ctx context.Context, key StreamKey, k int) ([]Entry, error) {
	n.m.mu.Lock()
	err := n.unavailable("recent")
	n.m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return n.m.buf.Recent(ctx, key, k)
}

// ChannelHistory returns the newest (at most limit; 0 or less: BufferSize)
// messages pushed to a concrete channel of tenant and still buffered,
// oldest first: each the envelope exactly as it was sent on the WebSocket
// ({"type":"message","envelopeId":…,"channel":…,"event":…,"data":…,
// "timestamp":…}). It returns every message whatever its users or
// excludeUsers; ChannelHistoryFor returns those a given identity may see.
// Errors wrap ErrBadRequest (not a concrete channel), ErrUnavailable (the
// buffer cannot be read or cannot list recent entries) or ErrClosed.
func (p *Plugin) ChannelHistory(ctx context.Context, tenant, channel string, limit int) ([]json.RawMessage, error) {
	msgs, err := p.channelHistory(ctx, tenant, channel, "", limit)
	if err != nil {
		return nil, fmt.Errorf("realtime: channel history: %w", err)
	}
	return msgs, nil
}

// ChannelHistoryFor is ChannelHistory as GET {base}/channels/:channel/history
// serves it to ident: in ident's tenant, checked with
// Config.AuthorizeChannel (op "history"; ErrForbidden), and only the
// messages whose targeting includes ident.User.
func (p *Plugin) ChannelHistoryFor(ctx context.Context, ident *Identity, channel string, limit int) ([]json.RawMessage, error) {
	if ident == nil {
		return nil, fmt.Errorf("realtime: channel history: %w: no identity", ErrUnauthorized)
	}
	if err := validChannel(channel, false); err != nil {
		return nil, fmt.Errorf("realtime: channel history: %w", err)
	}
	if err := p.authorizeChannel(ctx, ident, channel, ChannelOpHistory); err != nil {
		return nil, fmt.Errorf("realtime: channel history: %w", err)
	}
	msgs, err := p.channelHistory(ctx, ident.Tenant, channel, ident.User, limit)
	if err != nil {
		return nil, fmt.Errorf("realtime: channel history: %w", err)
	}
	return msgs, nil
}

// channelHistory reads the channel's buffer; user "" sees every message.
func (p *Plugin) channelHistory(ctx context.Context, tenant, channel, user string, limit int) ([]json.RawMessage, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	if err := validChannel(channel, false); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > p.cfg.BufferSize {
		limit = p.cfg.BufferSize
	}
	rr, ok := p.cfg.Buffer.(RecentReader)
	if !ok {
		return nil, fmt.Errorf("%w: the buffer cannot list recent entries (RecentReader)", ErrUnavailable)
	}
	// The whole buffer, then the caller's messages: limit counts what the
	// caller sees.
	es, err := rr.Recent(ctx, channelKey(tenant, channel), p.cfg.BufferSize)
	if err != nil {
		return nil, fmt.Errorf("buffer: %w: %w", ErrUnavailable, err)
	}
	out := make([]json.RawMessage, 0, min(len(es), limit))
	for i := len(es) - 1; i >= 0 && len(out) < limit; i-- {
		ev := es[i].Event
		if ev == nil || (user != "" && !targetsUser(ev.Prior, user)) {
			continue
		}
		out = append(out, ev.Data)
	}
	slices.Reverse(out)
	return out, nil
}

// channelHistoryAnswer is the body of GET {base}/channels/:channel/history.
type channelHistoryAnswer struct {
	Channel  string            `json:"channel"`
	Messages []json.RawMessage `json:"messages"`
}

// handleChannelHistory serves GET {base}/channels/:channel/history?limit=<n>.
func (p *Plugin) handleChannelHistory(c *gin.Context) {
	ident, ok := p.identify(c)
	if !ok {
		return
	}
	limit := 100
	if s := c.Query("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeError(c, badRequest("limit must be a positive integer"))
			return
		}
		limit = n
	}
	limit = min(limit, p.cfg.BufferSize)
	ch := c.Param("channel")
	msgs, err := p.ChannelHistoryFor(c.Request.Context(), ident, ch, limit)
	if err != nil {
		p.logFailure("channel history", err)
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, channelHistoryAnswer{Channel: ch, Messages: msgs})
}
