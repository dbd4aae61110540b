package realtime

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
)

// tokenClaims is the JWT payload the plugin reads.
type tokenClaims struct {
	jwt.RegisteredClaims
	Tenant string `json:"tenant,omitempty"`
	Scope  string `json:"scope,omitempty"`
}

// authenticator verifies tokens with an algorithm allow-list, a required exp
// and the optional iss/aud checks.
type authenticator struct {
	parser  *jwt.Parser
	keyfunc jwt.Keyfunc
	cookie  string
	query   bool
}

func newAuthenticator(cfg *Config) *authenticator {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(cfg.JWTAlgorithms),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.JWTLeeway),
		// Canonical base64url only: a signature re-encoded with other
		// trailing bits decodes to the same bytes, and must not pass.
		jwt.WithStrictDecoding(),
	}
	if cfg.JWTIssuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.JWTIssuer))
	}
	if cfg.JWTAudience != "" {
		opts = append(opts, jwt.WithAudience(cfg.JWTAudience))
	}
	kf := cfg.JWTKeyfunc
	if kf == nil {
		secret := cfg.JWTSecret
		kf = func(*jwt.Token) (any, error) { return secret, nil }
	}
	return &authenticator{parser: jwt.NewParser(opts...), keyfunc: kf, cookie: cfg.TokenCookie, query: !cfg.DisableQueryToken}
}

// tokenFrom returns the request's credential: the Authorization bearer token,
// else the cookie, else the token query parameter (first found wins).
func (a *authenticator) tokenFrom(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return "" // a present but malformed header is not silently skipped
	}
	if ck, err := r.Cookie(a.cookie); err == nil && ck.Value != "" {
		return ck.Value
	}
	if a.query {
		return r.URL.Query().Get("token")
	}
	return ""
}

// Verify checks a raw token and returns its identity. Errors wrap ErrUnauthorized.
func (a *authenticator) verify(raw string) (*Identity, error) {
	if raw == "" {
		return nil, fmt.Errorf("verify token: %w: no token", ErrUnauthorized)
	}
	var cl tokenClaims
	if _, err := a.parser.ParseWithClaims(raw, &cl, a.keyfunc); err != nil {
		return nil, fmt.Errorf("verify token: %w: %w", ErrUnauthorized, err)
	}
	if cl.Subject == "" {
		return nil, fmt.Errorf("verify token: %w: no sub claim", ErrUnauthorized)
	}
	id := &Identity{User: cl.Subject, Tenant: cl.Tenant, Scopes: strings.Fields(cl.Scope)}
	if id.Tenant == "" {
		id.Tenant = DefaultTenant
	}
	if cl.ExpiresAt != nil {
		id.Expires = cl.ExpiresAt.Time
	}
	return id, nil
}

// VerifyToken verifies a raw JWT with the plugin's settings and returns its identity.
func (p *Plugin) VerifyToken(raw string) (*Identity, error) { return p.auth.verify(raw) }

// identify authenticates the request of c, storing the identity in c. On
// failure it writes the 401 answer and returns false.
func (p *Plugin) identify(c *gin.Context) (*Identity, bool) {
	if id, ok := IdentityFrom(c); ok {
		return id, true
	}
	raw := p.auth.tokenFrom(c.Request)
	id, err := p.auth.verify(raw)
	if err != nil {
		why := tokenFailure(raw, err)
		p.stats.authFailed(why)
		p.log.Debug("realtime: token refused", "path", c.FullPath(), "remote", c.ClientIP(), "reason", authNames[why], "err", err)
		writeError(c, err)
		return nil, false
	}
	c.Set(identityKey, id)
	return id, true
}

// Authenticate is a gin middleware that requires a valid token (same sources
// and checks as the plugin's own routes) and stores its identity for
// IdentityFrom. Requests without one are answered 401, except CORS
// preflights (OPTIONS with Access-Control-Request-Method), which a browser
// sends without credentials: they go on to the route, where the CORS
// handler of Config.CORSAllowedOrigins answers them (no route: 404).
func (p *Plugin) Authenticate() gin.HandlerFunc {
	return func(c *gin.Context) {
		if c.Request.Method == http.MethodOptions && c.GetHeader("Access-Control-Request-Method") != "" {
			c.Next()
			return
		}
		if _, ok := p.identify(c); !ok {
			c.Abort()
			return
		}
		c.Next()
	}
}

// publisher authenticates c and requires the publish scope; on failure it
// has answered.
func (p *Plugin) publisher(c *gin.Context, op string) (*Identity, bool) {
	ident, ok := p.identify(c)
	if !ok {
		return nil, false
	}
	if !ident.HasScope(ScopePublish) {
		p.stats.authFailed(authScope)
		writeError(c, fmt.Errorf("%s: %w: publish scope required", op, ErrForbidden))
		return nil, false
	}
	return ident, true
}
