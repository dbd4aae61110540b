package realtime

import (
	"context"
	"fmt"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
)

// DefaultTenant is the tenant of a token without a tenant claim and of a write
// whose context names none.
const DefaultTenant = "default"

// ScopePublish is the scope that allows the server-to-server endpoints.
const ScopePublish = "publish"

// Identity is who a verified token (or Config.Identify) speaks for.
//
// Every identity obeys the same rules, however it was made (PROTOCOL.md
// §1): a User is required, and neither User nor Tenant may contain a
// wildcard ("*", ">"), white space, a control character or invalid UTF-8,
// so that no identity can stand for a channel pattern ("user.<User>" is
// always one concrete channel). Dots are allowed (emails make common user
// ids). A request whose identity breaks a rule is refused with 401.
type Identity struct {
	// User is the user id: the token's sub claim (Config.JWTUserClaim).
	User string
	// Tenant is the tenant id: the token's tenant claim
	// (Config.JWTTenantClaim), DefaultTenant when absent or empty.
	Tenant string
	// Scopes is the token's space-separated scope claim, split.
	Scopes []string
	// Expires is the token's exp claim. Zero (an identity from
	// Config.Identify that sets none) never expires.
	Expires time.Time
	// Claims are the token's verified claims, as decoded JSON (objects are
	// map[string]any, numbers json.Number), for the Authorizer and the
	// ChannelAuthorizer to decide on roles and the like; whatever
	// Config.Identify sets. They must not be modified.
	Claims map[string]any
}

// checkIdentity applies the identity rules to id (Tenant "" becomes
// DefaultTenant). Errors wrap ErrUnauthorized.
func checkIdentity(id *Identity) error {
	if id.User == "" {
		return fmt.Errorf("identity: %w: no user", ErrUnauthorized)
	}
	if id.Tenant == "" {
		id.Tenant = DefaultTenant
	}
	if !validIdentityPart(id.User) || !validIdentityPart(id.Tenant) {
		return fmt.Errorf("identity: %w: user or tenant with a wildcard, white space or a control character", ErrUnauthorized)
	}
	return nil
}

// validIdentityPart reports whether s may be a user or tenant id: valid
// UTF-8 without "*", ">", white space or control characters.
func validIdentityPart(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return true
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
