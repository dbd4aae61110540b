package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// pollAnswer is the JSON of a long poll (§4).
type pollAnswer struct {
	Events []struct {
		Event string          `json:"event"`
		ID    *string         `json:"id"`
		Data  json.RawMessage `json:"data"`
	} `json:"events"`
}

// pollGet long-polls path with tok (and a Last-Event-ID header unless
// lastEventIDHeader is "") and returns the status, the decoded answer of a
// 200 and the raw body.
func pollGet(t testing.TB, srvURL, path, tok, lastEventIDHeader string) (int, pollAnswer, string) {
	t.Helper()
	var hdr http.Header
	if lastEventIDHeader != "" {
		hdr = http.Header{"Last-Event-Id": {lastEventIDHeader}}
	}
	resp := getWith(t, srvURL+path, tok, hdr)
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var a pollAnswer
	if resp.StatusCode == http.StatusOK {
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("Content-Type %q", ct)
		}
		if err := json.Unmarshal(b, &a); err != nil || a.Events == nil {
			t.Fatalf("poll body %s: want {\"events\":[…]}", b)
		}
	}
	return resp.StatusCode, a, string(b)
}

// pollPath is the poll path of posts/id with the query parameters kv.
func pollPath(id string, kv ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	return "/api/v1/posts/" + id + "/poll?" + q.Encode()
}

// pollEv is an expected poll event: id "-" means no id member, data "" means
// the data is not compared.
type pollEv struct{ event, id, data string }

// wantEvents compares a poll answer to the expected events.
func wantEvents(t testing.TB, got pollAnswer, want ...pollEv) {
	t.Helper()
	ok := len(got.Events) == len(want)
	for i := 0; ok && i < len(want); i++ {
		e, w := got.Events[i], want[i]
		switch {
		case e.Event != w.event:
			ok = false
		case w.id == "-" && e.ID != nil:
			ok = false
		case w.id != "-" && (e.ID == nil || *e.ID != w.id):
			ok = false
		case w.data != "" && string(e.Data) != w.data:
			ok = false
		}
	}
	if !ok {
		var sb strings.Builder
		for _, e := range got.Events {
			id := "-"
			if e.ID != nil {
				id = *e.ID
			}
			fmt.Fprintf(&sb, "{%s %s %s} ", e.Event, id, e.Data)
		}
		t.Fatalf("poll events: %s\nwant %+v", sb.String(), want)
	}
}

// pollEnv is a plugin whose loader is a record store.
type pollEnv struct {
	rt    *Plugin
	url   string
	store *recordStore
	tok   string
}

func newPollEnv(t *testing.T, cfg Config, loader bool) *pollEnv {
	t.Helper()
	e := &pollEnv{store: newRecordStore(), tok: userToken(t, "u1")}
	if loader {
		cfg.Loader = e.store.Load
	}
	rt, srv := newTestServer(t, cfg)
	e.rt, e.url = rt, srv.URL
	return e
}

// version stores version n of posts/id and returns its JSON and ETag,
// without publishing it.
func (e *pollEnv) version(t testing.TB, id string, n int) (string, string) {
	t.Helper()
	data := fmt.Sprintf(`{"id":%q,"n":%d}`, id, n)
	e.store.put(Ref{Collection: "posts", ID: id}, json.RawMessage(data))
	etag, err := e.rt.ETag("posts", id, json.RawMessage(data))
	if err != nil {
		t.Fatal(err)
	}
	return data, etag
}

// write stores version n of posts/id and publishes it as changed.
func (e *pollEnv) write(t testing.TB, id string, n int) (string, string) {
	t.Helper()
	data, etag := e.version(t, id, n)
	got, err := e.rt.Changed(context.Background(), "posts", id, json.RawMessage(data))
	if err != nil || got != etag {
		t.Fatalf("Changed: %s, %v; want %s", got, err, etag)
	}
	return data, etag
}

// pollWhile starts a poll of path and, once it waits (the plugin counts one
// more subscriber) or has already answered, calls publish; it returns the
// poll's answer.
func (e *pollEnv) pollWhile(t *testing.T, path, lastEventIDHeader string, publish func()) (int, pollAnswer, string) {
	t.Helper()
	before := e.rt.Subscribers()
	type result struct {
		status int
		a      pollAnswer
		body   string
	}
	done := make(chan result, 1)
	go func() {
		// t.Fatal must not run here: report through the channel.
		resp, err := http.DefaultClient.Do(pollRequest(e.url+path, e.tok, lastEventIDHeader))
		if err != nil {
			done <- result{status: -1, body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var a pollAnswer
		_ = json.Unmarshal(b, &a)
		done <- result{resp.StatusCode, a, string(b)}
	}()
	deadline := time.Now().Add(hangGuard)
	for e.rt.Subscribers() <= before && len(done) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the poll never started waiting")
		}
		time.Sleep(time.Millisecond)
	}
	publish()
	select {
	case r := <-done:
		return r.status, r.a, r.body
	case <-time.After(hangGuard):
		t.Fatal("the poll did not answer")
		return 0, pollAnswer{}, ""
	}
}

func pollRequest(u, tok, lastEventIDHeader string) *http.Request {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if lastEventIDHeader != "" {
		req.Header.Set("Last-Event-ID", lastEventIDHeader)
	}
	return req
}

// TestPollNoResumePoint: without lastEventId the poll answers the snapshot
// of the current record (with a loader); an absent record is 404.
func TestPollNoResumePoint(t *testing.T) {
	e := newPollEnv(t, Config{}, true)
	data, etag := e.version(t, "1", 1)
	status, a, body := pollGet(t, e.url, pollPath("1"), e.tok, "")
	if status != 200 {
		t.Fatalf("status %d %s", status, body)
	}
	wantEvents(t, a, pollEv{EventSnapshot, etag, data})

	status, _, body = pollGet(t, e.url, pollPath("404"), e.tok, "")
	if status != http.StatusNotFound || !strings.Contains(body, `"code":"not_found"`) {
		t.Fatalf("absent record: %d %s, want 404 not_found", status, body)
	}
}

// TestPollWaitsForEvent: a poll that has nothing to send waits and answers
// the event published meanwhile: up to date through the lastEventId
// parameter or the Last-Event-ID header (the header wins over the
// parameter), up to date with the stored record the buffer does not know,
// or, without a loader, without a resume point. A deletion is answered as
// deleted with its tombstone.
func TestPollWaitsForEvent(t *testing.T) {
	cases := []struct {
		name    string
		loader  bool
		publish bool // publish version 1 first (the buffer knows it)
		query   bool // resume point as lastEventId
		header  bool // resume point as Last-Event-ID
		bogusQ  bool // a wrong lastEventId next to the header
		deleted bool // the event is a deletion
	}{
		{name: "lastEventId", loader: true, publish: true, query: true},
		{name: "Last-Event-ID header", loader: true, publish: true, header: true},
		{name: "header wins over lastEventId", loader: true, publish: true, header: true, bogusQ: true},
		{name: "up to date with the stored record", loader: true, query: true},
		{name: "no loader, no resume point", loader: false, publish: true},
		{name: "no loader, lastEventId", loader: false, publish: true, query: true},
		{name: "deleted meanwhile", loader: true, publish: true, query: true, deleted: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newPollEnv(t, Config{}, tc.loader)
			var e1 string
			if tc.publish {
				_, e1 = e.write(t, "1", 1)
			} else {
				_, e1 = e.version(t, "1", 1)
			}
			kv := []string{"timeout", "30"}
			if tc.query {
				kv = append(kv, "lastEventId", e1)
			}
			if tc.bogusQ {
				kv = append(kv, "lastEventId", `"bogus"`)
			}
			hdr := ""
			if tc.header {
				hdr = e1
			}
			var want pollEv
			status, a, body := e.pollWhile(t, pollPath("1", kv...), hdr, func() {
				if tc.deleted {
					e.store.del(Ref{Collection: "posts", ID: "1"})
					etag, err := e.rt.Deleted(context.Background(), "posts", "1")
					if err != nil {
						t.Error(err)
					}
					want = pollEv{EventDeleted, etag, `{"id":"1"}`}
					return
				}
				data, etag := e.write(t, "1", 2)
				want = pollEv{EventChanged, etag, data}
			})
			if status != 200 {
				t.Fatalf("status %d %s", status, body)
			}
			if tc.deleted && want.id != TombstoneETag("posts", "1") {
				t.Errorf("deleted id %s, want the tombstone", want.id)
			}
			wantEvents(t, a, want)
		})
	}
}

// TestPollTimeout: a poll with nothing to send answers {"events":[]} once
// its timeout is over (fractional seconds allowed); a bad timeout is 400.
func TestPollTimeout(t *testing.T) {
	e := newPollEnv(t, Config{}, true)
	_, e1 := e.write(t, "1", 1)
	for _, timeout := range []string{"0.2", "0", "0.05"} {
		status, _, body := pollGet(t, e.url, pollPath("1", "lastEventId", e1, "timeout", timeout), e.tok, "")
		if status != 200 || body != `{"events":[]}` {
			t.Errorf("timeout=%s: %d %s, want 200 {\"events\":[]}", timeout, status, body)
		}
	}
	// Gone and known to be gone (resume point = tombstone): nothing to send.
	status, _, body := pollGet(t, e.url, pollPath("9", "lastEventId", TombstoneETag("posts", "9"), "timeout", "0.1"), e.tok, "")
	if status != 200 || body != `{"events":[]}` {
		t.Errorf("absent record at its tombstone: %d %s", status, body)
	}
	for _, bad := range []string{"abc", "-1", "-0.5", "NaN", "1s", "0x10", "Inf", "+Inf", "1e400"} {
		status, _, body := pollGet(t, e.url, pollPath("1", "lastEventId", e1, "timeout", bad), e.tok, "")
		if status != http.StatusBadRequest || !strings.Contains(body, `"code":"bad_request"`) {
			t.Errorf("timeout=%s: %d %s, want 400 bad_request", bad, status, body)
		}
	}
}

// TestPollLongTimeoutIsCapped: a timeout over PollMaxTimeout (however
// large) waits like the maximum: the poll still answers an event published
// while it waits, instead of returning at once.
func TestPollLongTimeoutIsCapped(t *testing.T) {
	e := newPollEnv(t, Config{PollTimeout: 5 * time.Second, PollMaxTimeout: 8 * time.Second}, true)
	for i, timeout := range []string{"3600", "1e12", "9.3e9", "1e300"} {
		_, last := e.write(t, "1", 2*i)
		var want pollEv
		status, a, body := e.pollWhile(t, pollPath("1", "lastEventId", last, "timeout", timeout), "", func() {
			data, etag := e.write(t, "1", 2*i+1)
			want = pollEv{EventChanged, etag, data}
		})
		if status != 200 {
			t.Fatalf("timeout=%s: %d %s", timeout, status, body)
		}
		if len(a.Events) == 0 {
			t.Fatalf("timeout=%s: answered %s before the event published while it waited", timeout, body)
		}
		wantEvents(t, a, want)
	}
}

// TestPollReplaysAndResyncs: a buffered resume point answers every later
// event; an unknown or evicted one answers resync (no id, reason
// buffer-miss) then the snapshot, or deleted for an absent record; the
// record's current ETag answers nothing.
func TestPollReplaysAndResyncs(t *testing.T) {
	e := newPollEnv(t, Config{BufferSize: 3}, true)
	_, e1 := e.write(t, "1", 1)
	d2, e2 := e.write(t, "1", 2)
	d3, e3 := e.write(t, "1", 3)
	resync := pollEv{EventResync, "-", `{"reason":"buffer-miss"}`}

	_, a, _ := pollGet(t, e.url, pollPath("1", "lastEventId", e1, "timeout", "5"), e.tok, "")
	wantEvents(t, a, pollEv{EventChanged, e2, d2}, pollEv{EventChanged, e3, d3})
	_, a, _ = pollGet(t, e.url, pollPath("1", "timeout", "5"), e.tok, e2) // header
	wantEvents(t, a, pollEv{EventChanged, e3, d3})

	_, a, _ = pollGet(t, e.url, pollPath("1", "lastEventId", `"unknown"`, "timeout", "5"), e.tok, "")
	wantEvents(t, a, resync, pollEv{EventSnapshot, e3, d3})

	// e1 falls out of the 3-event buffer.
	e.write(t, "1", 4)
	d5, e5 := e.write(t, "1", 5)
	_, a, _ = pollGet(t, e.url, pollPath("1", "lastEventId", e1, "timeout", "5"), e.tok, "")
	wantEvents(t, a, resync, pollEv{EventSnapshot, e5, d5})

	// Up to date: nothing (timeout 0 answers at once).
	_, a, _ = pollGet(t, e.url, pollPath("1", "lastEventId", e5, "timeout", "0"), e.tok, "")
	wantEvents(t, a)

	// Absent record: resync then deleted with the tombstone.
	_, a, _ = pollGet(t, e.url, pollPath("9", "lastEventId", `"unknown"`, "timeout", "5"), e.tok, "")
	wantEvents(t, a, resync, pollEv{EventDeleted, TombstoneETag("posts", "9"), `{"id":"9"}`})
	// Deleted since the resume point: the buffer replays the deletion.
	e.store.del(Ref{Collection: "posts", ID: "1"})
	tomb, err := e.rt.Deleted(context.Background(), "posts", "1")
	if err != nil {
		t.Fatal(err)
	}
	_, a, _ = pollGet(t, e.url, pollPath("1", "lastEventId", e5, "timeout", "5"), e.tok, "")
	wantEvents(t, a, pollEv{EventDeleted, tomb, `{"id":"1"}`})
	// Deleted and the resume point unknown: resync then deleted.
	_, a, _ = pollGet(t, e.url, pollPath("1", "lastEventId", e1, "timeout", "5"), e.tok, "")
	wantEvents(t, a, resync, pollEv{EventDeleted, tomb, `{"id":"1"}`})
	// Absent without a resume point: 404.
	if status, _, body := pollGet(t, e.url, pollPath("1"), e.tok, ""); status != 404 {
		t.Errorf("deleted record without resume point: %d %s", status, body)
	}
}

// TestPollNoLoaderResync: without a loader an unknown resume point answers
// resync alone.
func TestPollNoLoaderResync(t *testing.T) {
	e := newPollEnv(t, Config{}, false)
	e.write(t, "1", 1)
	_, a, _ := pollGet(t, e.url, pollPath("1", "lastEventId", `"unknown"`, "timeout", "5"), e.tok, "")
	wantEvents(t, a, pollEv{EventResync, "-", `{"reason":"buffer-miss"}`})
}

// TestPollAuthorize: the authorizer's refusal is 403, hiding is 404.
func TestPollAuthorize(t *testing.T) {
	e := &pollEnv{store: newRecordStore(), tok: userToken(t, "u1")}
	rt, srv := newTestServer(t, Config{Loader: e.store.Load, Authorize: func(_ context.Context, a Access) error {
		switch a.Ref.ID {
		case "secret":
			return ErrForbidden
		case "hidden":
			return ErrNotFound
		}
		return nil
	}})
	e.rt, e.url = rt, srv.URL
	for id, want := range map[string]int{"secret": 403, "hidden": 404, "open": 200} {
		e.version(t, id, 1)
		if status, _, body := pollGet(t, e.url, pollPath(id, "timeout", "0"), e.tok, ""); status != want {
			t.Errorf("%s: %d %s, want %d", id, status, body, want)
		}
	}
}
