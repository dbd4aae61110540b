package realtime

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
)

// Presence returns the users of tenant with at least one open WebSocket on
// this node (sorted) and the tenant's number of open WebSockets. An empty
// tenant means the tenant of ctx (WithTenant), else DefaultTenant.
func (p *Plugin) Presence(ctx context.Context, tenant string) (users []string, conns int) {
	if tenant == "" {
		tenant = TenantFrom(ctx)
	}
	return p.ws.reg.presence(tenant)
}

// UserPresence reports whether user of tenant has an open WebSocket on this
// node, and how many. An empty tenant means the tenant of ctx.
func (p *Plugin) UserPresence(ctx context.Context, tenant, user string) (online bool, conns int) {
	if tenant == "" {
		tenant = TenantFrom(ctx)
	}
	n := p.ws.reg.userConns(userKey{tenant: tenant, user: user})
	return n > 0, n
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
	users, n := p.Presence(c.Request.Context(), ident.Tenant)
	c.JSON(http.StatusOK, gin.H{"tenant": ident.Tenant, "users": users, "connections": n})
}

// handleUserPresence serves GET {base}/presence/:user (publish scope).
func (p *Plugin) handleUserPresence(c *gin.Context) {
	ident, ok := p.publisher(c, "presence")
	if !ok {
		return
	}
	user := c.Param("user")
	online, n := p.UserPresence(c.Request.Context(), ident.Tenant, user)
	c.JSON(http.StatusOK, gin.H{"user": user, "online": online, "connections": n})
}
