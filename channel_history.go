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
	if err := p.access.channelOp(ctx, ident, channel, ChannelOpHistory); err != nil {
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
