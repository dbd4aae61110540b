package main

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// sessionCookieOf trades tok for the session cookie and returns it.
func (e *env) sessionCookieOf(tok string) *http.Cookie {
	e.t.Helper()
	r := e.do("POST", "/api/v1/session", tok, "")
	wantStatus(e.t, "POST /session", r, http.StatusNoContent)
	for _, ck := range (&http.Response{Header: r.header}).Cookies() {
		if ck.Name == sessionCookie {
			return ck
		}
	}
	e.t.Fatalf("no %s cookie in %v", sessionCookie, r.header)
	return nil
}

// TestSessionCookie: the cookie's attributes (HttpOnly, SameSite=Lax, the
// API's path, the token's lifetime, not Secure over plain HTTP), and that
// it authenticates REST, SSE and the WebSocket without a token in the URL.
func TestSessionCookie(t *testing.T) {
	e := newEnv(t)
	tok := token(t, "alice", "")
	ck := e.sessionCookieOf(tok)
	if ck.Value != tok || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/api/v1" || ck.Secure {
		t.Fatalf("cookie %+v", ck)
	}
	if ck.MaxAge < 3500 || ck.MaxAge > 3600 {
		t.Fatalf("Max-Age %d, want the token's remaining hour", ck.MaxAge)
	}
	cookie := ck.Name + "=" + ck.Value
	wantStatus(t, "GET /posts with the cookie", e.do("GET", "/api/v1/posts", "", "", "Cookie", cookie), http.StatusOK)
	p, _ := e.create(tok, "hello", "world", false)
	s := e.subscribe("/api/v1/posts/"+p.ID+"/subscribe", "", "Cookie", cookie)
	if f := s.next(); f.event != "snapshot" {
		t.Fatalf("first frame %+v", f)
	}
	d := websocket.Dialer{HandshakeTimeout: hangGuard}
	c, _, err := d.Dial(strings.Replace(e.srv.URL, "http", "ws", 1)+"/api/v1/ws", http.Header{"Cookie": {cookie}, "Origin": {e.srv.URL}})
	if err != nil {
		t.Fatalf("WebSocket with the cookie: %v", err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(hangGuard))
	if _, b, err := c.ReadMessage(); err != nil || !strings.Contains(string(b), `"user":"alice"`) {
		t.Fatalf("connected: %s %v", b, err)
	}

	// Only a bearer token starts a session; DELETE clears it.
	wantStatus(t, "POST /session with the cookie", e.do("POST", "/api/v1/session", "", "", "Cookie", cookie, "Origin", e.srv.URL), http.StatusBadRequest)
	r := e.do("DELETE", "/api/v1/session", "", "", "Cookie", cookie, "Origin", e.srv.URL)
	wantStatus(t, "DELETE /session", r, http.StatusNoContent)
	if cks := (&http.Response{Header: r.header}).Cookies(); len(cks) != 1 || cks[0].MaxAge >= 0 || cks[0].Value != "" {
		t.Fatalf("cleared cookie %v", cks)
	}
}

// TestSessionCookieSecureOverTLS: over TLS the cookie is also Secure.
func TestSessionCookieSecureOverTLS(t *testing.T) {
	a, err := newApp(appConfig{JWTSecret: testSecret, DBPath: filepath.Join(t.TempDir(), "cms.db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(a.engine)
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		_ = a.Close(ctx)
	})
	client := srv.Client()
	client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // test server
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest("POST", srv.URL+"/api/v1/session", nil)
	req.Header.Set("Authorization", "Bearer "+token(t, "alice", ""))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cks := resp.Cookies()
	if len(cks) != 1 || !cks[0].Secure || !cks[0].HttpOnly || cks[0].SameSite != http.SameSiteLaxMode {
		t.Fatalf("cookies over TLS %+v", cks)
	}
}

// TestCrossSiteFormPost: a page of another site posting a form (text/plain,
// the browser attaching the session cookie) cannot create, change or
// delete a post nor push; the app's own pages can.
func TestCrossSiteFormPost(t *testing.T) {
	e := newEnv(t)
	tok := token(t, "alice", "")
	p, _ := e.create(tok, "mine", "x", false)
	cookie := e.sessionCookieOf(tok)
	pubClaims := jwt.MapClaims{"sub": "backend", "scope": "publish", "exp": time.Now().Add(time.Hour).Unix()}
	pubTok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, pubClaims).SignedString(testSecret)
	pubCookie := e.sessionCookieOf(pubTok)
	evil := []string{"Content-Type", "text/plain", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}
	noOrigin := []string{"Content-Type", "text/plain", "Referer", "https://evil.example/form.html"}
	for _, tc := range []struct {
		method, path, body string
		ck                 *http.Cookie
	}{
		{"POST", "/api/v1/posts", `{"title":"forged","body":"x"}`, cookie},
		{"PATCH", "/api/v1/posts/" + p.ID, `{"title":"forged"}`, cookie},
		{"DELETE", "/api/v1/posts/" + p.ID, "", cookie},
		{"POST", "/api/v1/notify", `{"event":"forged"}`, pubCookie},
		{"POST", "/api/v1/posts/" + p.ID + "/events", `{"event":"changed","data":{"id":"x"}}`, pubCookie},
	} {
		for _, hdr := range [][]string{evil, noOrigin} {
			r := e.do(tc.method, tc.path, "", tc.body, append([]string{"Cookie", tc.ck.Name + "=" + tc.ck.Value}, hdr...)...)
			if r.status != http.StatusForbidden || r.errorCode(t) != "forbidden" {
				t.Errorf("%s %s %v: %d %s, want 403", tc.method, tc.path, hdr, r.status, r.body)
			}
		}
	}
	// Nothing changed; from the app's own page it works.
	var list []Post
	e.do("GET", "/api/v1/posts", tok, "").json(t, &list)
	if len(list) != 1 || list[0].Title != "mine" {
		t.Fatalf("posts after the forged requests: %+v", list)
	}
	r := e.do("POST", "/api/v1/posts", "", `{"title":"real","body":"x"}`, "Cookie", cookie.Name+"="+cookie.Value, "Origin", e.srv.URL)
	wantStatus(t, "same-origin POST with the cookie", r, http.StatusCreated)
}
