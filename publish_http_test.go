package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// errorAnswer is the contract's JSON error body.
type errorAnswer struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// checkError checks that resp is the contract's JSON error with status and code.
func checkError(t testing.TB, resp *http.Response, status int, code string) errorAnswer {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	var e errorAnswer
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d (body %s)", resp.StatusCode, status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Code != code || e.Error.Message == "" {
		t.Errorf("body %s: want {\"error\":{\"code\":%q,\"message\":…}}", b, code)
	}
	return e
}

// publishAnswer decodes a 202 answer of the publish endpoint: exactly {"id":…}.
func publishAnswer(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d, want 202 (body %s)", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil || len(m) != 1 || m["id"] == "" {
		t.Fatalf("body %s, want {\"id\":\"<etag>\"}", b)
	}
	return m["id"]
}

// openStreams subscribes to posts/id and to the posts collection and
// returns their readers, positioned after the retry line.
func openStreams(t testing.TB, srvURL, tok, id string) (record, collection *frameReader) {
	t.Helper()
	record = checkStreamHead(t, getWith(t, srvURL+"/api/v1/posts/"+id+"/subscribe", tok, nil), "2000")
	collection = checkStreamHead(t, getWith(t, srvURL+"/api/v1/posts/subscribe", tok, nil), "2000")
	return record, collection
}

// TestPublishHTTP: POST …/:id/events answers 202 {"id":<etag>} and the event
// reaches the record's and the collection's subscribers with that id; the
// default ETag is the one Plugin.ETag gives the same record, a given etag is
// used verbatim, and deleted needs no data.
func TestPublishHTTP(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	pubTok := publisherToken(t)
	rec, col := openStreams(t, srv.URL, userToken(t, "reader"), "42")
	pubURL := srv.URL + "/api/v1/posts/42/events"

	cases := []struct {
		name, body string
		event      string
		wantID     string // "" = computed below
		wantData   string
	}{
		{"changed, default etag", `{"event":"changed","data":{"id": "42",  "title":"a"}}`, EventChanged, "", `{"id":"42","title":"a"}`},
		{"snapshot", `{"event":"snapshot","data":{"id":"42","title":"b"}}`, EventSnapshot, "", `{"id":"42","title":"b"}`},
		{"etag verbatim", `{"event":"changed","data":{"id":"42","title":"c"},"etag":"W/\"v7\""}`, EventChanged, `W/"v7"`, `{"id":"42","title":"c"}`},
		{"deleted without data", `{"event":"deleted"}`, EventDeleted, TombstoneETag("posts", "42"), `{"id":"42"}`},
		{"deleted ignores data", `{"event":"deleted","data":{"id":"other","x":1}}`, EventDeleted, TombstoneETag("posts", "42"), `{"id":"42"}`},
		{"deleted with etag", `{"event":"deleted","etag":"\"gone-3\""}`, EventDeleted, `"gone-3"`, `{"id":"42"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.wantID
			if want == "" {
				var err error
				want, err = rt.ETag("posts", "42", json.RawMessage(tc.wantData))
				if err != nil {
					t.Fatal(err)
				}
			}
			id := publishAnswer(t, postJSON(t, pubURL, pubTok, tc.body))
			if id != want {
				t.Errorf("answer id %s, want %s", id, want)
			}
			for name, fr := range map[string]*frameReader{"record": rec, "collection": col} {
				got := readFrames(t, fr, 1)[0]
				if got.Event != tc.event || got.ID != id || got.Data != tc.wantData {
					t.Errorf("%s stream got %+v, want event %s id %s data %s", name, got, tc.event, id, tc.wantData)
				}
			}
		})
	}
}

// TestPublishHTTPRejects: a body over MaxBodyBytes is 413, a bad body 400,
// a token without the publish scope 403, none 401; none of them publishes
// anything (the subscribers' next frame is a sentinel published after them).
func TestPublishHTTPRejects(t *testing.T) {
	rt, srv := newTestServer(t, Config{MaxBodyBytes: 256})
	pubTok := publisherToken(t)
	rec, col := openStreams(t, srv.URL, userToken(t, "reader"), "42")
	pubURL := srv.URL + "/api/v1/posts/42/events"
	before, err := rt.Changed(context.Background(), "posts", "42", map[string]string{"id": "42", "title": "before"})
	if err != nil {
		t.Fatal(err)
	}
	for name, fr := range map[string]*frameReader{"record": rec, "collection": col} {
		if got := readFrames(t, fr, 1)[0]; got.ID != before {
			t.Fatalf("%s stream got %+v, want %s", name, got, before)
		}
	}

	cases := []struct {
		name, tok, body string
		status          int
		code            string
	}{
		{"over MaxBodyBytes", pubTok, `{"event":"changed","data":{"t":"` + strings.Repeat("x", 300) + `"}}`, 413, "too_large"},
		{"unknown event", pubTok, `{"event":"updated","data":{"a":1}}`, 400, "bad_request"},
		{"resync is not publishable", pubTok, `{"event":"resync","data":{"a":1}}`, 400, "bad_request"},
		{"event missing", pubTok, `{"data":{"a":1}}`, 400, "bad_request"},
		{"etag with CR", pubTok, `{"event":"changed","data":{"a":1},"etag":"\"a\rb\""}`, 400, "bad_request"},
		{"etag with LF", pubTok, `{"event":"changed","data":{"a":1},"etag":"\"a\nevent: deleted\""}`, 400, "bad_request"},
		{"etag with CRLF", pubTok, `{"event":"changed","data":{"a":1},"etag":"\"a\r\nb\""}`, 400, "bad_request"},
		{"etag with NUL", pubTok, `{"event":"changed","data":{"a":1},"etag":"\"a\u0000b\""}`, 400, "bad_request"},
		{"deleted etag with LF", pubTok, `{"event":"deleted","etag":"\"a\nb\""}`, 400, "bad_request"},
		{"not JSON", pubTok, `event=changed`, 400, "bad_request"},
		{"truncated JSON", pubTok, `{"event":"changed","data":{"a":1}`, 400, "bad_request"},
		{"JSON array", pubTok, `[{"event":"changed","data":{"a":1}}]`, 400, "bad_request"},
		{"empty body", pubTok, ``, 400, "bad_request"},
		{"null", pubTok, `null`, 400, "bad_request"},
		{"changed without data", pubTok, `{"event":"changed"}`, 400, "bad_request"},
		{"changed with null data", pubTok, `{"event":"changed","data":null}`, 400, "bad_request"},
		{"snapshot without data", pubTok, `{"event":"snapshot","etag":"\"x\""}`, 400, "bad_request"},
		{"event of wrong type", pubTok, `{"event":1,"data":{"a":1}}`, 400, "bad_request"},
		{"no publish scope", userToken(t, "reader"), `{"event":"changed","data":{"a":1}}`, 403, "forbidden"},
		{"no token", "", `{"event":"changed","data":{"a":1}}`, 401, "unauthorized"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkError(t, postJSON(t, pubURL, tc.tok, tc.body), tc.status, tc.code)
		})
	}

	// Nothing above was published: the next frame of both streams is the sentinel.
	sentinel, err := rt.Changed(context.Background(), "posts", "42", map[string]string{"id": "42", "title": "sentinel"})
	if err != nil {
		t.Fatal(err)
	}
	for name, fr := range map[string]*frameReader{"record": rec, "collection": col} {
		if got := readFrames(t, fr, 1)[0]; got.ID != sentinel {
			t.Errorf("%s stream: first frame after the refused requests is %+v, want the sentinel %s", name, got, sentinel)
		}
	}
	// Nor buffered: resuming from the event before them gives the sentinel only.
	pr := getWith(t, srv.URL+"/api/v1/posts/42/poll?timeout=0&lastEventId="+url.QueryEscape(before), userToken(t, "reader"), nil)
	var poll pollAnswer
	decodeJSON(t, pr, &poll)
	if len(poll.Events) != 1 || poll.Events[0].ID == nil || *poll.Events[0].ID != sentinel {
		t.Errorf("poll from the event before the refused requests: %+v, want only %s", poll, sentinel)
	}
}

// TestPublishHTTPTenant: the REST publisher writes into its token's tenant:
// subscribers of that tenant get the event, another tenant's do not.
func TestPublishHTTPTenant(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	acme := validClaims("backend")
	acme["tenant"] = "acme"
	acme["scope"] = "publish"
	acmeReader := validClaims("reader")
	acmeReader["tenant"] = "acme"
	acmeRec, _ := openStreams(t, srv.URL, mintToken(t, testSecret, acmeReader), "42")
	defRec, defCol := openStreams(t, srv.URL, userToken(t, "reader"), "42")

	id := publishAnswer(t, postJSON(t, srv.URL+"/api/v1/posts/42/events", mintToken(t, testSecret, acme), `{"event":"changed","data":{"id":"42"}}`))
	if got := readFrames(t, acmeRec, 1)[0]; got.ID != id {
		t.Fatalf("acme subscriber got %+v, want %s", got, id)
	}
	sentinel, err := rt.Changed(context.Background(), "posts", "42", map[string]string{"id": "42", "v": "default"})
	if err != nil {
		t.Fatal(err)
	}
	for name, fr := range map[string]*frameReader{"record": defRec, "collection": defCol} {
		if got := readFrames(t, fr, 1)[0]; got.ID != sentinel {
			t.Errorf("default tenant %s stream got %+v, want only its own tenant's %s", name, got, sentinel)
		}
	}
}

// TestLiveEventsSurviveBufferEviction: a record whose buffer is evicted by
// the memory cap (here at every publish) keeps delivering live events to its
// subscribers. Regression: stream positions restarted at 1 when a stream was
// dropped and re-created, and live subscribers dropped every event as
// already seen.
func TestLiveEventsSurviveBufferEviction(t *testing.T) {
	rt, srv := newTestServer(t, Config{BufferMemory: 1})
	rec, col := openStreams(t, srv.URL, userToken(t, "reader"), "1")
	var want []string
	for i := range 4 {
		etag, err := rt.Changed(context.Background(), "posts", "1", map[string]int{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, etag)
	}
	for name, fr := range map[string]*frameReader{"record": rec, "collection": col} {
		got := readFrames(t, fr, len(want))
		for i := range want {
			if got[i].ID != want[i] {
				t.Fatalf("%s stream got %+v, want ids %v", name, got, want)
			}
		}
	}
}

// TestCollectionStreamAfterResync: after Resync (a bulk write), collection
// subscribers get a resync frame and then every later event. Regression:
// the re-created buffer restarted positions at 1 and later events were
// silently dropped.
func TestCollectionStreamAfterResync(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	_, col := openStreams(t, srv.URL, userToken(t, "reader"), "1")
	ctx := context.Background()
	e1, err := rt.Changed(ctx, "posts", "1", map[string]int{"n": 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Resync(ctx, "posts"); err != nil {
		t.Fatal(err)
	}
	e2, err := rt.Changed(ctx, "posts", "2", map[string]int{"n": 2})
	if err != nil {
		t.Fatal(err)
	}
	got := readFrames(t, col, 3)
	if got[0].ID != e1 || got[1].Event != EventResync || got[1].HasID || got[2].ID != e2 {
		t.Fatalf("collection stream = %+v, want %s, resync (no id), %s", got, e1, e2)
	}
}

// TestPublishHTTPBadPathAndClosed: a record id with CR, LF or NUL is 400 on
// every route (it could never be written safely); once the plugin is
// closed, publishing is 503 (never a silent 2xx).
func TestPublishHTTPBadPathAndClosed(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	pubTok := publisherToken(t)
	for _, id := range []string{"a%0Ab", "a%0Db", "a%00b"} {
		resp := postJSON(t, srv.URL+"/api/v1/posts/"+id+"/events", pubTok, `{"event":"changed","data":{"a":1}}`)
		checkError(t, resp, 400, "bad_request")
		for _, suffix := range []string{"/subscribe", "/poll?timeout=0"} {
			checkError(t, getWith(t, srv.URL+"/api/v1/posts/"+id+suffix, pubTok, nil), 400, "bad_request")
		}
	}
	if err := rt.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkError(t, postJSON(t, srv.URL+"/api/v1/posts/1/events", pubTok, `{"event":"changed","data":{"a":1}}`), 503, "unavailable")
	if _, err := rt.Changed(context.Background(), "posts", "1", map[string]int{"a": 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("Changed after Close: %v, want ErrClosed", err)
	}
}
