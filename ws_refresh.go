package realtime

import "time"

// Session refresh (PROTOCOL.md §6): {"type":"refresh","token":"…"} moves
// a WebSocket to a fresh token without reconnecting. The token is verified
// as any credential (VerifyToken: the plugin's one verification, whatever
// the app configured), must name the connection's user and tenant, and its
// expiry becomes the connection's (the expiry heap and the writer's check
// read it: expiry.go). The answer is {"type":"refreshed","exp":<unix s>};
// a token that fails is an unauthorized error frame, one of another
// identity a forbidden one, and the connection keeps its old expiry. The
// identity's other claims (scopes) stay those the connection opened with.
// A refresh that comes after the old expiry (exp + leeway) is refused: the
// connection is closing. Tokens are never logged.

type wsRefreshed struct {
	Type string `json:"type"`
	Exp  int64  `json:"exp,omitempty"`
}

// handleRefresh serves a refresh message.
func (c *wsConn) handleRefresh(m *wsIn) {
	p := c.ws.p
	if c.c.pastDeadline(time.Now().UnixNano()) {
		c.sendJSON(wsError{Type: "error", Code: "unauthorized", Message: "the connection's token has expired"})
		return
	}
	id, err := p.VerifyToken(m.Token)
	if err != nil {
		_, code, msg := statusOf(err)
		c.sendJSON(wsError{Type: "error", Code: code, Message: msg})
		return
	}
	if id.User != c.ident.User || id.Tenant != c.ident.Tenant {
		c.sendJSON(wsError{Type: "error", Code: "forbidden", Message: "the token names another user or tenant"})
		return
	}
	p.expiry.update(c.c, deadlineOf(id, p.cfg.JWTLeeway))
	r := wsRefreshed{Type: "refreshed"}
	if !id.Expires.IsZero() {
		r.Exp = id.Expires.Unix()
	}
	c.sendJSON(r)
}
