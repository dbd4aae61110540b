package realtime

// End to end, two apps wired as the README says: one whose callers are
// identified by its own session cookie (Config.Identify, the
// gin-contrib/sessions way: the store read with the request), one whose
// tokens carry user_id and tenant_id (claim mapping), each over SSE, the
// WebSocket and Notify.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// memSession and memStore stand in for gin-contrib/sessions' store (whose
// Get(r, name) is gorilla's): sessions on the server, a random id in the
// cookie named after the session.
type memSession struct{ Values map[any]any }

type memStore struct {
	mu sync.Mutex
	m  map[string]*memSession
}

func (s *memStore) Get(r *http.Request, name string) (*memSession, error) {
	ck, err := r.Cookie(name)
	if err != nil {
		return &memSession{Values: map[any]any{}}, nil // a new, empty session
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess, ok := s.m[ck.Value]; ok {
		return sess, nil
	}
	return &memSession{Values: map[any]any{}}, nil
}

func (s *memStore) login(w http.ResponseWriter, name string, values map[any]any) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	s.mu.Lock()
	s.m[id] = &memSession{Values: values}
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: name, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

func (s *memStore) logout(r *http.Request, name string) {
	if ck, err := r.Cookie(name); err == nil {
		s.mu.Lock()
		delete(s.m, ck.Value)
		s.mu.Unlock()
	}
}

// sessionApp is the README's session example.
func sessionApp(t *testing.T) (*Plugin, *httptest.Server, *recordStore) {
	store := &memStore{m: map[string]*memSession{}}
	records := newRecordStore()
	rt, err := New(Config{
		Loader: records.Load,
		Identify: func(r *http.Request) (*Identity, error) {
			s, err := store.Get(r, "app")
			if err != nil {
				return nil, ErrUnauthorized
			}
			user, _ := s.Values["user"].(string)
			tenant, _ := s.Values["tenant"].(string)
			if user == "" {
				return nil, ErrUnauthorized
			}
			scopes, _ := s.Values["scopes"].([]string)
			return &Identity{User: user, Tenant: tenant, Scopes: scopes}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	r.POST("/login", func(c *gin.Context) { // the app's own login
		store.login(c.Writer, "app", map[any]any{"user": c.PostForm("user"), "tenant": c.PostForm("tenant"), "scopes": []string{ScopePublish}})
		c.Status(http.StatusNoContent)
	})
	api := r.Group("/api/v1", rt.Authenticate())
	api.POST("/logout", func(c *gin.Context) {
		store.logout(c.Request, "app")
		c.Status(http.StatusNoContent)
	})
	api.GET("/me", func(c *gin.Context) {
		id, _ := IdentityFrom(c)
		c.JSON(http.StatusOK, gin.H{"user": id.User, "tenant": id.Tenant})
	})
	rt.RegisterCollection(api, "posts")
	srv := httptest.NewServer(r)
	t.Cleanup(func() { closeAll(t, rt, srv) })
	return rt, srv, records
}

func TestIdentifySessionApp(t *testing.T) {
	rt, srv, records := sessionApp(t)
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	if _, err := client.PostForm(srv.URL+"/login", url.Values{"user": {"alice@example.com"}, "tenant": {"acme"}}); err != nil {
		t.Fatal(err)
	}
	ctx := WithTenant(context.Background(), "acme")
	records.put(Ref{Tenant: "acme", Collection: "posts", ID: "1"}, map[string]any{"id": "1", "v": 1})

	// Without the session: 401, and 4401 on the WebSocket.
	if resp := getWith(t, srv.URL+"/api/v1/me", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no session: %d", resp.StatusCode)
	}
	expectRefusal(t, srv, "", nil, closeUnauthorized, "unauthorized")

	// SSE with the session cookie: the snapshot of acme's record, then a change.
	s := openStream(t, client, recordURL(srv, "1"), "", nil)
	if f := readFrames(t, s.fr, 1)[0]; f.Event != EventSnapshot || !strings.Contains(f.Data, `"v":1`) {
		t.Fatalf("first frame %+v", f)
	}
	if _, err := rt.Changed(ctx, "posts", "1", map[string]any{"id": "1", "v": 2}); err != nil {
		t.Fatal(err)
	}
	if f := readFrames(t, s.fr, 1)[0]; f.Event != EventChanged || !strings.Contains(f.Data, `"v":2`) {
		t.Fatalf("second frame %+v", f)
	}

	// The WebSocket with the same cookie, and a push to the user.
	d := websocket.Dialer{HandshakeTimeout: hangGuard, Jar: jar}
	c, _, err := d.Dial(wsURL(srv), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if f := expectType(t, c, "connected"); f.User != "alice@example.com" || f.Tenant != "acme" {
		t.Fatalf("connected %s", f.raw)
	}
	if res := notify(t, rt, Notification{Tenant: "acme", Users: []string{"alice@example.com"}, Event: "hello"}); res.Delivered != 1 {
		t.Fatalf("notify: %+v", res)
	}
	expectMessage(t, c, "hello")

	// POST /notify with the session: from the app's own page only.
	post := func(origin string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/notify", strings.NewReader(`{"users":["alice@example.com"],"event":"posted"}`))
		req.Header.Set("Origin", origin)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("https://evil.example"); code != http.StatusForbidden {
		t.Fatalf("cross-site notify: %d", code)
	}
	if code := post(srv.URL); code != http.StatusOK {
		t.Fatalf("same-origin notify: %d", code)
	}
	expectMessage(t, c, "posted")

	// After logout the session is gone.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/logout", nil)
	req.Header.Set("Origin", srv.URL)
	if resp, err := client.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %v %v", resp, err)
	}
	resp, err := client.Get(srv.URL + "/api/v1/posts/1/poll?timeout=0")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("poll after logout: %d", resp.StatusCode)
	}
}

func TestClaimMappingApp(t *testing.T) {
	records := newRecordStore()
	rt, srv := newTestServer(t, Config{
		Loader:         records.Load,
		JWTUserClaim:   "user_id",
		JWTTenantClaim: "tenant_id",
		Authorize: func(_ context.Context, a Access) error {
			roles, _ := a.Identity.Claims["roles"].([]any)
			if slices.Contains(roles, any("editor")) {
				return nil
			}
			return ErrForbidden
		},
	})
	tok := func(roles ...string) string {
		return mintToken(t, testSecret, jwt.MapClaims{"user_id": 42, "tenant_id": "acme", "roles": roles, "exp": time.Now().Add(time.Hour).Unix()})
	}
	records.put(Ref{Tenant: "acme", Collection: "posts", ID: "1"}, map[string]any{"id": "1"})
	editor := tok("editor")
	s := openStream(t, nil, recordURL(srv, "1"), editor, nil)
	if f := readFrames(t, s.fr, 1)[0]; f.Event != EventSnapshot {
		t.Fatalf("first frame %+v", f)
	}
	if resp := getWith(t, recordURL(srv, "1"), tok("viewer"), nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("without the role: %d", resp.StatusCode)
	}
	c, f := connectWS(t, srv, editor)
	if f.User != "42" || f.Tenant != "acme" {
		t.Fatalf("connected %s", f.raw)
	}
	if res := notify(t, rt, Notification{Tenant: "acme", Users: []string{"42"}, Event: "hello"}); res.Delivered != 1 {
		t.Fatalf("notify: %+v", res)
	}
	expectMessage(t, c, "hello")
	// The same token with a sub and no user_id is refused.
	if resp := getWith(t, recordURL(srv, "1"), mintToken(t, testSecret, validClaims("42")), nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("sub only: %d", resp.StatusCode)
	}
}

// TestConnectionKeepsClaimsOnlyWhenRead: a connection keeps its
// identity's Claims when an Authorizer or a ChannelAuthorizer may read
// them, and drops them otherwise (memory per connection); the identity the
// request's context holds for the app keeps them either way.
func TestConnectionKeepsClaimsOnlyWhenRead(t *testing.T) {
	id := &Identity{User: "u1", Tenant: "t1", Claims: map[string]any{"role": "admin"}}
	allow := func(context.Context, Access) error { return nil }
	for _, c := range []struct {
		name string
		cfg  Config
		keep bool
	}{
		{"no callback", Config{}, false},
		{"Authorize", Config{Authorize: allow}, true},
		{"AuthorizeChannel", Config{AuthorizeChannel: func(context.Context, ChannelAccess) error { return nil }}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &Plugin{cfg: c.cfg}
			got := p.kept(id)
			if (got.Claims != nil) != c.keep {
				t.Fatalf("kept claims: %v, want %v", got.Claims != nil, c.keep)
			}
			if got.User != "u1" || got.Tenant != "t1" || id.Claims == nil {
				t.Fatalf("kept %+v from %+v", got, id)
			}
		})
	}
}
