package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestHealthz(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/healthz", "", "")
	wantStatus(t, "healthz", r, http.StatusOK)

	// Once the app is closing it stops answering ready.
	if err := e.app.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	r = e.do("GET", "/healthz", "", "")
	wantStatus(t, "healthz after Close", r, http.StatusServiceUnavailable)
}

func TestIndexPage(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/", "", "")
	wantStatus(t, "GET /", r, http.StatusOK)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type %q, want text/html", ct)
	}
	for _, want := range []string{`from "/api/v1/realtime.js"`, "new Realtime(", `rt.record("posts"`, `rt.collection("posts"`, "token"} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("page does not contain %q", want)
		}
	}

	// The client module it imports is served without a token, with an ETag.
	js := e.do("GET", "/api/v1/realtime.js", "", "")
	wantStatus(t, "GET /api/v1/realtime.js", js, http.StatusOK)
	if ct := js.header.Get("Content-Type"); ct != "text/javascript; charset=utf-8" {
		t.Errorf("realtime.js Content-Type %q", ct)
	}
	if !strings.Contains(string(js.body), "export class Realtime") || js.header.Get("ETag") == "" {
		t.Errorf("realtime.js: %d bytes, ETag %q", len(js.body), js.header.Get("ETag"))
	}
}

// TestCRUD walks a post through its life over REST: statuses, ETags,
// conditional GET (304) and conditional writes (412).
func TestCRUD(t *testing.T) {
	e := newEnv(t)
	alice := token(t, "alice", "acme")

	// Create: 201, the record with its server-set fields, an ETag.
	r := e.do("POST", "/api/v1/posts", alice, `{"title":"Hello","body":"World"}`)
	wantStatus(t, "create", r, http.StatusCreated)
	var p Post
	r.json(t, &p)
	if p.ID == "" || p.Title != "Hello" || p.Body != "World" || p.Private || p.Author != "alice" || p.CreatedAt.IsZero() || p.UpdatedAt.IsZero() {
		t.Fatalf("created %+v: want id, the input, author alice, timestamps", p)
	}
	var raw map[string]any
	r.json(t, &raw)
	for _, k := range []string{"id", "title", "body", "private", "author"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("record JSON %s has no %q", r.body, k)
		}
	}
	if _, ok := raw["tenant"]; ok {
		t.Errorf("record JSON %s exposes the tenant", r.body)
	}
	tag1 := r.header.Get("ETag")
	if len(tag1) < 3 || tag1[0] != '"' || tag1[len(tag1)-1] != '"' {
		t.Fatalf("ETag %q is not a strong entity tag", tag1)
	}
	path := "/api/v1/posts/" + p.ID
	if loc := r.header.Get("Location"); loc != path {
		t.Errorf("Location %q, want %q", loc, path)
	}

	// Read: 200 with the same ETag and record.
	r = e.do("GET", path, alice, "")
	wantStatus(t, "get", r, http.StatusOK)
	if got := r.header.Get("ETag"); got != tag1 {
		t.Errorf("GET ETag %q, want the create's %q", got, tag1)
	}
	var got Post
	r.json(t, &got)
	if got != p {
		t.Errorf("GET %+v, want %+v", got, p)
	}

	// Conditional GET.
	for _, c := range []struct {
		inm  string
		want int
	}{
		{tag1, http.StatusNotModified},
		{"W/" + tag1, http.StatusNotModified}, // If-None-Match compares weakly
		{`"other", ` + tag1, http.StatusNotModified},
		{"*", http.StatusNotModified},
		{`"other"`, http.StatusOK},
	} {
		r = e.do("GET", path, alice, "", "If-None-Match", c.inm)
		wantStatus(t, "If-None-Match "+c.inm, r, c.want)
		if r.header.Get("ETag") != tag1 {
			t.Errorf("If-None-Match %s: ETag %q, want %q", c.inm, r.header.Get("ETag"), tag1)
		}
		if c.want == http.StatusNotModified && len(r.body) != 0 {
			t.Errorf("304 with a body: %q", r.body)
		}
	}

	// Update with the current ETag: 200, only the given field changes, new ETag.
	r = e.do("PATCH", path, alice, `{"title":"Hello again"}`, "If-Match", tag1)
	wantStatus(t, "patch", r, http.StatusOK)
	var upd Post
	r.json(t, &upd)
	tag2 := r.header.Get("ETag")
	if upd.Title != "Hello again" || upd.Body != "World" || upd.Author != "alice" || upd.ID != p.ID || !upd.CreatedAt.Equal(p.CreatedAt) {
		t.Errorf("patched %+v: want the new title and everything else kept", upd)
	}
	if tag2 == "" || tag2 == tag1 {
		t.Fatalf("PATCH ETag %q, want a new one (was %q)", tag2, tag1)
	}
	if r = e.do("GET", path, alice, ""); r.header.Get("ETag") != tag2 {
		t.Errorf("GET after PATCH: ETag %q, want %q", r.header.Get("ETag"), tag2)
	}
	// The old version no longer answers 304.
	wantStatus(t, "If-None-Match old", e.do("GET", path, alice, "", "If-None-Match", tag1), http.StatusOK)

	// A stale If-Match: 412 and nothing changes.
	r = e.do("PATCH", path, alice, `{"title":"lost update"}`, "If-Match", tag1)
	wantStatus(t, "stale PATCH", r, http.StatusPreconditionFailed)
	if code := r.errorCode(t); code != "precondition_failed" {
		t.Errorf("412 code %q", code)
	}
	r = e.do("GET", path, alice, "")
	r.json(t, &got)
	if got.Title != "Hello again" || r.header.Get("ETag") != tag2 {
		t.Errorf("after a refused PATCH: %+v %s, want it unchanged", got, r.header.Get("ETag"))
	}

	// If-Match is optional; "*" matches any current version; false is a value.
	r = e.do("PATCH", path, alice, `{"private":true,"body":""}`)
	wantStatus(t, "patch without If-Match", r, http.StatusOK)
	r.json(t, &got)
	if !got.Private || got.Body != "" || got.Title != "Hello again" {
		t.Errorf("patched %+v: want private, empty body, title kept", got)
	}
	tag3 := r.header.Get("ETag")
	r = e.do("PATCH", path, alice, `{"private":false}`, "If-Match", "*")
	wantStatus(t, "patch If-Match *", r, http.StatusOK)
	r.json(t, &got)
	if got.Private {
		t.Errorf("patched %+v: want private false", got)
	}
	tag4 := r.header.Get("ETag")
	if tag4 == tag3 {
		t.Errorf("ETag unchanged by a change")
	}
	// An empty patch changes nothing (same version).
	r = e.do("PATCH", path, alice, `{}`)
	wantStatus(t, "empty patch", r, http.StatusOK)
	if r.header.Get("ETag") != tag4 {
		t.Errorf("empty PATCH: ETag %q, want the unchanged %q", r.header.Get("ETag"), tag4)
	}

	// Delete: a stale If-Match is refused, then 204, then it is gone.
	wantStatus(t, "stale DELETE", e.do("DELETE", path, alice, "", "If-Match", tag1), http.StatusPreconditionFailed)
	r = e.do("DELETE", path, alice, "", "If-Match", tag4)
	wantStatus(t, "delete", r, http.StatusNoContent)
	if len(r.body) != 0 {
		t.Errorf("204 with a body %q", r.body)
	}
	for _, c := range []struct{ method, body string }{{"GET", ""}, {"PATCH", `{"title":"x"}`}, {"DELETE", ""}} {
		r = e.do(c.method, path, alice, c.body)
		wantStatus(t, c.method+" after delete", r, http.StatusNotFound)
		if code := r.errorCode(t); code != "not_found" {
			t.Errorf("%s after delete: code %q", c.method, code)
		}
	}
}

func TestList(t *testing.T) {
	e := newEnv(t)
	alice := token(t, "alice", "acme")
	var empty []Post
	r := e.do("GET", "/api/v1/posts", alice, "")
	wantStatus(t, "list", r, http.StatusOK)
	r.json(t, &empty)
	if empty == nil || len(empty) != 0 {
		t.Fatalf("empty list: %s, want []", r.body)
	}
	first, _ := e.create(alice, "first", "", false)
	second, _ := e.create(alice, "second", "", true) // private, but alice's own
	var list []Post
	e.do("GET", "/api/v1/posts", alice, "").json(t, &list)
	if len(list) != 2 || list[0].ID != second.ID || list[1].ID != first.ID {
		t.Fatalf("list %+v: want [second, first] (newest first)", list)
	}
}

// TestBadInput: malformed bodies answer 400 with the contract's error JSON
// and change nothing.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	alice := token(t, "alice", "")
	p, tag := e.create(alice, "keep me", "as is", false)
	path := "/api/v1/posts/" + p.ID
	long := `{"title":"` + strings.Repeat("x", maxTitle+1) + `"}`
	cases := []struct {
		name, method, path, body string
	}{
		{"create: not JSON", "POST", "/api/v1/posts", `title=x`},
		{"create: truncated", "POST", "/api/v1/posts", `{"title":`},
		{"create: array", "POST", "/api/v1/posts", `[{"title":"x"}]`},
		{"create: null", "POST", "/api/v1/posts", `null`},
		{"create: wrong type", "POST", "/api/v1/posts", `{"title":5}`},
		{"create: private not a bool", "POST", "/api/v1/posts", `{"title":"x","private":"yes"}`},
		{"create: no title", "POST", "/api/v1/posts", `{"body":"x"}`},
		{"create: blank title", "POST", "/api/v1/posts", `{"title":"   "}`},
		{"create: title too long", "POST", "/api/v1/posts", long},
		{"create: trailing data", "POST", "/api/v1/posts", `{"title":"x"} {"title":"y"}`},
		{"create: empty body", "POST", "/api/v1/posts", ``},
		{"patch: not JSON", "PATCH", path, `nope`},
		{"patch: wrong type", "PATCH", path, `{"body":["x"]}`},
		{"patch: blank title", "PATCH", path, `{"title":""}`},
		{"patch: string", "PATCH", path, `"title"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(c.method, c.path, alice, c.body)
			wantStatus(t, c.name, r, http.StatusBadRequest)
			if code := r.errorCode(t); code != "bad_request" {
				t.Errorf("code %q, want bad_request", code)
			}
		})
	}
	// A body over the cap: 413 with the contract's error.
	huge := `{"title":"x","body":"` + strings.Repeat("a", maxBodyBytes) + `"}`
	r := e.do("POST", "/api/v1/posts", alice, huge)
	wantStatus(t, "huge body", r, http.StatusRequestEntityTooLarge)
	if code := r.errorCode(t); code != "too_large" {
		t.Errorf("huge body: code %q, want too_large", code)
	}

	var list []Post
	e.do("GET", "/api/v1/posts", alice, "").json(t, &list)
	if len(list) != 1 {
		t.Errorf("%d posts after bad input, want the 1 created", len(list))
	}
	if r := e.do("GET", path, alice, ""); r.header.Get("ETag") != tag {
		t.Errorf("post changed by bad input: %s", r.body)
	}
}

// TestRoutesCoexist: the app's GET /api/v1/posts/:id and the plugin's
// routes under the same prefix each answer their own requests.
func TestRoutesCoexist(t *testing.T) {
	e := newEnv(t)
	alice := token(t, "alice", "")
	p, tag := e.create(alice, "both", "", false)

	// The app's handler.
	r := e.do("GET", "/api/v1/posts/"+p.ID, alice, "")
	wantStatus(t, "app GET /posts/:id", r, http.StatusOK)
	if !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Errorf("GET /posts/:id: Content-Type %q", r.header.Get("Content-Type"))
	}

	// The plugin's record stream: its first frame is the post.
	s := e.subscribe("/api/v1/posts/"+p.ID+"/subscribe", alice)
	if f := s.next(); f.event != "snapshot" || f.id != tag {
		t.Errorf("record stream: %s %s, want snapshot %s", f.event, f.id, tag)
	}
	s.close()

	// The plugin's collection stream (not the app's :id handler with id "subscribe").
	e.subscribe("/api/v1/posts/subscribe", alice).close()

	// The plugin's long poll.
	r = e.do("GET", "/api/v1/posts/"+p.ID+"/poll?timeout=0", alice, "")
	wantStatus(t, "poll", r, http.StatusOK)
	var poll struct {
		Events []struct {
			Event string          `json:"event"`
			ID    string          `json:"id"`
			Data  json.RawMessage `json:"data"`
		} `json:"events"`
	}
	r.json(t, &poll)
	if len(poll.Events) != 1 || poll.Events[0].Event != "snapshot" || poll.Events[0].ID != tag {
		t.Errorf("poll %s: want one snapshot with id %s", r.body, tag)
	}

	// Unknown paths are still the contract's 404.
	r = e.do("GET", "/api/v1/posts/"+p.ID+"/nope", alice, "")
	wantStatus(t, "unknown route", r, http.StatusNotFound)
}
