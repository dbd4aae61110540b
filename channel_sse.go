package realtime

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
)

// parseChannelList splits the channels query of GET
// {base}/channels/subscribe (comma-separated, several channels parameters
// allowed) into distinct validated patterns, at most max.
func parseChannelList(values []string, max int) ([]string, error) {
	var out []string
	seen := make(map[string]bool)
	for _, v := range values {
		for _, ch := range strings.Split(v, ",") {
			ch = strings.TrimSpace(ch)
			if err := validChannel(ch, true); err != nil {
				return nil, err
			}
			if seen[ch] {
				continue
			}
			seen[ch] = true
			out = append(out, ch)
			if len(out) > max {
				return nil, badRequest("too many channels")
			}
		}
	}
	if len(out) == 0 {
		return nil, badRequest("channels is required")
	}
	return out, nil
}

// handleChannelSubscribe serves GET {base}/channels/subscribe?channels=…:
// an SSE stream of the pushes to the channels (patterns allowed), each
// frame "event: <event name>", "id: <envelopeId>", "data: <envelope>".
// With exactly one concrete channel, Last-Event-ID (else the lastEventId
// query parameter) resumes it from its buffer, or sends "event: resync"
// with data {"channel":…,"reason":"buffer-miss"}; otherwise it is ignored.
//
// The stream is a subscriber of the SSE machinery (writer pool or
// handler, heartbeats, bounded queue, Close) and a push target in the
// WebSocket registry, indexed by (tenant, user) and by its patterns like
// a WebSocket, without presence, slot or acks.
func (p *Plugin) handleChannelSubscribe(c *gin.Context) {
	ident, ok := p.identify(c)
	if !ok {
		return
	}
	channels, err := parseChannelList(c.QueryArray("channels"), p.cfg.WSMaxChannels)
	if err != nil {
		writeError(c, err)
		return
	}
	ctx := c.Request.Context()
	for _, ch := range channels {
		if err := p.authorizeChannel(ctx, ident, ch, ChannelOpSubscribe); err != nil {
			writeError(c, fmt.Errorf("channel subscribe: %w", err))
			return
		}
	}
	resumeCh := ""
	if len(channels) == 1 && validChannel(channels[0], false) == nil {
		resumeCh = channels[0]
	}
	lastID := ""
	if resumeCh != "" {
		if lastID = c.GetHeader("Last-Event-ID"); lastID == "" {
			lastID = c.Query("lastEventId")
		}
		if strings.ContainsAny(lastID, "\r\n\x00") || len(lastID) > 512 {
			writeError(c, badRequest("invalid Last-Event-ID"))
			return
		}
	}

	hijack := !p.cfg.DisableHijack && c.Request.ProtoMajor == 1
	t := viaHandler
	if hijack {
		t = viaPool
	}
	s := newSubscriber(p, channelKey(ident.Tenant, resumeCh), ident, t)
	target := &wsConn{id: uuid.NewString(), tenant: ident.Tenant, user: ident.User, ws: p.ws, ident: ident,
		stream: s, streamSeq: resumeCh != ""}
	s.stream = target
	if !p.track(s) {
		writeError(c, fmt.Errorf("channel subscribe: %w", ErrClosed))
		return
	}
	if p.cluster != nil {
		p.cluster.streamOpened(ident.Tenant, ident.User) // before it reads its replay: no gap
		target.clustered = true
	}
	if !p.ws.reg.addStream(target, channels) {
		if target.clustered {
			p.cluster.streamClosed(ident.Tenant, ident.User)
		}
		p.untrack(s)
		writeError(c, fmt.Errorf("channel subscribe: %w", ErrClosed))
		return
	}
	// Registered and holding (newSubscriber): live pushes wait in held
	// until release, which drops those at or below base.
	var (
		first []item
		base  uint64
	)
	if lastID != "" {
		first, base = p.channelStreamReplay(ident, resumeCh, lastID)
	}
	if hijack {
		if p.serveHijacked(c, s, first, base, "") {
			return
		}
		s.transport = viaHandler
		s.wake = make(chan struct{}, 1)
	}
	p.serveOnHandler(c, s, first, base, "")
}

// channelStreamReplay is the first frames of a channel stream resuming
// from lastID: the buffered pushes after it that ident may see, or a
// resync frame.
func (p *Plugin) channelStreamReplay(ident *Identity, ch, lastID string) ([]item, uint64) {
	lk, err := p.cfg.Buffer.Since(p.baseCtx, channelKey(ident.Tenant, ch), lastID)
	if err != nil {
		p.log.Warn("realtime: channel buffer unavailable, resyncing the stream", "err", err)
		lk.Status = LookupUnknown
	}
	switch lk.Status {
	case LookupUpToDate:
		return nil, lk.Seq
	case LookupFound:
		var first []item
		base := lk.Seq
		for _, e := range lk.Events {
			base = max(base, e.Seq)
			if e.Event != nil && targetsUser(e.Event.Prior, ident.User) {
				first = append(first, item{ev: e.Event, seq: e.Seq})
			}
		}
		return first, base
	}
	data, _ := json.Marshal(struct {
		Channel string `json:"channel"`
		Reason  string `json:"reason"`
	}{ch, "buffer-miss"})
	return []item{{ev: &Event{Type: EventResync, Data: data}}}, 0
}

// dropChannelStream unregisters an SSE channel stream's push target, once
// (from detach).
func (p *Plugin) dropChannelStream(target *wsConn) {
	if p.ws.reg.removeStream(target) && target.clustered {
		p.cluster.streamClosed(target.tenant, target.user)
	}
}
