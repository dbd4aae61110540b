package realtime

// Publishing from the browser (PROTOCOL.md §6, issue 14):
// {"type":"publish","channel":…,"event":…,"data":…} on a WebSocket. It is
// refused (error frame forbidden) unless the app enabled it
// (Config.ClientPublish) and its AuthorizeChannel allows ChannelOpPublish
// on that concrete channel of the connection's tenant. An allowed publish
// is a Notify to the channel — the one path of every push: kept in the
// channel's history, delivered on every node to the channel's subscribers
// (WebSockets, channel and pushes streams), the envelope carrying
// "from":"<sub>" — answered {"type":"published","envelopeId":…,
// "channel":…}. Like every client message it passed the connection's rate
// limit and the frame size limit; event defaults to "message".

type wsPublished struct {
	Type       string `json:"type"`
	EnvelopeID string `json:"envelopeId"`
	Channel    string `json:"channel"`
}

// handlePublish serves a publish message.
func (c *wsConn) handlePublish(m *wsIn) {
	p := c.ws.p
	refuse := func(err error) {
		_, code, msg := statusOf(err)
		c.sendJSON(wsChannelError{Type: "error", Code: code, Channel: m.Channel, Message: msg})
	}
	if err := validChannel(m.Channel, false); err != nil {
		refuse(err)
		return
	}
	if err := p.access.publish(p.baseCtx, c.ident, m.Channel); err != nil {
		refuse(err)
		return
	}
	res, err := p.Notify(p.baseCtx, Notification{
		Tenant: c.ident.Tenant, Channel: m.Channel, Event: m.Event, Data: m.Data, From: c.ident.User,
	})
	if err != nil {
		p.logFailure("websocket publish", err)
		refuse(err)
		return
	}
	c.sendJSON(wsPublished{Type: "published", EnvelopeID: res.EnvelopeID, Channel: m.Channel})
}
