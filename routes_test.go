package realtime

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

// decodeJSON decodes resp's body into v, failing t on an error.
func decodeJSON(t testing.TB, resp *http.Response, v any) {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
}

// checkStreamHead checks the §3 response head of a stream and returns a
// reader positioned after the retry line, which must come first.
func checkStreamHead(t testing.TB, resp *http.Response, retry string) *frameReader {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d, body %s", resp.StatusCode, b)
	}
	for k, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	fr := newFrameReader(resp.Body)
	guard := timeGuard(resp.Body)
	defer guard.Stop()
	first, err := fr.next()
	if err != nil {
		t.Fatalf("first block: %v", err)
	}
	if first.Retry != retry || first.isEvent() {
		t.Fatalf("first block = %+v, want only retry: %s", first, retry)
	}
	return fr
}

// TestRoutesCoexistWithAppRoute: the app's own GET /api/v1/posts/:id and the
// plugin's per-collection routes answer side by side (gin does not
// backtrack, NOTES.md): /posts/42 is the app's, /posts/42/subscribe the
// record stream, /posts/subscribe the collection stream, and poll and
// publish are reachable too.
func TestRoutesCoexistWithAppRoute(t *testing.T) {
	store := newRecordStore()
	rec := json.RawMessage(`{"id":"42","title":"hello"}`)
	store.put(Ref{Collection: "posts", ID: "42"}, rec)
	rt, srv := newTestServer(t, Config{Loader: store.Load})
	tok := userToken(t, "u1")
	etag, err := rt.ETag("posts", "42", rec)
	if err != nil {
		t.Fatal(err)
	}

	// The app's handler.
	resp := getWith(t, srv.URL+"/api/v1/posts/42", tok, nil)
	var app map[string]string
	decodeJSON(t, resp, &app)
	if resp.StatusCode != 200 || resp.Header.Get("X-Handler") != "app" || app["handler"] != "app" || app["id"] != "42" {
		t.Fatalf("GET /posts/42: status %d, body %v: want the app's handler", resp.StatusCode, app)
	}

	// The record stream: retry first, then the snapshot.
	rs := getWith(t, srv.URL+"/api/v1/posts/42/subscribe", tok, nil)
	rfr := checkStreamHead(t, rs, "2000")
	got := readFrames(t, rfr, 1)[0]
	if got.Event != EventSnapshot || got.ID != etag || got.Data != string(rec) {
		t.Fatalf("record stream first frame = %+v, want snapshot %s %s", got, etag, rec)
	}

	// The collection stream: no snapshot, then the events of every record.
	cs := getWith(t, srv.URL+"/api/v1/posts/subscribe", tok, nil)
	cfr := checkStreamHead(t, cs, "2000")
	rec7 := json.RawMessage(`{"id":"7","title":"seven"}`)
	etag7, err := rt.Changed(context.Background(), "posts", "7", rec7)
	if err != nil {
		t.Fatal(err)
	}
	etag42, err := rt.Changed(context.Background(), "posts", "42", json.RawMessage(`{"id":"42","title":"v2"}`))
	if err != nil {
		t.Fatal(err)
	}
	fs := readFrames(t, cfr, 2)
	if fs[0].Event != EventChanged || fs[0].ID != etag7 || fs[0].Data != string(rec7) ||
		fs[1].Event != EventChanged || fs[1].ID != etag42 {
		t.Fatalf("collection stream = %+v, want changed %s then changed %s", fs, etag7, etag42)
	}
	if got := readFrames(t, rfr, 1)[0]; got.Event != EventChanged || got.ID != etag42 {
		t.Fatalf("record stream second frame = %+v, want changed %s", got, etag42)
	}

	// Poll and publish reach the plugin, not the app.
	pr := getWith(t, srv.URL+"/api/v1/posts/42/poll?timeout=0&lastEventId="+url.QueryEscape(etag42), tok, nil)
	var poll struct{ Events []json.RawMessage }
	decodeJSON(t, pr, &poll)
	if pr.StatusCode != 200 || poll.Events == nil || len(poll.Events) != 0 {
		t.Fatalf("poll: status %d, events %v", pr.StatusCode, poll.Events)
	}
	pub := postJSON(t, srv.URL+"/api/v1/posts/42/events", publisherToken(t), `{"event":"deleted"}`)
	if pub.StatusCode != http.StatusAccepted {
		t.Fatalf("publish: status %d", pub.StatusCode)
	}
}

// TestRegisterGeneric: Register mounts the generic routes for any collection
// of a group without app routes of its own.
func TestRegisterGeneric(t *testing.T) {
	store := newRecordStore()
	rec := json.RawMessage(`{"id":"1","body":"c"}`)
	store.put(Ref{Collection: "comments", ID: "1"}, rec)
	rt, err := New(Config{JWTSecret: testSecret, Loader: store.Load, Retry: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	rt.Register(r.Group("/live"))
	srv := httptest.NewServer(r)
	t.Cleanup(func() { closeAll(t, rt, srv) })
	tok := userToken(t, "u1")

	rs := getWith(t, srv.URL+"/live/comments/1/subscribe", tok, nil)
	rfr := checkStreamHead(t, rs, "1500")
	etag, _ := rt.ETag("comments", "1", rec)
	if got := readFrames(t, rfr, 1)[0]; got.Event != EventSnapshot || got.ID != etag || got.Data != string(rec) {
		t.Fatalf("record stream = %+v, want snapshot %s", got, etag)
	}
	cs := getWith(t, srv.URL+"/live/comments/subscribe", tok, nil)
	cfr := checkStreamHead(t, cs, "1500")

	// Published through the generic REST route: both streams get it.
	pub := postJSON(t, srv.URL+"/live/comments/1/events", publisherToken(t), `{"event":"changed","data":{"id":"1","body":"d"}}`)
	var ans struct{ ID string }
	decodeJSON(t, pub, &ans)
	if pub.StatusCode != http.StatusAccepted || ans.ID == "" {
		t.Fatalf("publish: status %d, id %q", pub.StatusCode, ans.ID)
	}
	for name, fr := range map[string]*frameReader{"record": rfr, "collection": cfr} {
		if got := readFrames(t, fr, 1)[0]; got.Event != EventChanged || got.ID != ans.ID || got.Data != `{"id":"1","body":"d"}` {
			t.Errorf("%s stream = %+v, want changed %s", name, got, ans.ID)
		}
	}

	pr := getWith(t, srv.URL+"/live/comments/1/poll?timeout=0", tok, nil)
	var poll pollAnswer
	decodeJSON(t, pr, &poll)
	if pr.StatusCode != 200 || len(poll.Events) != 1 || poll.Events[0].Event != EventSnapshot {
		t.Fatalf("poll: status %d, %+v", pr.StatusCode, poll)
	}
	// An unknown path under the group is not the plugin's.
	if resp := getWith(t, srv.URL+"/live/comments/1/other", tok, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown route: status %d, want 404", resp.StatusCode)
	}
	if resp := getWith(t, srv.URL+"/live/"+strings.Repeat("x", 600)+"/1/poll?timeout=0", tok, nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("overlong collection name: status %d, want 400", resp.StatusCode)
	}
}
