package main

import (
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/ginrealtime/realtime"
)

// The session cookie: a page that has a token (from the app's own login)
// trades it once for the cookie the plugin reads (realtime_token), so its
// EventSource and WebSocket carry no token in their URLs (where proxies log
// them). The cookie is HttpOnly (no script reads it), SameSite=Lax (not
// sent with another site's subrequests and form POSTs) and, over TLS,
// Secure. A state-changing request it authenticates must come from this
// app's own pages: the plugin refuses it otherwise (the cross-site rule of
// realtime.Config.CSRFTrustedOrigins, applied by Authenticate too).
//
//	POST   /api/v1/session  with Authorization: Bearer <token> → 204, Set-Cookie
//	DELETE /api/v1/session  → 204, the cookie cleared

// sessionCookie is the plugin's default token cookie (realtime.Config.TokenCookie).
const sessionCookie = "realtime_token"

// sessionPath is where the cookie is sent: the API, the streams and the socket.
const sessionPath = "/api/v1"

// createSession sets the cookie to the request's bearer token, until the
// token's expiry. A request authenticated by the cookie itself is refused:
// only a token the page holds can start a session.
func (a *app) createSession(c *gin.Context) {
	scheme, tok, ok := strings.Cut(c.GetHeader("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		errorJSON(c, http.StatusBadRequest, "bad_request", "a session starts from an Authorization: Bearer token")
		return
	}
	id, _ := realtime.IdentityFrom(c) // Authenticate verified that very token
	maxAge := int(time.Until(id.Expires).Seconds())
	if maxAge <= 0 {
		maxAge = -1
	}
	setSessionCookie(c, strings.TrimSpace(tok), maxAge)
	c.Status(http.StatusNoContent)
}

// deleteSession clears the cookie.
func (a *app) deleteSession(c *gin.Context) {
	setSessionCookie(c, "", -1)
	c.Status(http.StatusNoContent)
}

// setSessionCookie writes the cookie with its attributes; maxAge < 0
// deletes it.
func setSessionCookie(c *gin.Context, value string, maxAge int) {
	http.SetCookie(c.Writer, &http.Cookie{
		Name:     sessionCookie,
		Value:    value,
		Path:     sessionPath,
		MaxAge:   maxAge,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
		// Over TLS only then; behind a proxy that terminates TLS, make it
		// unconditional.
		Secure: c.Request.TLS != nil,
	})
}
