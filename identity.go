package realtime

import (
	"context"
	"slices"
	"time"

	"github.com/gin-gonic/gin"
)

// DefaultTenant is the tenant of a token without a tenant claim and of a write
// whose context names none.
const DefaultTenant = "default"

// ScopePublish is the scope that allows the server-to-server endpoints.
const ScopePublish = "publish"

// Identity is who a verified token speaks for.
type Identity struct {
	// User is the token's sub claim.
	User string
	// Tenant is the token's tenant claim, DefaultTenant when absent.
	Tenant string
	// Scopes is the token's space-separated scope claim, split.
	Scopes []string
	// Expires is the token's exp claim.
	Expires time.Time
}

// HasScope reports whether the identity holds scope s.
func (id *Identity) HasScope(s string) bool { return id != nil && slices.Contains(id.Scopes, s) }

type tenantKey struct{}

// WithTenant returns a context whose writes (Publish, the GORM hook) belong to tenant.
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// TenantFrom returns the tenant set by WithTenant, or DefaultTenant.
func TenantFrom(ctx context.Context) string {
	if ctx != nil {
		if t, ok := ctx.Value(tenantKey{}).(string); ok && t != "" {
			return t
		}
	}
	return DefaultTenant
}

const identityKey = "realtime.identity"

// IdentityFrom returns the identity that the plugin's Authenticate middleware
// (or one of its handlers) stored in the gin context.
func IdentityFrom(c *gin.Context) (*Identity, bool) {
	v, ok := c.Get(identityKey)
	if !ok {
		return nil, false
	}
	id, ok := v.(*Identity)
	return id, ok
}
