package realtime

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
)

// testKeys are asymmetric keys for the pluggable-algorithm cases.
var testKeys = sync.OnceValue(func() (k struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
	ed  ed25519.PrivateKey
}) {
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	return k
})

// signWith signs claims with method and key.
func signWith(t testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

// unsignedToken crafts an "alg: none" token by hand: header.payload. with
// an empty signature.
func unsignedToken(t testing.TB, alg string, claims jwt.MapClaims) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]string{"alg": alg, "typ": "JWT"}) + "." + enc(claims) + "."
}

// withClaims returns a copy of c with the extra claims set (a nil value deletes).
func withClaims(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// cred is where a request carries its token.
type cred struct {
	header string // the whole Authorization header value
	cookie string // value of cookieName
	query  string // the token query parameter
}

const defaultCookie = "realtime_token"

// credRequest builds method path on base with cr (cookie named cookieName).
func credRequest(t testing.TB, method, base, path, cookieName string, cr cred, body string) *http.Request {
	t.Helper()
	u := base + path
	if cr.query != "" {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		u += sep + "token=" + url.QueryEscape(cr.query)
	}
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if cr.header != "" {
		req.Header.Set("Authorization", cr.header)
	}
	if cr.cookie != "" {
		req.AddCookie(&http.Cookie{Name: cookieName, Value: cr.cookie})
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

// sendReq sends req and returns its status, headers and body (a stream's body
// is not read: the caller closes nothing).
func sendReq(t testing.TB, req *http.Request) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") == "text/event-stream" {
		return resp.StatusCode, resp.Header, nil
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return resp.StatusCode, resp.Header, b
}

// authEndpoints are the plugin's routes, all behind the same credential
// checks; the poll answers at once (timeout=0) when a token is accepted.
var authEndpoints = []struct{ method, path, body string }{
	{"GET", "/api/v1/posts/42/poll?timeout=0", ""},
	{"GET", "/api/v1/posts/42/subscribe", ""},
	{"GET", "/api/v1/posts/subscribe", ""},
	{"POST", "/api/v1/posts/42/events", `{"event":"changed","data":{"id":"42"}}`},
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAuthRefused: every bad credential is 401 on every route, with
// WWW-Authenticate: Bearer and one and the same JSON body (it never says
// which check failed), and no token reaches the logs.
func TestAuthRefused(t *testing.T) {
	logs := &logBuffer{}
	_, srv := newTestServer(t, Config{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	k := testKeys()
	good := validClaims("u1")
	goodTok := mintToken(t, testSecret, withClaims(good, "scope", "publish"))
	parts := strings.Split(goodTok, ".")
	otherTok := mintToken(t, testSecret, withClaims(good, "sub", "admin", "scope", "publish"))
	bearer := func(tok string) cred { return cred{header: "Bearer " + tok} }

	cases := []struct {
		name string
		cr   cred
	}{
		{"no token", cred{}},
		{"expired", bearer(mintToken(t, testSecret, withClaims(good, "exp", time.Now().Add(-time.Hour).Unix())))},
		{"expired beyond the leeway", bearer(mintToken(t, testSecret, withClaims(good, "exp", time.Now().Add(-30*time.Second).Unix())))},
		{"no exp", bearer(mintToken(t, testSecret, withClaims(good, "exp", nil)))},
		{"exp not a number", bearer(mintToken(t, testSecret, withClaims(good, "exp", "tomorrow")))},
		{"not yet valid (nbf)", bearer(mintToken(t, testSecret, withClaims(good, "nbf", time.Now().Add(time.Hour).Unix())))},
		{"alg none", bearer(unsignedToken(t, "none", good))},
		{"alg None", bearer(unsignedToken(t, "None", good))},
		{"alg none with a signature", bearer(unsignedToken(t, "none", good) + parts[2])},
		{"alg none via the query", cred{query: unsignedToken(t, "none", good)}},
		{"wrong signature", bearer(mintToken(t, []byte("another-secret"), good))},
		{"payload swapped", bearer(parts[0] + "." + strings.Split(otherTok, ".")[1] + "." + parts[2])},
		{"signature cut", bearer(goodTok[:len(goodTok)-4])},
		{"HS512 with the same secret", bearer(signWith(t, jwt.SigningMethodHS512, testSecret, good))},
		{"HS384 with the same secret", bearer(signWith(t, jwt.SigningMethodHS384, testSecret, good))},
		{"RS256", bearer(signWith(t, jwt.SigningMethodRS256, k.rsa, good))},
		{"ES256", bearer(signWith(t, jwt.SigningMethodES256, k.ec, good))},
		{"EdDSA", bearer(signWith(t, jwt.SigningMethodEdDSA, k.ed, good))},
		{"no sub", bearer(mintToken(t, testSecret, withClaims(good, "sub", nil)))},
		{"empty sub", bearer(mintToken(t, testSecret, withClaims(good, "sub", "")))},
		{"not a JWT", bearer("not-a-jwt")},
		{"two segments", bearer(parts[0] + "." + parts[1])},
		{"scheme Basic", cred{header: "Basic dTE6cGFzc3dvcmQ="}},
		{"scheme Token", cred{header: "Token " + goodTok}},
		{"no scheme", cred{header: goodTok}},
		{"Bearer without token", cred{header: "Bearer"}},
		{"Bearer and spaces", cred{header: "Bearer   "}},
		{"bad header wins over a good query", cred{header: "Bearer junk", query: goodTok}},
		{"bad header wins over a good cookie", cred{header: "Basic x", cookie: goodTok}},
		{"bad cookie wins over a good query", cred{cookie: "junk", query: goodTok}},
		{"expired header wins over a good query", cred{header: "Bearer " + mintToken(t, testSecret, withClaims(good, "exp", time.Now().Add(-time.Hour).Unix())), query: goodTok}},
	}
	var first []byte
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, ep := range authEndpoints {
				status, h, body := sendReq(t, credRequest(t, ep.method, srv.URL, ep.path, defaultCookie, tc.cr, ep.body))
				if status != http.StatusUnauthorized {
					t.Errorf("%s %s: status %d, want 401 (body %s)", ep.method, ep.path, status, body)
					continue
				}
				if got := h.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
					t.Errorf("%s %s: WWW-Authenticate %q, want Bearer", ep.method, ep.path, got)
				}
				if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("%s %s: Content-Type %q", ep.method, ep.path, ct)
				}
				var e errorAnswer
				if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != "unauthorized" || e.Error.Message == "" {
					t.Errorf("%s %s: body %s, want the unauthorized error", ep.method, ep.path, body)
				}
				if first == nil {
					first = body
				} else if !bytes.Equal(body, first) {
					t.Errorf("%s %s: body %s differs from %s: it must not tell which check failed", ep.method, ep.path, body, first)
				}
			}
		})
	}
	// No token of any case (nor any part of one) was logged.
	logged := logs.String()
	for _, tc := range cases {
		for _, tok := range []string{tc.cr.query, tc.cr.cookie, strings.TrimPrefix(tc.cr.header, "Bearer ")} {
			if len(tok) > 8 && strings.Contains(logged, tok) {
				t.Errorf("case %q: its token appears in the logs:\n%s", tc.name, logged)
			}
		}
	}
	for _, p := range parts {
		if strings.Contains(logged, p) {
			t.Errorf("a token segment appears in the logs:\n%s", logged)
		}
	}
}

// TestAuthAccepted: a valid token is read from the Authorization header
// (any case of "Bearer"), the cookie (default realtime_token, or
// Config.TokenCookie), or the token query parameter, unless
// DisableQueryToken; the first one present wins.
func TestAuthAccepted(t *testing.T) {
	good := mintToken(t, testSecret, validClaims("u1"))
	bad := "junk"
	inLeeway := mintToken(t, testSecret, withClaims(validClaims("u1"), "exp", time.Now().Add(-1*time.Second).Unix()))
	type tcase struct {
		name   string
		cr     cred
		status int
	}
	servers := []struct {
		name   string
		cfg    Config
		cookie string
		cases  []tcase
	}{
		{"defaults", Config{}, defaultCookie, []tcase{
			{"header", cred{header: "Bearer " + good}, 200},
			{"header lower-case scheme", cred{header: "bearer " + good}, 200},
			{"cookie", cred{cookie: good}, 200},
			{"query", cred{query: good}, 200},
			{"expired within the leeway", cred{header: "Bearer " + inLeeway}, 200},
			{"good header wins over bad cookie and query", cred{header: "Bearer " + good, cookie: bad, query: bad}, 200},
			{"good cookie wins over a bad query", cred{cookie: good, query: bad}, 200},
		}},
		{"custom cookie", Config{TokenCookie: "sess"}, "sess", []tcase{
			{"cookie sess", cred{cookie: good}, 200},
		}},
		{"custom cookie, default name", Config{TokenCookie: "sess"}, defaultCookie, []tcase{
			{"cookie realtime_token is not read", cred{cookie: good}, 401},
		}},
		{"query disabled", Config{DisableQueryToken: true}, defaultCookie, []tcase{
			{"query", cred{query: good}, 401},
			{"header", cred{header: "Bearer " + good}, 200},
			{"cookie", cred{cookie: good}, 200},
		}},
	}
	for _, sv := range servers {
		t.Run(sv.name, func(t *testing.T) {
			_, srv := newTestServer(t, sv.cfg)
			for _, tc := range sv.cases {
				status, _, body := sendReq(t, credRequest(t, "GET", srv.URL, "/api/v1/posts/42/poll?timeout=0", sv.cookie, tc.cr, ""))
				if status != tc.status {
					t.Errorf("%s: status %d, want %d (body %s)", tc.name, status, tc.status, body)
				}
				if status == 200 && string(body) != `{"events":[]}` {
					t.Errorf("%s: body %s", tc.name, body)
				}
			}
		})
	}
}

// TestAuthIssuerAudience: with JWTIssuer and JWTAudience set, tokens must
// carry both, equal; without them, any iss and aud pass.
func TestAuthIssuerAudience(t *testing.T) {
	good := withClaims(validClaims("u1"), "iss", "https://issuer.example", "aud", "realtime")
	cases := []struct {
		name   string
		claims jwt.MapClaims
		want   int
	}{
		{"both match", good, 200},
		{"aud in a list", withClaims(good, "aud", []string{"other", "realtime"}), 200},
		{"wrong iss", withClaims(good, "iss", "https://evil.example"), 401},
		{"no iss", withClaims(good, "iss", nil), 401},
		{"wrong aud", withClaims(good, "aud", "other"), 401},
		{"no aud", withClaims(good, "aud", nil), 401},
	}
	_, srv := newTestServer(t, Config{JWTIssuer: "https://issuer.example", JWTAudience: "realtime"})
	_, open := newTestServer(t, Config{})
	for _, tc := range cases {
		tok := mintToken(t, testSecret, tc.claims)
		status, h, body := sendReq(t, credRequest(t, "GET", srv.URL, "/api/v1/posts/42/poll?timeout=0", defaultCookie, cred{header: "Bearer " + tok}, ""))
		if status != tc.want {
			t.Errorf("%s: status %d, want %d (body %s)", tc.name, status, tc.want, body)
		}
		if status == 401 && h.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: no WWW-Authenticate", tc.name)
		}
		if status, _, body := sendReq(t, credRequest(t, "GET", open.URL, "/api/v1/posts/42/poll?timeout=0", defaultCookie, cred{header: "Bearer " + tok}, "")); status != 200 {
			t.Errorf("%s, no iss/aud configured: status %d (body %s)", tc.name, status, body)
		}
	}
}

// TestAuthPluggableAlgorithms: with JWTKeyfunc and JWTAlgorithms, RS256,
// ES256 and EdDSA tokens verify; a token of another algorithm does not,
// including HS256 signed with the public key as secret (algorithm
// confusion).
func TestAuthPluggableAlgorithms(t *testing.T) {
	k := testKeys()
	claims := validClaims("u1")
	pubDER, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	algs := []struct {
		alg    string
		key    any // verification key
		good   string
		others map[string]string
	}{
		{"RS256", &k.rsa.PublicKey, signWith(t, jwt.SigningMethodRS256, k.rsa, claims), map[string]string{
			"HS256 with the public key as secret": signWith(t, jwt.SigningMethodHS256, pubPEM, claims),
			"RS512":                               signWith(t, jwt.SigningMethodRS512, k.rsa, claims),
			"PS256":                               signWith(t, jwt.SigningMethodPS256, k.rsa, claims),
			"none":                                unsignedToken(t, "none", claims),
		}},
		{"ES256", &k.ec.PublicKey, signWith(t, jwt.SigningMethodES256, k.ec, claims), map[string]string{
			"HS256 with the test secret": mintToken(t, testSecret, claims),
			"none":                       unsignedToken(t, "none", claims),
		}},
		{"EdDSA", k.ed.Public(), signWith(t, jwt.SigningMethodEdDSA, k.ed, claims), map[string]string{
			"RS256": signWith(t, jwt.SigningMethodRS256, k.rsa, claims),
		}},
	}
	for _, a := range algs {
		t.Run(a.alg, func(t *testing.T) {
			key := a.key
			_, srv := newTestServer(t, Config{
				JWTKeyfunc:    func(*jwt.Token) (any, error) { return key, nil },
				JWTAlgorithms: []string{a.alg},
			})
			get := func(tok string) int {
				status, _, _ := sendReq(t, credRequest(t, "GET", srv.URL, "/api/v1/posts/42/poll?timeout=0", defaultCookie, cred{header: "Bearer " + tok}, ""))
				return status
			}
			if s := get(a.good); s != 200 {
				t.Errorf("%s token: status %d, want 200", a.alg, s)
			}
			for name, tok := range a.others {
				if s := get(tok); s != 401 {
					t.Errorf("%s: status %d, want 401", name, s)
				}
			}
		})
	}
}

// TestAuthIdentity: the tenant is the token's tenant claim, "default" when
// absent or empty (the loader is asked for that tenant's record); the scope
// claim is split on white space; POST …/events requires the exact scope
// "publish" (403 otherwise).
func TestAuthIdentity(t *testing.T) {
	loader := func(_ context.Context, ref Ref) (any, error) {
		return map[string]string{"id": ref.ID, "tenant": ref.Tenant}, nil
	}
	rt, srv := newTestServer(t, Config{Loader: loader})

	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		want   string
	}{
		{"no tenant claim", validClaims("u1"), DefaultTenant},
		{"empty tenant claim", withClaims(validClaims("u1"), "tenant", ""), DefaultTenant},
		{"tenant acme", withClaims(validClaims("u1"), "tenant", "acme"), "acme"},
	} {
		resp := getWith(t, srv.URL+"/api/v1/posts/42/poll?timeout=0", mintToken(t, testSecret, tc.claims), nil)
		var poll pollAnswer
		decodeJSON(t, resp, &poll)
		var data map[string]string
		if len(poll.Events) != 1 || json.Unmarshal(poll.Events[0].Data, &data) != nil || data["tenant"] != tc.want {
			t.Errorf("%s: poll %+v, want the snapshot of tenant %q", tc.name, poll, tc.want)
		}
	}

	id, err := rt.VerifyToken(mintToken(t, testSecret, withClaims(validClaims("u1"), "scope", " read  publish\tadmin ")))
	if err != nil {
		t.Fatal(err)
	}
	if id.User != "u1" || id.Tenant != DefaultTenant || fmt.Sprint(id.Scopes) != "[read publish admin]" || !id.HasScope(ScopePublish) || id.HasScope("pub") || id.Expires.IsZero() {
		t.Errorf("identity %+v", id)
	}
	if _, err := rt.VerifyToken(unsignedToken(t, "none", validClaims("u1"))); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("VerifyToken(alg none) = %v, want ErrUnauthorized", err)
	}

	for _, tc := range []struct {
		scope any
		want  int
	}{
		{"publish", 202},
		{"read publish", 202},
		{"publish\tread", 202},
		{nil, 403},
		{"", 403},
		{"read", 403},
		{"publisher", 403},
		{"PUBLISH", 403},
		{"read,publish", 403},
	} {
		claims := validClaims("backend")
		if tc.scope != nil {
			claims["scope"] = tc.scope
		}
		resp := postJSON(t, srv.URL+"/api/v1/posts/42/events", mintToken(t, testSecret, claims), `{"event":"changed","data":{"id":"42"}}`)
		if tc.want == 403 {
			checkError(t, resp, 403, "forbidden")
		} else if resp.StatusCode != tc.want {
			t.Errorf("scope %q: status %d, want %d", tc.scope, resp.StatusCode, tc.want)
		}
	}
}

// TestAuthenticateMiddleware: the plugin's middleware guards an app route
// with the same checks and hands the identity to the handler.
func TestAuthenticateMiddleware(t *testing.T) {
	rt, err := New(Config{JWTSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	r.GET("/me", rt.Authenticate(), func(c *gin.Context) {
		id, ok := IdentityFrom(c)
		if !ok {
			c.Status(500)
			return
		}
		c.JSON(200, gin.H{"user": id.User, "tenant": id.Tenant})
	})
	srv := httptest.NewServer(r)
	t.Cleanup(func() { closeAll(t, rt, srv) })

	resp := getWith(t, srv.URL+"/me", mintToken(t, testSecret, withClaims(validClaims("u9"), "tenant", "acme")), nil)
	var me map[string]string
	decodeJSON(t, resp, &me)
	if resp.StatusCode != 200 || me["user"] != "u9" || me["tenant"] != "acme" {
		t.Errorf("GET /me: %d %v", resp.StatusCode, me)
	}
	resp = getWith(t, srv.URL+"/me", mintToken(t, testSecret, withClaims(validClaims("u9"), "exp", nil)), nil)
	checkError(t, resp, 401, "unauthorized")
	if resp.Header.Get("WWW-Authenticate") == "" {
		t.Error("no WWW-Authenticate")
	}
}

// TestNewConfigValidation: New refuses unusable configurations with an error
// wrapping ErrInvalidConfig (never a panic, never a half-started plugin),
// and accepts the minimal ones.
func TestNewConfigValidation(t *testing.T) {
	kf := func(*jwt.Token) (any, error) { return testSecret, nil }
	sec := testSecret
	bad := []struct {
		name string
		cfg  Config
	}{
		{"no key", Config{}},
		{"empty secret", Config{JWTSecret: []byte{}}},
		{"keyfunc without algorithms", Config{JWTKeyfunc: kf}},
		{"alg none", Config{JWTSecret: sec, JWTAlgorithms: []string{"none"}}},
		{"alg none among others", Config{JWTSecret: sec, JWTAlgorithms: []string{"HS256", "none"}}},
		{"keyfunc with alg none", Config{JWTKeyfunc: kf, JWTAlgorithms: []string{"none"}}},
		{"empty alg", Config{JWTSecret: sec, JWTAlgorithms: []string{""}}},
		{"unknown alg", Config{JWTSecret: sec, JWTAlgorithms: []string{"XS999"}}},
		{"secret with RS256 (no keyfunc to verify it)", Config{JWTSecret: sec, JWTAlgorithms: []string{"RS256"}}},
		{"secret with HS256 and EdDSA", Config{JWTSecret: sec, JWTAlgorithms: []string{"HS256", "EdDSA"}}},
		{"negative JWTLeeway", Config{JWTSecret: sec, JWTLeeway: -time.Second}},
		{"negative BufferMaxAge", Config{JWTSecret: sec, BufferMaxAge: -time.Second}},
		{"negative Retry", Config{JWTSecret: sec, Retry: -time.Second}},
		{"negative ResumeWait", Config{JWTSecret: sec, ResumeWait: -time.Second}},
		{"negative Heartbeat", Config{JWTSecret: sec, Heartbeat: -time.Second}},
		{"negative WriteTimeout", Config{JWTSecret: sec, WriteTimeout: -time.Second}},
		{"negative PollTimeout", Config{JWTSecret: sec, PollTimeout: -time.Second}},
		{"negative PollMaxTimeout", Config{JWTSecret: sec, PollMaxTimeout: -time.Second}},
		{"PollTimeout over PollMaxTimeout", Config{JWTSecret: sec, PollTimeout: 2 * time.Minute}},
		{"negative BufferSize", Config{JWTSecret: sec, BufferSize: -1}},
		{"negative QueueSize", Config{JWTSecret: sec, QueueSize: -1}},
		{"negative Writers", Config{JWTSecret: sec, Writers: -1}},
		{"negative WritersAtOnce", Config{JWTSecret: sec, WritersAtOnce: -1}},
		{"negative BufferMemory", Config{JWTSecret: sec, BufferMemory: -1}},
		{"negative MaxBodyBytes", Config{JWTSecret: sec, MaxBodyBytes: -1}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			rt, err := newNoPanic(tc.cfg)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("New: %v, want an error wrapping ErrInvalidConfig", err)
			}
			if rt != nil {
				t.Errorf("New returned a plugin with error %v", err)
				_ = rt.Close(context.Background())
			}
		})
	}
	good := []struct {
		name string
		cfg  Config
	}{
		{"secret only", Config{JWTSecret: sec}},
		{"keyfunc and algorithms", Config{JWTKeyfunc: kf, JWTAlgorithms: []string{"HS256", "RS256"}}},
		{"HS512 allowed", Config{JWTSecret: sec, JWTAlgorithms: []string{"HS512"}}},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			rt, err := newNoPanic(tc.cfg)
			if err != nil || rt == nil {
				t.Fatalf("New: %v", err)
			}
			if err := rt.Close(context.Background()); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	// HS512 allowed: an HS512 token verifies, an HS256 one no longer does.
	rt, err := New(Config{JWTSecret: sec, JWTAlgorithms: []string{"HS512"}})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(context.Background())
	if _, err := rt.VerifyToken(signWith(t, jwt.SigningMethodHS512, sec, validClaims("u1"))); err != nil {
		t.Errorf("HS512 token with HS512 allowed: %v", err)
	}
	if _, err := rt.VerifyToken(mintToken(t, sec, validClaims("u1"))); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("HS256 token with only HS512 allowed: %v", err)
	}
}

// newNoPanic calls New, turning a panic into an error that is not
// ErrInvalidConfig.
func newNoPanic(cfg Config) (rt *Plugin, err error) {
	defer func() {
		if r := recover(); r != nil {
			rt, err = nil, fmt.Errorf("New panicked: %v", r)
		}
	}()
	return New(cfg)
}

// TestNonCanonicalSignatureRefused: a signature re-encoded with different
// unused trailing bits decodes to the same bytes; it must still be refused
// (tokens are compared as issued, not as decoded).
func TestNonCanonicalSignatureRefused(t *testing.T) {
	_, srv := newTestServer(t, Config{})
	for i := 0; i < 64; i++ {
		tok := mintToken(t, testSecret, jwt.MapClaims{"sub": fmt.Sprintf("u%d", i), "exp": time.Now().Add(time.Hour).Unix()})
		// HS256 signatures are 32 bytes: 43 base64url characters whose last
		// one carries 2 unused bits. Flip one of them.
		last := tok[len(tok)-1]
		idx := strings.IndexByte(b64url, last)
		forged := tok[:len(tok)-1] + string(b64url[idx^1])
		resp := getWith(t, srv.URL+"/api/v1/posts/subscribe", forged, nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("token with a non-canonical signature: status %d, want 401", resp.StatusCode)
		}
	}
}

const b64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
