package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	sse "github.com/tmaxmax/go-sse"
)

// TestSnapshotIDIsETag: the first frame of a record stream is the post as
// the REST API serves it, its id the REST ETag. No write is involved.
func TestSnapshotIDIsETag(t *testing.T) {
	e := newEnv(t)
	alice := token(t, "alice", "")
	p, tag := e.create(alice, "snap", "shot", false)
	r := e.do("GET", "/api/v1/posts/"+p.ID, alice, "")

	s := e.subscribe("/api/v1/posts/"+p.ID+"/subscribe", alice)
	f := s.next()
	if f.event != realtime.EventSnapshot || f.id != tag || f.id != r.header.Get("ETag") {
		t.Fatalf("first frame %s id %s, want snapshot with the REST ETag %s", f.event, f.id, tag)
	}
	if !sameJSON(t, []byte(f.data), r.body) {
		t.Errorf("snapshot data %s, want the REST body %s", f.data, r.body)
	}

	// A client that fetched over REST may resume from its ETag: it is up to
	// date, so there is nothing to send.
	r = e.do("GET", "/api/v1/posts/"+p.ID+"/poll?timeout=0&lastEventId="+tag, alice, "")
	wantStatus(t, "poll from ETag", r, http.StatusOK)
	if strings.TrimSpace(string(r.body)) != `{"events":[]}` {
		t.Errorf("poll from the current ETag: %s, want no events (up to date)", r.body)
	}
}

// TestETagEqualsSSEID is the product's promise: for every version of a post,
// the ETag header of the REST write equals the id of the event the GORM hook
// publishes for it, so a client can use either for If-Match, If-None-Match
// and Last-Event-ID. (Needs the GORM hook.)
func TestETagEqualsSSEID(t *testing.T) {
	e := newEnv(t)
	alice := token(t, "alice", "")
	p, tag0 := e.create(alice, "v0", "", false)
	path := "/api/v1/posts/" + p.ID

	s := e.subscribe(path+"/subscribe", alice)
	if f := s.next(); f.event != realtime.EventSnapshot || f.id != tag0 {
		t.Fatalf("first frame %s %s, want snapshot %s", f.event, f.id, tag0)
	}
	coll := e.subscribe("/api/v1/posts/subscribe", alice)

	prev := tag0
	for i, body := range []string{`{"title":"v1"}`, `{"body":"more"}`, `{"private":true}`, `{"title":"v4","private":false}`} {
		// Each write is conditioned on the id of the last event received.
		r := e.do("PATCH", path, alice, body, "If-Match", prev)
		wantStatus(t, "PATCH "+body, r, http.StatusOK)
		tag := r.header.Get("ETag")

		f := s.next()
		if f.event != realtime.EventChanged || f.id != tag {
			t.Fatalf("PATCH %d: frame %s id %s, want changed with the response's ETag %s", i, f.event, f.id, tag)
		}
		if !sameJSON(t, []byte(f.data), r.body) {
			t.Errorf("PATCH %d: event data %s, want the response body %s", i, f.data, r.body)
		}
		if cf := coll.next(); cf.event != realtime.EventChanged || cf.id != tag {
			t.Errorf("PATCH %d: collection frame %s %s, want changed %s", i, cf.event, cf.id, tag)
		}
		// And the SSE id works as If-None-Match.
		wantStatus(t, "If-None-Match SSE id", e.do("GET", path, alice, "", "If-None-Match", f.id), http.StatusNotModified)
		prev = tag
	}

	// A post created while following the collection: snapshot with the POST's ETag.
	q, qtag := e.create(alice, "another", "", false)
	if f := coll.next(); f.event != realtime.EventSnapshot || f.id != qtag || f.recordID(t) != q.ID {
		t.Errorf("collection frame %s %s, want snapshot of the new post with ETag %s", f.event, f.id, qtag)
	}

	// Delete: a deleted frame with only the id, and a tombstone ETag.
	wantStatus(t, "DELETE", e.do("DELETE", path, alice, "", "If-Match", prev), http.StatusNoContent)
	f := s.next()
	if f.event != realtime.EventDeleted || f.data != `{"id":"`+p.ID+`"}` || !f.hasID || f.id == prev {
		t.Fatalf("after DELETE: %s id %s data %s, want deleted {\"id\":…} with a tombstone id", f.event, f.id, f.data)
	}
	if f.id != realtime.TombstoneETag(collection, p.ID) {
		t.Errorf("deleted id %s, want the tombstone ETag", f.id)
	}
}

// TestResumeAfterDisconnect: tmaxmax/go-sse's client, cut off by the network,
// reconnects with Last-Event-ID and receives the change it missed: no
// resync, no duplicate. (Needs the GORM hook.)
func TestResumeAfterDisconnect(t *testing.T) {
	e := newEnv(t)
	alice := token(t, "alice", "")
	p, tag0 := e.create(alice, "resume", "", false)
	path := "/api/v1/posts/" + p.ID

	// A transport whose connections the test can cut.
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	}}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", e.srv.URL+path+"/subscribe?token="+alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &sse.Client{HTTPClient: &http.Client{Transport: tr}, Backoff: sse.Backoff{InitialInterval: 50 * time.Millisecond}}
	conn := client.NewConnection(req)
	events := make(chan sse.Event, 16)
	conn.SubscribeToAll(func(ev sse.Event) {
		if ev.Type != "" || ev.Data != "" { // not the retry-only block
			events <- ev
		}
	})
	done := make(chan error, 1)
	go func() { done <- conn.Connect() }()
	defer func() {
		cancel()
		<-done
	}()
	next := func() sse.Event {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case err := <-done:
			t.Fatalf("client stopped: %v", err)
		case <-ctx.Done():
			t.Fatal("no event before the hang guard")
		}
		return sse.Event{}
	}

	if ev := next(); ev.Type != realtime.EventSnapshot || ev.LastEventID != tag0 {
		t.Fatalf("first event %s %s, want snapshot %s", ev.Type, ev.LastEventID, tag0)
	}
	// Cut the connection, then write while the client is away (or
	// reconnecting: either way it must get the change exactly once).
	mu.Lock()
	conns[len(conns)-1].Close()
	mu.Unlock()
	r := e.do("PATCH", path, alice, `{"title":"missed"}`)
	wantStatus(t, "PATCH", r, http.StatusOK)
	tag1 := r.header.Get("ETag")

	if ev := next(); ev.Type != realtime.EventChanged || ev.LastEventID != tag1 || !strings.Contains(ev.Data, `"missed"`) {
		t.Fatalf("after reconnect: %s %s %s, want changed %s", ev.Type, ev.LastEventID, ev.Data, tag1)
	}
	// A marker write: the next event is its change, so nothing came in between.
	r = e.do("PATCH", path, alice, `{"title":"marker"}`)
	tag2 := r.header.Get("ETag")
	if ev := next(); ev.Type != realtime.EventChanged || ev.LastEventID != tag2 {
		t.Fatalf("then %s %s, want changed %s (no resync, no duplicate)", ev.Type, ev.LastEventID, tag2)
	}
	mu.Lock()
	n := len(conns)
	mu.Unlock()
	if n < 2 {
		t.Errorf("%d connections: the client did not reconnect", n)
	}
}

// TestPrivateOnCollectionStream: a subscriber of the collection who is not
// the author never receives a private post's frames (snapshot, changed,
// deleted), while it receives the other posts'; the author receives them
// all. (Needs the GORM hook.)
func TestPrivateOnCollectionStream(t *testing.T) {
	e := newEnv(t)
	alice := token(t, "alice", "")
	bob := token(t, "bob", "")
	aliceStream := e.subscribe("/api/v1/posts/subscribe", alice)
	bobStream := e.subscribe("/api/v1/posts/subscribe", bob)

	secret, _ := e.create(alice, "secret", "shh", true)
	public, _ := e.create(alice, "public", "hi", false)
	wantStatus(t, "PATCH secret", e.do("PATCH", "/api/v1/posts/"+secret.ID, alice, `{"body":"still shh"}`), http.StatusOK)
	wantStatus(t, "PATCH public", e.do("PATCH", "/api/v1/posts/"+public.ID, alice, `{"body":"hello"}`), http.StatusOK)
	wantStatus(t, "DELETE secret", e.do("DELETE", "/api/v1/posts/"+secret.ID, alice, ""), http.StatusNoContent)
	marker, _ := e.create(alice, "marker", "", false)

	type seen struct{ event, id string }
	read := func(s *stream) []seen {
		var out []seen
		for {
			f := s.next()
			out = append(out, seen{f.event, f.recordID(t)})
			if f.recordID(t) == marker.ID {
				return out
			}
		}
	}
	// The collection stream is ordered: reaching the marker (published last)
	// means every earlier frame was either received or skipped.
	gotBob := read(bobStream)
	wantBob := []seen{{"snapshot", public.ID}, {"changed", public.ID}, {"snapshot", marker.ID}}
	if !equalSeen(gotBob, wantBob) {
		t.Errorf("bob's collection frames %v, want %v (nothing of the private post)", gotBob, wantBob)
	}
	gotAlice := read(aliceStream)
	wantAlice := []seen{{"snapshot", secret.ID}, {"snapshot", public.ID}, {"changed", secret.ID}, {"changed", public.ID}, {"deleted", secret.ID}, {"snapshot", marker.ID}}
	if !equalSeen(gotAlice, wantAlice) {
		t.Errorf("alice's collection frames %v, want %v", gotAlice, wantAlice)
	}
}

func equalSeen[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPostTurningPrivate: a reader following a public post is cut off when
// the author makes it private (the change is not sent), and cannot come back.
// (Needs the GORM hook.)
func TestPostTurningPrivate(t *testing.T) {
	e := newEnv(t)
	alice := token(t, "alice", "")
	bob := token(t, "bob", "")
	p, tag := e.create(alice, "soon private", "", false)
	path := "/api/v1/posts/" + p.ID

	s := e.subscribe(path+"/subscribe", bob)
	if f := s.next(); f.event != realtime.EventSnapshot || f.id != tag {
		t.Fatalf("bob's first frame %s %s, want snapshot %s", f.event, f.id, tag)
	}
	wantStatus(t, "make private", e.do("PATCH", path, alice, `{"private":true,"body":"now secret"}`), http.StatusOK)
	s.expectEnd()

	r := e.refused(path+"/subscribe", bob, "Last-Event-ID", tag)
	wantStatus(t, "bob resubscribes", r, http.StatusForbidden)
}

// TestTenantCollectionStreams: collection streams of two tenants never mix,
// even for the same user name. (Needs the GORM hook.)
func TestTenantCollectionStreams(t *testing.T) {
	e := newEnv(t)
	acme := token(t, "alice", "acme")
	globex := token(t, "alice", "globex")
	gs := e.subscribe("/api/v1/posts/subscribe", globex)

	a, _ := e.create(acme, "acme post", "", false)
	wantStatus(t, "PATCH", e.do("PATCH", "/api/v1/posts/"+a.ID, acme, `{"title":"acme edit"}`), http.StatusOK)
	wantStatus(t, "DELETE", e.do("DELETE", "/api/v1/posts/"+a.ID, acme, ""), http.StatusNoContent)
	g, gtag := e.create(globex, "globex post", "", false)

	if f := gs.next(); f.event != realtime.EventSnapshot || f.id != gtag || f.recordID(t) != g.ID {
		t.Errorf("globex's first collection frame %s %s %s, want its own post's snapshot", f.event, f.id, f.data)
	}
}
