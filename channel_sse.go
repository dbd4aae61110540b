package realtime

import (
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
// The stream is a push target (targets.go), like a WebSocket but without
// presence, slot or acks, whose conn is an SSE stream (sse.go).
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
		if err := p.access.channelOp(ctx, ident, ch, ChannelOpSubscribe); err != nil {
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
		if lastID, err = resumePoint(c); err != nil {
			writeError(c, err)
			return
		}
	}

	st := p.newSSEStream(c, ident)
	st.c.kind = kindSSEChannel
	t := &target{id: uuid.NewString(), ident: ident, c: st.c}
	if err := p.admit(c, st.c); err != nil {
		writeError(c, fmt.Errorf("channel subscribe: %w", err))
		return
	}
	var hold []string
	if lastID != "" {
		hold = []string{resumeCh}
		t.holdChannels(hold) // its live pushes wait for its replay
	}
	if !p.pushes.open(t, channels, nil) {
		p.untrack(st.c)
		writeError(c, fmt.Errorf("channel subscribe: %w", ErrClosed))
		return
	}
	var r replay
	if hold != nil {
		r = p.pushes.readReplay(c.Request.Context(), t, resumeCh, lastID, nil)
	}
	st.onEnd = func() { p.pushes.close(t, false) }
	st.serve(c, func() {
		if hold != nil {
			t.release(r)
		}
	})
}
