package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// identityEcho is a RecordLoader that answers the identity the plugin
// loads for: the tenant in the record, so a poll shows it.
func identityEcho(_ context.Context, ref Ref) (any, error) {
	return map[string]string{"id": ref.ID, "tenant": ref.Tenant}, nil
}

// TestIdentityRules: a user or tenant with a wildcard, white space, a
// control character or invalid UTF-8 is refused with 401, from a JWT and
// from Identify alike (the WebSocket: ws_refusal_test.go); dots, "@" and
// other letters are fine.
func TestIdentityRules(t *testing.T) {
	identify := func(r *http.Request) (*Identity, error) {
		q := r.URL.Query()
		return &Identity{User: q.Get("u"), Tenant: q.Get("t")}, nil
	}
	_, jwtSrv := newTestServer(t, Config{Loader: identityEcho})
	_, idSrv := newTestServer(t, Config{Loader: identityEcho, Identify: identify})
	bad := []string{"*", ">", "a*b", "a>b", "user.*", "user.>", "a b", " a", "a\tb", "a\nb", "a\rb", "a\x00b", "a\x7fb", "a\u00a0b", "a\u2028b", "a\u0085b", "\xff\xfe"}
	good := []string{"a", "a.b", "a@example.com", "ünïcødé", "x-1_2:3", "user.x"}
	check := func(t *testing.T, name, user, tenant string, ok bool) {
		t.Helper()
		claims := validClaims(user)
		if tenant != "" {
			claims["tenant"] = tenant
		}
		// JSON cannot carry invalid UTF-8 (it becomes U+FFFD): Identify only.
		if utf8.ValidString(user) && utf8.ValidString(tenant) {
			tok := mintToken(t, testSecret, claims)
			status, _, body := sendReq(t, credRequest(t, "GET", jwtSrv.URL, "/api/v1/posts/1/poll?timeout=0", defaultCookie, cred{header: "Bearer " + tok}, ""))
			if (status == 200) != ok || (!ok && status != 401) {
				t.Errorf("%s: JWT user %q tenant %q: %d %s", name, user, tenant, status, body)
			}
		}
		q := url.Values{"u": {user}, "t": {tenant}, "timeout": {"0"}}
		status, _, body := sendReq(t, credRequest(t, "GET", idSrv.URL, "/api/v1/posts/1/poll?"+q.Encode(), defaultCookie, cred{}, ""))
		if (status == 200) != ok || (!ok && status != 401) {
			t.Errorf("%s: Identify user %q tenant %q: %d %s", name, user, tenant, status, body)
		}
		if _, err := (&authenticator{}).identityOfIdentity(&Identity{User: user, Tenant: tenant}); (err == nil) != ok {
			t.Errorf("%s: user %q tenant %q: %v", name, user, tenant, err)
		}
	}
	for _, s := range bad {
		check(t, "bad user", s, "", false)
		check(t, "bad tenant", "u1", s, false)
	}
	for _, s := range good {
		check(t, "good user", s, "", true)
		check(t, "good tenant", "u1", s, true)
	}
	check(t, "no user", "", "", false)
}

// identityOfIdentity applies the identity rules as Identify's result.
func (a *authenticator) identityOfIdentity(id *Identity) (*Identity, error) {
	a.identify = func(*http.Request) (*Identity, error) { return id, nil }
	return a.identityOf(&http.Request{})
}

// TestClaimMapping: JWTUserClaim and JWTTenantClaim choose the claims of
// the user and the tenant, nested paths allowed (a top-level claim of the
// whole name first); strings and integers only. Identity.Claims keeps
// every verified claim.
func TestClaimMapping(t *testing.T) {
	type tcase struct {
		name         string
		claims       jwt.MapClaims
		user, tenant string // "": refused
	}
	exp := time.Now().Add(time.Hour).Unix()
	configs := []struct {
		cfg   Config
		cases []tcase
	}{
		{Config{JWTUserClaim: "user_id", JWTTenantClaim: "tenant_id"}, []tcase{
			{"strings", jwt.MapClaims{"user_id": "u1", "tenant_id": "acme", "exp": exp}, "u1", "acme"},
			{"integers", jwt.MapClaims{"user_id": 42, "tenant_id": 7, "exp": exp}, "42", "7"},
			{"a big integer keeps its digits", jwt.MapClaims{"user_id": json.Number("12345678901234567890"), "exp": exp}, "12345678901234567890", DefaultTenant},
			{"no tenant", jwt.MapClaims{"user_id": "u1", "exp": exp}, "u1", DefaultTenant},
			{"null tenant", jwt.MapClaims{"user_id": "u1", "tenant_id": nil, "exp": exp}, "u1", DefaultTenant},
			{"sub is not the user", jwt.MapClaims{"sub": "u1", "exp": exp}, "", ""},
			{"a fraction", jwt.MapClaims{"user_id": 1.5, "exp": exp}, "", ""},
			{"an exponent", jwt.MapClaims{"user_id": json.Number("1e3"), "exp": exp}, "", ""},
			{"a boolean", jwt.MapClaims{"user_id": true, "exp": exp}, "", ""},
			{"an object", jwt.MapClaims{"user_id": map[string]any{"id": 1}, "exp": exp}, "", ""},
			{"a tenant list", jwt.MapClaims{"user_id": "u1", "tenant_id": []string{"a"}, "exp": exp}, "", ""},
			{"a wildcard tenant", jwt.MapClaims{"user_id": "u1", "tenant_id": "*", "exp": exp}, "", ""},
			{"scope not a string", jwt.MapClaims{"user_id": "u1", "scope": []string{"publish"}, "exp": exp}, "", ""},
		}},
		{Config{JWTUserClaim: "app.user.id", JWTTenantClaim: "https://example.com/tenant"}, []tcase{
			{"nested", jwt.MapClaims{"app": map[string]any{"user": map[string]any{"id": "n1"}}, "https://example.com/tenant": "acme", "exp": exp}, "n1", "acme"},
			{"the whole name first", jwt.MapClaims{"app.user.id": "top", "app": map[string]any{"user": map[string]any{"id": "n1"}}, "exp": exp}, "top", DefaultTenant},
			{"a path through a string", jwt.MapClaims{"app": "x", "exp": exp}, "", ""},
			{"a path through a list", jwt.MapClaims{"app": []any{map[string]any{"user": "x"}}, "exp": exp}, "", ""},
		}},
		{Config{}, []tcase{
			{"sub and tenant", jwt.MapClaims{"sub": "u1", "tenant": "acme", "exp": exp}, "u1", "acme"},
			{"an integer sub", jwt.MapClaims{"sub": 9, "exp": exp}, "9", DefaultTenant},
		}},
	}
	for _, c := range configs {
		cfg := c.cfg
		cfg.JWTSecret = testSecret
		rt, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range c.cases {
			id, err := rt.VerifyToken(mintToken(t, testSecret, tc.claims))
			switch {
			case tc.user == "" && !errors.Is(err, ErrUnauthorized):
				t.Errorf("%s: %+v, %v; want ErrUnauthorized", tc.name, id, err)
			case tc.user != "" && (err != nil || id.User != tc.user || id.Tenant != tc.tenant):
				t.Errorf("%s: %+v, %v; want %s/%s", tc.name, id, err, tc.tenant, tc.user)
			case tc.user != "" && id.Claims["exp"] == nil:
				t.Errorf("%s: claims %v", tc.name, id.Claims)
			}
		}
		rt.Close(context.Background())
	}
}

// TestClaimsReachTheAuthorizers: Identity.Claims carries the token's
// claims to the Authorizer and the ChannelAuthorizer (roles).
func TestClaimsReachTheAuthorizers(t *testing.T) {
	hasRole := func(id *Identity, role string) bool {
		roles, _ := id.Claims["roles"].([]any)
		for _, r := range roles {
			if r == role {
				return true
			}
		}
		return false
	}
	_, srv := newTestServer(t, Config{
		Loader: identityEcho,
		Authorize: func(_ context.Context, a Access) error {
			if !hasRole(a.Identity, "reader") {
				return ErrForbidden
			}
			return nil
		},
		AuthorizeChannel: func(_ context.Context, a ChannelAccess) error {
			if a.Channel == "admin" && !hasRole(a.Identity, "admin") {
				return ErrForbidden
			}
			return nil
		},
	})
	reader := mintToken(t, testSecret, withClaims(validClaims("u1"), "roles", []string{"reader"}))
	admin := mintToken(t, testSecret, withClaims(validClaims("u2"), "roles", []string{"admin"}))
	if code, _, body := pollGet(t, srv.URL, pollPath("1", "timeout", "0"), reader, ""); code != 200 {
		t.Errorf("reader: %d %s", code, body)
	}
	if code, _, _ := pollGet(t, srv.URL, pollPath("1", "timeout", "0"), admin, ""); code != 403 {
		t.Errorf("admin without reader: %d", code)
	}
	if code, _, _ := history(t, srv, admin, "admin", ""); code != 200 {
		t.Errorf("admin history: %d", code)
	}
	if code, _, _ := history(t, srv, reader, "admin", ""); code != 403 {
		t.Errorf("reader's admin history: %d", code)
	}
}

// TestAuthConfigValidation: Identify, the claim names, their defaults.
func TestAuthConfigValidation(t *testing.T) {
	identify := func(*http.Request) (*Identity, error) { return nil, ErrUnauthorized }
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"Identify without a JWT key", Config{Identify: identify}, true},
		{"Identify, an algorithm but no key", Config{Identify: identify, JWTAlgorithms: []string{"RS256"}}, false},
		{"claim names", Config{JWTSecret: testSecret, JWTUserClaim: "uid", JWTTenantClaim: "org.id"}, true},
	} {
		rt, err := newNoPanic(tc.cfg)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
		if rt != nil {
			if tc.name == "Identify without a JWT key" {
				if _, err := rt.VerifyToken(mintToken(t, testSecret, validClaims("u1"))); !errors.Is(err, ErrUnauthorized) {
					t.Errorf("VerifyToken without a key: %v", err)
				}
				if rt.cfg.JWTUserClaim != "sub" || rt.cfg.JWTTenantClaim != "tenant" {
					t.Errorf("defaults: %+v", rt.cfg)
				}
			}
			rt.Close(context.Background())
		}
	}
}

// FuzzClaimPath: any claim name and any JSON claims: lookup never panics,
// the whole name as a top-level claim wins, and claimString accepts
// strings and integers only.
func FuzzClaimPath(f *testing.F) {
	f.Add("user_id", `{"user_id":"u1"}`)
	f.Add("a.b", `{"a":{"b":12}}`)
	f.Add("a.b", `{"a.b":"top","a":{"b":"nested"}}`)
	f.Add("a..b", `{"a":{"":{"b":1}}}`)
	f.Add("https://x.example/t", `{"https://x":{"example/t":1}}`)
	f.Add("a.b.c", `{"a":[{"b":1}],"x":1.5e3}`)
	f.Fuzz(func(t *testing.T, name, doc string) {
		cp, ok := parseClaimPath(name)
		if !ok {
			if name != "" {
				t.Fatalf("parseClaimPath(%q) refused", name)
			}
			return
		}
		var claims map[string]any
		dec := json.NewDecoder(strings.NewReader(doc))
		dec.UseNumber()
		if dec.Decode(&claims) != nil {
			return
		}
		v, ok := cp.lookup(claims)
		if top, present := claims[name]; present && (ok != (top != nil) || (ok && !sameJSON(v, top))) {
			t.Fatalf("lookup(%q) = %v, %v; the top-level claim is %v", name, v, ok, top)
		}
		if !ok {
			return
		}
		s, err := claimString(v)
		switch v.(type) {
		case string:
			if err != nil || s != v {
				t.Fatalf("claimString(%q) = %q, %v", v, s, err)
			}
		case json.Number:
		default:
			if err == nil {
				t.Fatalf("claimString(%T) = %q", v, s)
			}
		}
	})
}

// sameJSON compares two decoded JSON values.
func sameJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
