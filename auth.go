package realtime

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// authenticator identifies callers: Config.Identify when set, else a JWT
// verified with an algorithm allow-list, a required exp and the optional
// iss/aud checks, its user and tenant read from the configured claims.
type authenticator struct {
	parser  *jwt.Parser
	keyfunc jwt.Keyfunc // nil: no JWT key configured (Identify only)
	cookie  string
	query   bool
	user    claimPath
	tenant  claimPath

	identify         IdentifyFunc
	identifyByHeader bool
	origins          *originPolicy
}

func newAuthenticator(cfg *Config) *authenticator {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(cfg.JWTAlgorithms),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.JWTLeeway),
		// Canonical base64url only: a signature re-encoded with other
		// trailing bits decodes to the same bytes, and must not pass.
		jwt.WithStrictDecoding(),
		// Numbers as json.Number: an integer user id keeps its digits.
		jwt.WithJSONNumber(),
	}
	if cfg.JWTIssuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.JWTIssuer))
	}
	if cfg.JWTAudience != "" {
		opts = append(opts, jwt.WithAudience(cfg.JWTAudience))
	}
	kf := cfg.JWTKeyfunc
	if kf == nil && len(cfg.JWTSecret) > 0 {
		secret := cfg.JWTSecret
		kf = func(*jwt.Token) (any, error) { return secret, nil }
	}
	// Validated by withDefaults.
	user, _ := parseClaimPath(cfg.JWTUserClaim)
	tenant, _ := parseClaimPath(cfg.JWTTenantClaim)
	origins, _ := newOriginPolicy(cfg.CSRFTrustedOrigins)
	return &authenticator{
		parser: jwt.NewParser(opts...), keyfunc: kf, cookie: cfg.TokenCookie, query: !cfg.DisableQueryToken,
		user: user, tenant: tenant,
		identify: cfg.Identify, identifyByHeader: cfg.IdentifyByHeader, origins: origins,
	}
}

// tokenFrom returns the request's credential: the Authorization bearer token,
// else the cookie, else the token query parameter (first found wins).
// fromCookie reports that it is the cookie's.
func (a *authenticator) tokenFrom(r *http.Request) (tok string, fromCookie bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok), false
		}
		return "", false // a present but malformed header is not silently skipped
	}
	if ck, err := r.Cookie(a.cookie); err == nil && ck.Value != "" {
		return ck.Value, true
	}
	if a.query {
		return r.URL.Query().Get("token"), false
	}
	return "", false
}

// ambient reports whether r is authenticated by a credential its browser
// attaches by itself (csrf.go): the token cookie, or Identify's unless
// IdentifyByHeader.
func (a *authenticator) ambient(r *http.Request) bool {
	if a.identify != nil {
		return !a.identifyByHeader
	}
	_, fromCookie := a.tokenFrom(r)
	return fromCookie
}

// verify checks a raw token and returns its identity. Errors wrap
// ErrUnauthorized and never contain the token.
func (a *authenticator) verify(raw string) (*Identity, error) {
	if a.keyfunc == nil {
		return nil, fmt.Errorf("verify token: %w: no JWT key configured", ErrUnauthorized)
	}
	if raw == "" {
		return nil, fmt.Errorf("verify token: %w: no token", ErrUnauthorized)
	}
	claims := jwt.MapClaims{}
	if _, err := a.parser.ParseWithClaims(raw, claims, a.keyfunc); err != nil {
		return nil, fmt.Errorf("verify token: %w: %w", ErrUnauthorized, err)
	}
	m := map[string]any(claims)
	id := &Identity{Claims: m}
	if v, ok := a.user.lookup(m); ok {
		s, err := claimString(v)
		if err != nil {
			return nil, fmt.Errorf("verify token: %w: user claim: %w", ErrUnauthorized, err)
		}
		id.User = s
	}
	if v, ok := a.tenant.lookup(m); ok {
		s, err := claimString(v)
		if err != nil {
			return nil, fmt.Errorf("verify token: %w: tenant claim: %w", ErrUnauthorized, err)
		}
		id.Tenant = s
	}
	if v, ok := m["scope"]; ok && v != nil {
		s, isString := v.(string)
		if !isString {
			return nil, fmt.Errorf("verify token: %w: scope claim is not a string", ErrUnauthorized)
		}
		id.Scopes = strings.Fields(s)
	}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		id.Expires = exp.Time
	}
	if err := checkIdentity(id); err != nil {
		return nil, fmt.Errorf("verify token: %w", err)
	}
	return id, nil
}

// identityOf identifies the caller of r: Config.Identify, else the JWT.
// Errors wrap ErrUnauthorized, ErrForbidden or ErrUnavailable.
func (a *authenticator) identityOf(r *http.Request) (*Identity, error) {
	if a.identify == nil {
		tok, _ := a.tokenFrom(r)
		return a.verify(tok)
	}
	got, err := a.identify(r)
	switch {
	case errors.Is(err, ErrForbidden) && !errors.Is(err, ErrUnauthorized):
		return nil, fmt.Errorf("identify: %w", ErrForbidden)
	case errors.Is(err, ErrUnavailable):
		return nil, fmt.Errorf("identify: %w", ErrUnavailable)
	case err != nil:
		// The app's error is not kept: it may hold what it read.
		return nil, fmt.Errorf("identify: %w: refused by Config.Identify", ErrUnauthorized)
	case got == nil:
		return nil, fmt.Errorf("identify: %w: no identity", ErrUnauthorized)
	}
	id := *got // the app's value stays as it was (Tenant is defaulted here)
	if err := checkIdentity(&id); err != nil {
		return nil, fmt.Errorf("identify: %w", err)
	}
	return &id, nil
}

// failure is why identifying r failed with err (AuthFailureStats; never
// told to the client).
func (a *authenticator) failure(r *http.Request, err error) authReason {
	if a.identify != nil {
		if errors.Is(err, ErrForbidden) || errors.Is(err, ErrUnavailable) {
			return authOther
		}
		return authClaims
	}
	tok, _ := a.tokenFrom(r)
	return tokenFailure(tok, err)
}

// VerifyToken verifies a raw JWT with the plugin's settings (keys, claim
// mapping, identity rules) and returns its identity. Errors wrap
// ErrUnauthorized (always, without a JWT key).
func (p *Plugin) VerifyToken(raw string) (*Identity, error) { return p.auth.verify(raw) }

// authenticate identifies the request of c, then applies the cross-site
// rule (csrf false: Authenticate with DisableAuthenticateCSRF), and stores
// the identity in c. An identity already stored by Authenticate is reused
// and the cross-site rule applied again, so that the plugin's routes keep
// it whatever Authenticate did. A bad credential is 401 before the rule is
// looked at. It writes nothing.
func (p *Plugin) authenticate(c *gin.Context, csrf bool) (*Identity, error) {
	r := c.Request
	id, known := IdentityFrom(c)
	if !known {
		var err error
		if id, err = p.auth.identityOf(r); err != nil {
			p.stats.authFailed(p.auth.failure(r, err))
			return nil, fmt.Errorf("authenticate: %w", err)
		}
	}
	if csrf {
		if err := p.auth.origins.check(r, p.auth.ambient(r)); err != nil {
			p.stats.authFailed(authOrigin)
			return nil, fmt.Errorf("authenticate: %w", err)
		}
	}
	if !known {
		c.Set(identityKey, id)
	}
	return id, nil
}

// identify authenticates the request of a plugin route (cross-site rule
// included), storing the identity in c. On failure it writes the answer
// (401, 403 or 503) and returns false.
func (p *Plugin) identify(c *gin.Context) (*Identity, bool) {
	id, err := p.authenticate(c, true)
	if err != nil {
		p.refused(c, err)
		return nil, false
	}
	return p.kept(id), true
}

// kept is the identity a connection keeps: without its Claims when nothing
// can read them (no Authorize, no AuthorizeChannel: the only readers of a
// connection's identity), so that a long-lived stream or socket does not
// hold the decoded token (about half a KiB). id itself, which the request's
// context may hold for the app (IdentityFrom), is not changed.
func (p *Plugin) kept(id *Identity) *Identity {
	if id.Claims == nil || p.cfg.Authorize != nil || p.cfg.AuthorizeChannel != nil {
		return id
	}
	short := *id
	short.Claims = nil
	return &short
}

// refused answers a failed authenticate and logs why at debug level (the
// answer never says which check failed; no credential is logged). A
// WebSocket handshake from an allowed Origin is refused as the WebSocket
// route refuses it (ws_refusal.go: close 4401 or 4403), so that a browser
// can read why, even when the app's Authenticate runs before that route.
func (p *Plugin) refused(c *gin.Context, err error) {
	if errors.Is(err, ErrUnavailable) {
		p.logFailure("authenticate", err)
	} else {
		p.log.Debug("realtime: request refused", "path", c.FullPath(), "remote", c.ClientIP(), "err", err)
	}
	if websocket.IsWebSocketUpgrade(c.Request) && p.ws.originAllowed(c.Request) {
		p.ws.refuse(c, err)
		return
	}
	writeError(c, err)
}

// Authenticate is a gin middleware that identifies the caller of the
// app's own routes exactly as the plugin's routes do (Config.Identify, or
// a token from the same sources with the same checks) and stores the
// identity for IdentityFrom. Requests without one are answered 401 (403
// or 503 as Config.Identify says), except CORS preflights (OPTIONS with
// Access-Control-Request-Method), which a browser sends without
// credentials: they go on to the route, where the CORS handler of
// Config.CORSAllowedOrigins answers them (no route: 404).
//
// A WebSocket handshake it refuses is answered as the plugin's WebSocket
// route answers it: upgraded, an error frame, close 4401 or 4403 (plain
// 401 or 403 with WSRefuseBeforeUpgrade, or from an Origin
// WSAllowedOrigins does not allow).
//
// It also applies the cross-site rule (csrf.go, Config.CSRFTrustedOrigins)
// to the app's state-changing requests: a POST, PUT, PATCH or DELETE
// authenticated by the token cookie (or by Config.Identify without
// IdentifyByHeader) whose Origin is neither the request's own host nor
// trusted is answered 403.
// Config.DisableAuthenticateCSRF turns that off for an app with CSRF
// protection of its own (the plugin's routes keep it).
func (p *Plugin) Authenticate() gin.HandlerFunc {
	csrf := !p.cfg.DisableAuthenticateCSRF
	return func(c *gin.Context) {
		if c.Request.Method == http.MethodOptions && c.GetHeader("Access-Control-Request-Method") != "" {
			c.Next()
			return
		}
		if _, err := p.authenticate(c, csrf); err != nil {
			p.refused(c, err)
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
