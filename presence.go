package realtime

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
)

// Presence returns the users of tenant with at least one open WebSocket
// (sorted) and the tenant's number of open WebSockets: on every node when
// the Broker keeps presence (PresenceStore), else on this node. An empty
// tenant means the tenant of ctx (WithTenant), else DefaultTenant. The
// error wraps ErrUnavailable when the broker cannot be reached.
func (p *Plugin) Presence(ctx context.Context, tenant string) (users []string, conns int, err error) {
	if tenant == "" {
		tenant = TenantFrom(ctx)
	}
	if cl := p.cluster; cl != nil && cl.ps != nil {
		users, conns, err = cl.ps.Presence(ctx, tenant)
		if err != nil {
			return nil, 0, fmt.Errorf("realtime: presence: %w: %w", ErrUnavailable, err)
		}
		if users == nil {
			users = []string{}
		}
		return users, conns, nil
	}
	users, conns = p.ws.reg.presence(tenant)
	return users, conns, nil
}

// UserPresence reports whether user of tenant has an open WebSocket, and
// how many (on every node, as Presence).
func (p *Plugin) UserPresence(ctx context.Context, tenant, user string) (online bool, conns int, err error) {
	if tenant == "" {
		tenant = TenantFrom(ctx)
	}
	if cl := p.cluster; cl != nil && cl.ps != nil {
		n, err := cl.ps.UserPresence(ctx, tenant, user)
		if err != nil {
			return false, 0, fmt.Errorf("realtime: presence: %w: %w", ErrUnavailable, err)
		}
		return n > 0, n, nil
	}
	n := p.ws.reg.userConns(userKey{tenant: tenant, user: user})
	return n > 0, n, nil
}

// publisher authenticates c and requires the publish scope; on failure it
// has answered.
func (p *Plugin) publisher(c *gin.Context, op string) (*Identity, bool) {
	ident, ok := p.identify(c)
	if !ok {
		return nil, false
	}
	if !ident.HasScope(ScopePublish) {
		writeError(c, fmt.Errorf("%s: %w: publish scope required", op, ErrForbidden))
		return nil, false
	}
	return ident, true
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
