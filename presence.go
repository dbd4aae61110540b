package realtime

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// Presence returns the users of tenant with at least one open WebSocket or
// pushes stream (sorted) and the tenant's number of them: on every node when
// the Broker keeps presence (PresenceStore), else on this node. An empty
// tenant means the tenant of ctx (WithTenant), else DefaultTenant. The
// error wraps ErrUnavailable when the broker cannot be reached.
func (p *Plugin) Presence(ctx context.Context, tenant string) (users []string, conns int, err error) {
	if tenant == "" {
		tenant = TenantFrom(ctx)
	}
	if ps := p.node.ps; ps != nil {
		users, conns, err = ps.Presence(ctx, tenant)
		if err != nil {
			return nil, 0, fmt.Errorf("realtime: presence: %w: %w", ErrUnavailable, err)
		}
		if users == nil {
			users = []string{}
		}
		return users, conns, nil
	}
	users, conns = p.pushes.reg.local(tenant)
	return users, conns, nil
}

// UserPresence reports whether user of tenant has an open WebSocket or
// pushes stream, and how many (on every node, as Presence).
func (p *Plugin) UserPresence(ctx context.Context, tenant, user string) (online bool, conns int, err error) {
	if tenant == "" {
		tenant = TenantFrom(ctx)
	}
	if ps := p.node.ps; ps != nil {
		n, err := ps.UserPresence(ctx, tenant, user)
		if err != nil {
			return false, 0, fmt.Errorf("realtime: presence: %w: %w", ErrUnavailable, err)
		}
		return n > 0, n, nil
	}
	n := 0
	for _, t := range p.pushes.reg.socketsNow() {
		if t.ident.Tenant == tenant && t.ident.User == user {
			n++
		}
	}
	return n > 0, n, nil
}

// Presence is kept in the broker (PresenceStore): a WebSocket or pushes
// stream is recorded when it opens, renewed every presenceTTL/3 by the
// heartbeat loop, and removed when it closes; a node that dies is
// forgotten after presenceTTL. A broker without a PresenceStore counts
// this node's connections only.

// present records a WebSocket's presence (on its handler goroutine,
// before its connected frame).
func (n *node) present(t *target) {
	if n.ps == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.ps.AddPresence(ctx, presenceTTL, PresenceConn{Tenant: t.ident.Tenant, User: t.ident.User, ConnID: t.id}); err != nil {
		n.p.log.Warn("realtime: presence not recorded", "err", err)
	}
}

// absent removes a WebSocket's presence, off the caller's goroutine.
func (n *node) absent(t *target) {
	if n.ps == nil {
		return
	}
	pc := PresenceConn{Tenant: t.ident.Tenant, User: t.ident.User, ConnID: t.id}
	n.async(func(ctx context.Context) { _ = n.ps.RemovePresence(ctx, pc) })
}

// refreshPresence renews the presence of every open WebSocket of this node
// (from the heartbeat loop, every presenceTTL/3).
func (n *node) refreshPresence(sockets []*target) {
	if n.ps == nil || len(sockets) == 0 {
		return
	}
	pcs := make([]PresenceConn, len(sockets))
	for i, t := range sockets {
		pcs[i] = PresenceConn{Tenant: t.ident.Tenant, User: t.ident.User, ConnID: t.id}
	}
	n.async(func(ctx context.Context) {
		if err := n.ps.AddPresence(ctx, presenceTTL, pcs...); err != nil {
			n.p.log.Warn("realtime: presence not refreshed", "err", err)
		}
	})
}

// handlePresence serves GET {base}/presence (publish scope).
func (p *Plugin) handlePresence(c *gin.Context) {
	ident, ok := p.publisher(c, "presence")
	if !ok {
		return
	}
	users, n, err := p.Presence(c.Request.Context(), ident.Tenant)
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"tenant": ident.Tenant, "users": users, "connections": n})
}

// handleUserPresence serves GET {base}/presence/:user (publish scope).
func (p *Plugin) handleUserPresence(c *gin.Context) {
	ident, ok := p.publisher(c, "presence")
	if !ok {
		return
	}
	user := c.Param("user")
	online, n, err := p.UserPresence(c.Request.Context(), ident.Tenant, user)
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"user": user, "online": online, "connections": n})
}
