package main

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/golang-jwt/jwt/v5"
)

// TestTokensRefused: every route, REST and SSE, with the token in the
// Authorization header or in ?token=, answers 401 with WWW-Authenticate:
// Bearer and the same body whatever check failed.
func TestTokensRefused(t *testing.T) {
	e := newEnv(t)
	alice := token(t, "alice", "")
	p, _ := e.create(alice, "target", "", false)

	hour := time.Now().Add(time.Hour).Unix()
	sign := func(m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		t.Helper()
		s, err := jwt.NewWithClaims(m, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tokens := []struct{ name, tok string }{
		{"none", ""},
		{"expired", sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()})},
		{"no exp", sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice"})},
		{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": hour})},
		{"wrong signature", sign(jwt.SigningMethodHS256, []byte("another secret entirely, 32 byte"), jwt.MapClaims{"sub": "alice", "exp": hour})},
		{"wrong algorithm HS512", sign(jwt.SigningMethodHS512, testSecret, jwt.MapClaims{"sub": "alice", "exp": hour})},
		{"wrong algorithm RS256", sign(jwt.SigningMethodRS256, rsaKey, jwt.MapClaims{"sub": "alice", "exp": hour})},
		{"no sub", sign(jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"exp": hour})},
		{"not a JWT", "not-a-jwt"},
		{"tampered", tamper(t, alice)},
	}
	routes := []struct{ method, path, body string }{
		{"GET", "/api/v1/posts", ""},
		{"POST", "/api/v1/posts", `{"title":"sneaky"}`},
		{"GET", "/api/v1/posts/" + p.ID, ""},
		{"PATCH", "/api/v1/posts/" + p.ID, `{"title":"sneaky"}`},
		{"DELETE", "/api/v1/posts/" + p.ID, ""},
		{"GET", "/api/v1/posts/" + p.ID + "/subscribe", ""},
		{"GET", "/api/v1/posts/subscribe", ""},
		{"GET", "/api/v1/posts/" + p.ID + "/poll?timeout=0", ""},
	}
	var firstBody string
	for _, tk := range tokens {
		for _, rt := range routes {
			for _, via := range []string{"header", "query"} {
				if tk.tok == "" && via == "query" {
					continue
				}
				t.Run(tk.name+"/"+rt.method+" "+rt.path+"/"+via, func(t *testing.T) {
					var r response
					switch {
					case via == "query" && rt.method == "GET":
						r = e.refused(rt.path, tk.tok)
					case via == "query":
						r = e.do(rt.method, rt.path+"?token="+tk.tok, "", rt.body)
					default:
						r = e.do(rt.method, rt.path, tk.tok, rt.body)
					}
					wantStatus(t, tk.name, r, http.StatusUnauthorized)
					if wa := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer") {
						t.Errorf("WWW-Authenticate %q, want Bearer", wa)
					}
					if code := r.errorCode(t); code != "unauthorized" {
						t.Errorf("code %q, want unauthorized", code)
					}
					if firstBody == "" {
						firstBody = string(r.body)
					} else if string(r.body) != firstBody {
						t.Errorf("body %s differs from %s: a 401 must not say which check failed", r.body, firstBody)
					}
				})
			}
		}
	}

	// Nothing was written by the refused requests.
	r := e.do("GET", "/api/v1/posts/"+p.ID, alice, "")
	var got Post
	r.json(t, &got)
	if got.Title != "target" {
		t.Errorf("post changed by refused requests: %+v", got)
	}
	var list []Post
	e.do("GET", "/api/v1/posts", alice, "").json(t, &list)
	if len(list) != 1 {
		t.Errorf("%d posts, want 1: a refused POST created one", len(list))
	}
}

// tamper changes the payload of a valid token (its signature no longer matches).
func tamper(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(claims), `"alice"`, `"admin"`, 1)
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(forged))
	return strings.Join(parts, ".")
}

// TestTenantIsolation: a token of another tenant, even with the same sub,
// cannot read, change, delete or follow a post; the list does not show it.
func TestTenantIsolation(t *testing.T) {
	e := newEnv(t)
	owner := token(t, "alice", "acme")
	other := token(t, "alice", "globex")
	p, tag := e.create(owner, "acme only", "secret plans", false)
	path := "/api/v1/posts/" + p.ID

	for _, c := range []struct{ method, body string }{
		{"GET", ""}, {"PATCH", `{"title":"pwned"}`}, {"DELETE", ""},
	} {
		r := e.do(c.method, path, other, c.body)
		wantStatus(t, "other tenant "+c.method, r, http.StatusNotFound)
		if code := r.errorCode(t); code != "not_found" {
			t.Errorf("other tenant %s: code %q", c.method, code)
		}
	}
	r := e.refused(path+"/subscribe", other)
	wantStatus(t, "other tenant subscribe", r, http.StatusNotFound)
	r = e.do("GET", path+"/poll?timeout=0", other, "")
	wantStatus(t, "other tenant poll", r, http.StatusNotFound)

	var list []Post
	e.do("GET", "/api/v1/posts", other, "").json(t, &list)
	if len(list) != 0 {
		t.Errorf("other tenant lists %+v", list)
	}

	// Even knowing the ETag, the other tenant gets no data: its namespace has
	// no such record (resync, then deleted, as for any absent record).
	s := e.subscribe(path+"/subscribe", other, "Last-Event-ID", tag)
	for {
		f := s.next()
		if strings.Contains(f.data, "secret plans") || strings.Contains(f.data, "acme only") {
			t.Fatalf("other tenant received %s %s", f.event, f.data)
		}
		if f.event == realtime.EventDeleted {
			break
		}
	}
	s.close()

	// The owner still sees it, unchanged.
	r = e.do("GET", path, owner, "")
	wantStatus(t, "owner GET", r, http.StatusOK)
	if r.header.Get("ETag") != tag {
		t.Errorf("post changed by the other tenant: %s", r.body)
	}
}

// TestPrivatePost: only the author sees a private post: others get 404 over
// REST and 403 on subscribe, and the list hides it.
func TestPrivatePost(t *testing.T) {
	e := newEnv(t)
	alice := token(t, "alice", "")
	bob := token(t, "bob", "")
	p, tag := e.create(alice, "diary", "dear diary", true)
	path := "/api/v1/posts/" + p.ID

	for _, c := range []struct{ method, body string }{
		{"GET", ""}, {"PATCH", `{"private":false}`}, {"DELETE", ""},
	} {
		wantStatus(t, "bob "+c.method, e.do(c.method, path, bob, c.body), http.StatusNotFound)
	}
	r := e.refused(path+"/subscribe", bob)
	wantStatus(t, "bob subscribe", r, http.StatusForbidden)
	if code := r.errorCode(t); code != "forbidden" {
		t.Errorf("bob subscribe: code %q", code)
	}
	wantStatus(t, "bob poll", e.do("GET", path+"/poll?timeout=0", bob, ""), http.StatusForbidden)
	var list []Post
	e.do("GET", "/api/v1/posts", bob, "").json(t, &list)
	if len(list) != 0 {
		t.Errorf("bob lists %+v", list)
	}

	// Alice sees it everywhere.
	wantStatus(t, "alice GET", e.do("GET", path, alice, ""), http.StatusOK)
	s := e.subscribe(path+"/subscribe", alice)
	if f := s.next(); f.event != realtime.EventSnapshot || f.id != tag {
		t.Errorf("alice's first frame %s %s, want snapshot %s", f.event, f.id, tag)
	}
	e.do("GET", "/api/v1/posts", alice, "").json(t, &list)
	if len(list) != 1 || list[0].ID != p.ID {
		t.Errorf("alice lists %+v, want her private post", list)
	}
}
