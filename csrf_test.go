package realtime

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

// csrfRequest sends method url with the credential cr (cookie named
// realtime_token unless cookieName), the headers hdr and body, and returns
// the status.
func csrfRequest(t *testing.T, method, url string, cr cred, cookieName string, hdr map[string]string, body, contentType string) int {
	t.Helper()
	if cookieName == "" {
		cookieName = defaultCookie
	}
	req := credRequest(t, method, url, "", cookieName, cr, "")
	req.Body = io.NopCloser(strings.NewReader(body))
	req.ContentLength = int64(len(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	status, _, b := sendReq(t, req)
	if status == http.StatusForbidden && errorCode(t, string(b)) != "forbidden" {
		t.Errorf("403 body %s", b)
	}
	return status
}

// TestCSRFPluginRoutes: a state-changing request authenticated by the
// cookie passes only from the request's own host or a trusted origin
// (Sec-Fetch-Site first, then Origin; no Origin is refused, whatever the
// Referer), whatever CORSAllowedOrigins says; a header or query token, and
// safe methods, are never checked.
func TestCSRFPluginRoutes(t *testing.T) {
	rt, srv := newTestServer(t, Config{
		CSRFTrustedOrigins: []string{"https://app.example", "HTTPS://Admin.Example:443/"},
	})
	self := srv.URL // http://127.0.0.1:port
	pub := publisherToken(t)
	// A subscriber that must see no push from a refused request.
	ws, _ := connectWS(t, srv, userToken(t, "watcher"))
	cookie := cred{cookie: pub}
	type tcase struct {
		name   string
		cr     cred
		hdr    map[string]string
		ctype  string
		status int
	}
	cases := []tcase{
		{"same origin", cookie, map[string]string{"Origin": self}, "", 200},
		{"same origin, upper case", cookie, map[string]string{"Origin": strings.ToUpper(self)}, "", 200},
		{"same origin, Sec-Fetch-Site same-origin", cookie, map[string]string{"Origin": self, "Sec-Fetch-Site": "same-origin"}, "", 200},
		{"Sec-Fetch-Site same-origin without Origin", cookie, map[string]string{"Sec-Fetch-Site": "same-origin"}, "", 200},
		{"trusted origin", cookie, map[string]string{"Origin": "https://app.example"}, "", 200},
		{"trusted origin, normalised", cookie, map[string]string{"Origin": "https://admin.example"}, "", 200},
		{"trusted origin, same-site", cookie, map[string]string{"Origin": "https://app.example", "Sec-Fetch-Site": "same-site"}, "", 200},
		{"cross-site form POST", cookie, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, "text/plain", 403},
		{"foreign origin", cookie, map[string]string{"Origin": "https://evil.example"}, "", 403},
		{"same host, other port", cookie, map[string]string{"Origin": "http://127.0.0.1:1"}, "", 403},
		{"origin null", cookie, map[string]string{"Origin": "null"}, "", 403},
		{"origin with a path", cookie, map[string]string{"Origin": self + "/x"}, "", 403},
		{"no Origin", cookie, nil, "", 403},
		{"no Origin, foreign Referer", cookie, map[string]string{"Referer": "https://evil.example/page"}, "", 403},
		{"no Origin, same-host Referer", cookie, map[string]string{"Referer": self + "/page"}, "", 403},
		{"no Origin, Sec-Fetch-Site cross-site", cookie, map[string]string{"Sec-Fetch-Site": "cross-site"}, "", 403},
		{"same-host Origin, Sec-Fetch-Site cross-site", cookie, map[string]string{"Origin": self, "Sec-Fetch-Site": "cross-site"}, "", 403},
		{"Sec-Fetch-Site same-site, untrusted", cookie, map[string]string{"Origin": "https://sub.evil.example", "Sec-Fetch-Site": "same-site"}, "", 403},
		{"header token, foreign origin", cred{header: "Bearer " + pub}, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, "", 200},
		{"header token wins over the cookie", cred{header: "Bearer " + pub, cookie: pub}, map[string]string{"Origin": "https://evil.example"}, "", 200},
		{"query token, foreign origin", cred{query: pub}, map[string]string{"Origin": "https://evil.example"}, "", 200},
		{"bad cookie, foreign origin", cred{cookie: "junk"}, map[string]string{"Origin": "https://evil.example"}, "", 401},
		{"bad cookie, same origin", cred{cookie: "junk"}, map[string]string{"Origin": self}, "", 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctype := tc.ctype
			if ctype == "" {
				ctype = "application/json"
			}
			if got := csrfRequest(t, http.MethodPost, srv.URL+"/api/v1/notify", tc.cr, "", tc.hdr, `{"event":"csrf"}`, ctype); got != tc.status {
				t.Errorf("POST /notify: %d, want %d", got, tc.status)
			}
			want := tc.status
			if want == 200 {
				want = 202
			}
			if got := csrfRequest(t, http.MethodPost, srv.URL+"/api/v1/posts/1/events", tc.cr, "", tc.hdr, `{"event":"changed","data":{"id":"1"}}`, ctype); got != want {
				t.Errorf("POST events: %d, want %d", got, want)
			}
		})
	}
	// An origin CORS allows is not trusted with cookies (CORS answers it,
	// the rule refuses it); with a header token it passes.
	_, corsSrv := newTestServer(t, Config{CORSAllowedOrigins: []string{"https://dash.example"}})
	dash := map[string]string{"Origin": "https://dash.example"}
	if got := csrfRequest(t, http.MethodPost, corsSrv.URL+"/api/v1/notify", cookie, "", dash, `{"event":"x"}`, "application/json"); got != 403 {
		t.Errorf("CORS-allowed origin with the cookie: %d, want 403", got)
	}
	if got := csrfRequest(t, http.MethodPost, corsSrv.URL+"/api/v1/notify", cred{header: "Bearer " + pub}, "", dash, `{"event":"x"}`, "application/json"); got != 200 {
		t.Errorf("CORS-allowed origin with a header token: %d, want 200", got)
	}
	// Safe methods are not checked: GET presence with the cookie from anywhere.
	if got := csrfRequest(t, http.MethodGet, srv.URL+"/api/v1/presence", cookie, "", map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, "", ""); got != 200 {
		t.Errorf("GET presence: %d", got)
	}
	// The watcher got the accepted pushes only.
	accepted := 0
	for _, tc := range cases {
		if tc.status == 200 {
			accepted++
		}
	}
	for range accepted {
		expectMessage(t, ws, "csrf")
	}
	if res := notify(t, rt, Notification{Event: "end"}); res.Delivered != 1 {
		t.Fatalf("delivered %d", res.Delivered)
	}
	expectMessage(t, ws, "end")
}

// TestCSRFAuthenticate: Authenticate applies the same rule to the app's
// unsafe methods, unless DisableAuthenticateCSRF, which leaves the
// plugin's own routes checked; an Identify that reads a cookie is checked
// unless IdentifyByHeader.
func TestCSRFAuthenticate(t *testing.T) {
	app := func(cfg Config) *httptest.Server {
		cfg.JWTSecret = testSecret
		rt, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r := gin.New()
		api := r.Group("/api/v1", rt.Authenticate())
		api.POST("/things", func(c *gin.Context) { c.Status(http.StatusCreated) })
		api.PUT("/things", func(c *gin.Context) { c.Status(http.StatusCreated) })
		api.GET("/things", func(c *gin.Context) { c.Status(http.StatusOK) })
		rt.RegisterCollection(api, "posts")
		srv := httptest.NewServer(r)
		t.Cleanup(func() { closeAll(t, rt, srv) })
		return srv
	}
	tok := publisherToken(t)
	foreign := map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
	session := func(r *http.Request) (*Identity, error) {
		ck, err := r.Cookie("sid")
		if err != nil || ck.Value != "s3cret" {
			return nil, ErrUnauthorized
		}
		return &Identity{User: "u1", Scopes: []string{ScopePublish}}, nil
	}
	type tcase struct {
		name         string
		cfg          Config
		cr           cred
		cookie       string
		method, path string
		status       int
	}
	sid := cred{cookie: "s3cret"}
	cases := []tcase{
		{"app POST, cookie", Config{}, cred{cookie: tok}, "", "POST", "/api/v1/things", 403},
		{"app PUT, cookie", Config{}, cred{cookie: tok}, "", "PUT", "/api/v1/things", 403},
		{"app GET, cookie", Config{}, cred{cookie: tok}, "", "GET", "/api/v1/things", 200},
		{"app POST, header", Config{}, cred{header: "Bearer " + tok}, "", "POST", "/api/v1/things", 201},
		{"app POST, check off", Config{DisableAuthenticateCSRF: true}, cred{cookie: tok}, "", "POST", "/api/v1/things", 201},
		{"plugin route keeps it, check off", Config{DisableAuthenticateCSRF: true}, cred{cookie: tok}, "", "POST", "/api/v1/posts/1/events", 403},
		{"Identify (cookie) app POST", Config{Identify: session}, sid, "sid", "POST", "/api/v1/things", 403},
		{"Identify (cookie) plugin POST", Config{Identify: session}, sid, "sid", "POST", "/api/v1/posts/1/events", 403},
		{"Identify (cookie) app GET", Config{Identify: session}, sid, "sid", "GET", "/api/v1/things", 200},
		{"Identify by header", Config{Identify: session, IdentifyByHeader: true}, sid, "sid", "POST", "/api/v1/things", 201},
		{"Identify by header, plugin POST", Config{Identify: session, IdentifyByHeader: true}, sid, "sid", "POST", "/api/v1/posts/1/events", 202},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := app(tc.cfg)
			body := ""
			if strings.HasSuffix(tc.path, "/events") {
				body = `{"event":"changed","data":{"id":"1"}}`
			}
			if got := csrfRequest(t, tc.method, srv.URL+tc.path, tc.cr, tc.cookie, foreign, body, "text/plain"); got != tc.status {
				t.Errorf("%s %s: %d, want %d", tc.method, tc.path, got, tc.status)
			}
			if tc.status == 403 { // and from its own page it passes
				if got := csrfRequest(t, tc.method, srv.URL+tc.path, tc.cr, tc.cookie, map[string]string{"Origin": srv.URL}, body, "text/plain"); got == 403 {
					t.Errorf("%s %s from the same origin: 403", tc.method, tc.path)
				}
			}
		})
	}
}

func TestCSRFTrustedOriginsConfig(t *testing.T) {
	for _, bad := range [][]string{{"*"}, {""}, {"app.example"}, {"https://app.example/path"}, {"ftp://app.example"}, {"https://"}, {"null"}, {"https://a.example?x"}} {
		if _, err := newNoPanic(Config{JWTSecret: testSecret, CSRFTrustedOrigins: bad}); err == nil {
			t.Errorf("CSRFTrustedOrigins %q accepted", bad)
		}
	}
	rt, err := New(Config{JWTSecret: testSecret, CSRFTrustedOrigins: []string{"https://app.example:8443", "http://[::1]:3000/"}})
	if err != nil {
		t.Fatal(err)
	}
	rt.Close(t.Context())
}

// FuzzOrigin: parseOrigin never panics, and what it accepts is a
// normalised scheme://host[:port] that parses to itself; the rule never
// panics on any Origin, Sec-Fetch-Site and Host.
func FuzzOrigin(f *testing.F) {
	for _, s := range []string{"https://app.example", "http://127.0.0.1:8080", "null", "", "https://[::1]:443", "HTTP://A.EXAMPLE:80/", "https://a.example/p?q#f", "https://u@a.example", "javascript:alert(1)", "https://a.example:"} {
		f.Add(s, "cross-site", "a.example")
	}
	op, err := newOriginPolicy([]string{"https://app.example"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, origin, site, host string) {
		if o, ok := parseOrigin(origin); ok {
			s := o.String()
			if s != strings.ToLower(s) || !strings.HasPrefix(s, "http") || strings.Count(s, "/") != 2 {
				t.Fatalf("parseOrigin(%q) = %q", origin, s)
			}
			if o2, ok := parseOrigin(s); !ok || o2 != o {
				t.Fatalf("parseOrigin(%q) = %q, which parses to %q, %v", origin, s, o2, ok)
			}
		}
		r := httptest.NewRequest(http.MethodPost, "http://x/", nil)
		r.Host = host
		r.Header.Set("Origin", origin)
		r.Header.Set("Sec-Fetch-Site", site)
		_ = op.check(r, true)
	})
}
