package realtime

// What a subscriber receives first (PROTOCOL.md §3), over real HTTP with a
// real SSE reader, then that live events follow with nothing in between.

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	sse "github.com/tmaxmax/go-sse"
)

func TestRecordStreamResume(t *testing.T) {
	type req struct {
		id     string // record; default "42"
		header string // Last-Event-ID
		query  string // lastEventId
	}
	cases := []struct {
		name     string
		noLoader bool
		size     int // BufferSize
		// setup publishes and returns the request and the first frames wanted.
		setup  func(t *testing.T, e *env) (req, []frame)
		status int // non-200 answer wanted
	}{
		{
			name: "no resume point: snapshot of the current record",
			setup: func(t *testing.T, e *env) (req, []frame) {
				e.put(t, "42", 1)
				e.put(t, "42", 2)
				v3 := e.put(t, "42", 3)
				return req{}, []frame{{EventSnapshot, v3, recJSON("42", 3)}}
			},
		},
		{
			name: "no resume point, stored record never published: snapshot",
			setup: func(t *testing.T, e *env) (req, []frame) {
				e.store.put(Ref{Collection: "posts", ID: "42"}, rec{ID: "42", N: 7})
				etag, _ := e.rt.ETag("posts", "42", rec{ID: "42", N: 7})
				return req{}, []frame{{EventSnapshot, etag, recJSON("42", 7)}}
			},
		},
		{
			name:     "no resume point, no loader: nothing until the next event",
			noLoader: true,
			setup: func(t *testing.T, e *env) (req, []frame) {
				e.put(t, "42", 1)
				e.put(t, "42", 2)
				return req{}, nil
			},
		},
		{
			name: "no resume point, absent record: 404",
			setup: func(t *testing.T, e *env) (req, []frame) {
				e.put(t, "42", 1)
				return req{id: "nope"}, nil
			},
			status: http.StatusNotFound,
		},
		{
			name: "no resume point, deleted record: 404",
			setup: func(t *testing.T, e *env) (req, []frame) {
				e.put(t, "42", 1)
				e.del(t, "42")
				return req{}, nil
			},
			status: http.StatusNotFound,
		},
		{
			name: "Last-Event-ID buffered: every later buffered event in order",
			setup: func(t *testing.T, e *env) (req, []frame) {
				var v [6]string
				for n := 1; n <= 5; n++ {
					v[n] = e.put(t, "42", n)
				}
				return req{header: v[2]}, []frame{
					{EventChanged, v[3], recJSON("42", 3)},
					{EventChanged, v[4], recJSON("42", 4)},
					{EventChanged, v[5], recJSON("42", 5)},
				}
			},
		},
		{
			name: "Last-Event-ID is the oldest buffered event",
			size: 3,
			setup: func(t *testing.T, e *env) (req, []frame) {
				var v [7]string
				for n := 1; n <= 6; n++ {
					v[n] = e.put(t, "42", n)
				}
				return req{header: v[4]}, []frame{{EventChanged, v[5], ""}, {EventChanged, v[6], ""}}
			},
		},
		{
			name: "Last-Event-ID is the current ETag: nothing",
			setup: func(t *testing.T, e *env) (req, []frame) {
				e.put(t, "42", 1)
				v2 := e.put(t, "42", 2)
				return req{header: v2}, nil
			},
		},
		{
			name: "Last-Event-ID evicted: resync then snapshot",
			size: 3,
			setup: func(t *testing.T, e *env) (req, []frame) {
				v1 := e.put(t, "42", 1)
				var v6 string
				for n := 2; n <= 6; n++ {
					v6 = e.put(t, "42", n)
				}
				return req{header: v1}, []frame{resyncFrame, {EventSnapshot, v6, recJSON("42", 6)}}
			},
		},
		{
			name: "unknown Last-Event-ID: resync then snapshot",
			setup: func(t *testing.T, e *env) (req, []frame) {
				v := e.put(t, "42", 1)
				return req{header: `"not-an-etag-of-ours"`}, []frame{resyncFrame, {EventSnapshot, v, recJSON("42", 1)}}
			},
		},
		{
			name: "another record's ETag: resync then snapshot",
			setup: func(t *testing.T, e *env) (req, []frame) {
				other := e.put(t, "7", 1)
				v := e.put(t, "42", 1)
				e.put(t, "7", 2)
				return req{header: other}, []frame{resyncFrame, {EventSnapshot, v, recJSON("42", 1)}}
			},
		},
		{
			name: "deleted record, resume point unknown: resync then deleted",
			setup: func(t *testing.T, e *env) (req, []frame) {
				e.put(t, "42", 1)
				e.del(t, "42")
				return req{header: `"elsewhere"`}, []frame{resyncFrame,
					{EventDeleted, TombstoneETag("posts", "42"), `{"id":"42"}`}}
			},
		},
		{
			name: "deleted record, resume point buffered: the deleted event",
			setup: func(t *testing.T, e *env) (req, []frame) {
				v1 := e.put(t, "42", 1)
				tomb := e.del(t, "42")
				if tomb != TombstoneETag("posts", "42") {
					t.Fatalf("Deleted ETag %s, want the tombstone %s", tomb, TombstoneETag("posts", "42"))
				}
				return req{header: v1}, []frame{{EventDeleted, tomb, `{"id":"42"}`}}
			},
		},
		{
			name: "deleted record, buffer forgot it: resync then deleted",
			setup: func(t *testing.T, e *env) (req, []frame) {
				v1 := e.put(t, "42", 1)
				e.del(t, "42")
				if err := e.rt.Resync(context.Background(), "posts"); err != nil {
					t.Fatal(err)
				}
				return req{header: v1}, []frame{resyncFrame, {EventDeleted, TombstoneETag("posts", "42"), `{"id":"42"}`}}
			},
		},
		{
			name: "deleted record, resume point is its tombstone: nothing",
			setup: func(t *testing.T, e *env) (req, []frame) {
				e.put(t, "42", 1)
				tomb := e.del(t, "42")
				if err := e.rt.Resync(context.Background(), "posts"); err != nil {
					t.Fatal(err)
				}
				return req{header: tomb}, nil
			},
		},
		{
			name: "record never there, with a resume point: resync then deleted",
			setup: func(t *testing.T, e *env) (req, []frame) {
				return req{id: "ghost", header: `"whatever"`}, []frame{resyncFrame,
					{EventDeleted, TombstoneETag("posts", "ghost"), `{"id":"ghost"}`}}
			},
		},
		{
			name: "lastEventId query parameter",
			setup: func(t *testing.T, e *env) (req, []frame) {
				v1 := e.put(t, "42", 1)
				v2 := e.put(t, "42", 2)
				return req{query: v1}, []frame{{EventChanged, v2, recJSON("42", 2)}}
			},
		},
		{
			name: "Last-Event-ID header wins over lastEventId",
			setup: func(t *testing.T, e *env) (req, []frame) {
				v1 := e.put(t, "42", 1)
				v2 := e.put(t, "42", 2)
				v3 := e.put(t, "42", 3)
				return req{header: v2, query: v1}, []frame{{EventChanged, v3, ""}}
			},
		},
		{
			name: "buffer forgot the record, Loader's ETag equals Last-Event-ID: nothing",
			setup: func(t *testing.T, e *env) (req, []frame) {
				e.put(t, "42", 1)
				v2 := e.put(t, "42", 2)
				if err := e.rt.Resync(context.Background(), "posts"); err != nil {
					t.Fatal(err)
				}
				return req{header: v2}, nil
			},
		},
		{
			name: "buffer forgot the record, older Last-Event-ID: resync then snapshot",
			setup: func(t *testing.T, e *env) (req, []frame) {
				v1 := e.put(t, "42", 1)
				v2 := e.put(t, "42", 2)
				if err := e.rt.Resync(context.Background(), "posts"); err != nil {
					t.Fatal(err)
				}
				return req{header: v1}, []frame{resyncFrame, {EventSnapshot, v2, recJSON("42", 2)}}
			},
		},
		{
			name:     "no loader, unknown Last-Event-ID: resync alone",
			noLoader: true,
			setup: func(t *testing.T, e *env) (req, []frame) {
				e.put(t, "42", 1)
				return req{header: `"unknown"`}, []frame{resyncFrame}
			},
		},
		{
			name:     "no loader, Last-Event-ID buffered: later events",
			noLoader: true,
			setup: func(t *testing.T, e *env) (req, []frame) {
				v1 := e.put(t, "42", 1)
				v2 := e.put(t, "42", 2)
				return req{header: v1}, []frame{{EventChanged, v2, ""}}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Config{BufferSize: tc.size}, !tc.noLoader)
			r, want := tc.setup(t, e)
			if r.id == "" {
				r.id = "42"
			}
			url := recordURL(e.srv, r.id)
			if r.query != "" {
				url += "?lastEventId=" + r.query
			}
			hdr := http.Header{}
			if r.header != "" {
				hdr.Set("Last-Event-ID", r.header)
			}
			if tc.status != 0 {
				resp := getWith(t, url, e.tok, hdr)
				if resp.StatusCode != tc.status {
					t.Fatalf("status %s, want %d", resp.Status, tc.status)
				}
				var body errorBody
				if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error.Code != "not_found" {
					t.Fatalf("body %+v (%v), want code not_found", body, err)
				}
				return
			}
			s := openStream(t, nil, url, e.tok, hdr)
			for k, v := range map[string]string{"Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
				if got := s.resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			expectFrames(t, s, want...)
			// Then live events, with nothing in between.
			live := e.put(t, r.id, 100)
			expectFrames(t, s, frame{EventChanged, live, recJSON(r.id, 100)})
			live = e.put(t, r.id, 101)
			expectFrames(t, s, frame{EventChanged, live, recJSON(r.id, 101)})
		})
	}
}

func TestCollectionStreamResume(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, e *env) (lastID string, want []frame)
	}{
		{
			name: "no resume point: no snapshot, nothing until the next event",
			setup: func(t *testing.T, e *env) (string, []frame) {
				e.put(t, "1", 1)
				e.put(t, "2", 1)
				return "", nil
			},
		},
		{
			name: "Last-Event-ID buffered: every later event of every record, in order",
			setup: func(t *testing.T, e *env) (string, []frame) {
				e.put(t, "1", 1)
				b1 := e.put(t, "2", 1)
				a2 := e.put(t, "1", 2)
				c1 := e.put(t, "3", 1)
				tomb := e.del(t, "2")
				return b1, []frame{
					{EventChanged, a2, recJSON("1", 2)},
					{EventChanged, c1, recJSON("3", 1)},
					{EventDeleted, tomb, `{"id":"2"}`},
				}
			},
		},
		{
			name: "Last-Event-ID is the newest event: nothing",
			setup: func(t *testing.T, e *env) (string, []frame) {
				e.put(t, "1", 1)
				last := e.put(t, "2", 1)
				return last, nil
			},
		},
		{
			name: "Last-Event-ID evicted: resync alone",
			setup: func(t *testing.T, e *env) (string, []frame) {
				first := e.put(t, "1", 1)
				for n := 2; n <= 5; n++ {
					e.put(t, "2", n)
				}
				return first, []frame{resyncFrame}
			},
		},
		{
			name: "unknown Last-Event-ID: resync alone",
			setup: func(t *testing.T, e *env) (string, []frame) {
				e.put(t, "1", 1)
				return `"unknown"`, []frame{resyncFrame}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Config{BufferSize: 4}, true)
			lastID, want := tc.setup(t, e)
			hdr := http.Header{}
			if lastID != "" {
				hdr.Set("Last-Event-ID", lastID)
			}
			s := openStream(t, nil, collectionURL(e.srv), e.tok, hdr)
			expectFrames(t, s, want...)
			x := e.put(t, "9", 1)
			y := e.put(t, "8", 1)
			expectFrames(t, s, frame{EventChanged, x, recJSON("9", 1)}, frame{EventChanged, y, recJSON("8", 1)})
		})
	}
}

// TestResumeQueryParamCollection: the query form of the resume point also
// works on the collection stream.
func TestResumeQueryParamCollection(t *testing.T) {
	e := newEnv(t, Config{}, true)
	a := e.put(t, "1", 1)
	b := e.put(t, "2", 1)
	s := openStream(t, nil, collectionURL(e.srv)+"?lastEventId="+a, e.tok, nil)
	expectFrames(t, s, frame{EventChanged, b, ""})
}

// TestReconnectResumesWithoutLoss: go-sse's client (which reconnects after
// any loss, honours retry: and sends Last-Event-ID) loses its connection on
// the server side while events are published, and still receives every
// event exactly once, in order.
func TestReconnectResumesWithoutLoss(t *testing.T) {
	store := newRecordStore()
	var kl *killListener
	var mu sync.Mutex
	var lastIDs []string // Last-Event-ID of every subscribe request
	rt, srv := newPluginServer(t, Config{Loader: store.Load, Retry: 5 * time.Millisecond},
		func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
				mu.Unlock()
				h.ServeHTTP(w, r)
			})
		},
		func(s *httptest.Server) {
			kl = newKillListener(s.Listener)
			s.Listener = kl
			s.Start()
		})
	e := &env{rt: rt, srv: srv, store: store, tok: userToken(t, "u1")}
	var v [20]string
	for n := 1; n <= 3; n++ {
		v[n] = e.put(t, "42", n)
	}

	events := make(chan sse.Event, 64)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, recordURL(srv, "42"), nil)
	req.Header.Set("Authorization", "Bearer "+e.tok)
	client := &sse.Client{
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{}).DialContext}},
		Backoff:    sse.Backoff{InitialInterval: 5 * time.Millisecond, Multiplier: 1, MaxRetries: 50},
	}
	conn := client.NewConnection(req)
	conn.SubscribeToAll(func(ev sse.Event) {
		if ev.Type == "" && ev.Data == "" {
			return // go-sse dispatches the retry-only block as an empty event
		}
		events <- ev
	})
	done := make(chan error, 1)
	go func() { done <- conn.Connect() }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Connect: %v", err)
		}
		client.HTTPClient.CloseIdleConnections()
	})

	next := func(want frame) {
		t.Helper()
		select {
		case ev := <-events:
			if ev.Type != want.Event || ev.LastEventID != want.ID || (want.Data != "" && ev.Data != want.Data) {
				t.Fatalf("event {%s id=%s %s}, want %v", ev.Type, ev.LastEventID, ev.Data, want)
			}
		case err := <-done:
			t.Fatalf("client stopped: %v", err)
		case <-time.After(hangGuard):
			t.Fatalf("no event; want %v", want)
		}
	}
	next(frame{EventSnapshot, v[3], recJSON("42", 3)})
	v[4] = e.put(t, "42", 4)
	v[5] = e.put(t, "42", 5)
	next(frame{EventChanged, v[4], ""})
	next(frame{EventChanged, v[5], ""})

	// A network loss: every connection is cut and the reconnect is held
	// back while two events are published.
	kl.hold()
	kl.kill()
	waitFor(t, "the server to notice the loss", func() bool { return rt.Subscribers() == 0 })
	v[6] = e.put(t, "42", 6)
	v[7] = e.put(t, "42", 7)
	kl.release()
	next(frame{EventChanged, v[6], recJSON("42", 6)})
	next(frame{EventChanged, v[7], recJSON("42", 7)})
	v[8] = e.put(t, "42", 8)
	next(frame{EventChanged, v[8], ""})

	// A second loss, with nothing published meanwhile: up to date, nothing
	// is replayed, live events follow.
	kl.kill()
	waitFor(t, "the client to reconnect", func() bool { return kl.accepted() >= 3 && rt.Subscribers() == 1 })
	v[9] = e.put(t, "42", 9)
	next(frame{EventChanged, v[9], ""})

	mu.Lock()
	defer mu.Unlock()
	if len(lastIDs) < 3 || lastIDs[0] != "" || lastIDs[1] != v[5] || lastIDs[len(lastIDs)-1] != v[8] {
		t.Fatalf("Last-Event-ID of the requests: %q; want \"\", %s, …, %s", lastIDs, v[5], v[8])
	}
	select {
	case ev := <-events:
		t.Fatalf("unexpected event {%s id=%s %s}", ev.Type, ev.LastEventID, ev.Data)
	default:
	}
}

// TestResyncAfterBulkWrite: Resync (a write the app cannot name record by
// record) resyncs record streams in place (resync of reason bulk-write,
// then the stored record), as a client reconnecting from its last ETag is,
// and sends collection streams a resync frame; nothing is silently missed.
func TestResyncAfterBulkWrite(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, Config{DisableHijack: tr.disableHijack}, true)
			v1 := e.put(t, "42", 1)
			rs := openStream(t, nil, recordURL(e.srv, "42"), e.tok, nil)
			expectFrames(t, rs, frame{EventSnapshot, v1, ""})
			cs := openStream(t, nil, collectionURL(e.srv), e.tok, nil)

			// A bulk write changes 42 without an event of its own.
			e.store.put(Ref{Collection: "posts", ID: "42"}, rec{ID: "42", N: 2})
			v2, _ := e.rt.ETag("posts", "42", rec{ID: "42", N: 2})
			if err := e.rt.Resync(context.Background(), "posts"); err != nil {
				t.Fatal(err)
			}
			expectFrames(t, rs, frame{EventResync, "", `{"reason":"bulk-write"}`}, frame{EventSnapshot, v2, recJSON("42", 2)})
			fs := readFrames(t, cs.fr, 1)
			if fs[0].Event != EventResync || fs[0].HasID {
				t.Fatalf("collection stream: %v, want a resync frame without id", framesOf(fs))
			}
			// The record's client resumes from v1: resync, then the stored record.
			again := openStream(t, nil, recordURL(e.srv, "42"), e.tok, http.Header{"Last-Event-ID": {v1}})
			expectFrames(t, again, resyncFrame, frame{EventSnapshot, v2, recJSON("42", 2)})
			v3 := e.put(t, "42", 3)
			expectFrames(t, again, frame{EventChanged, v3, ""})
			expectFrames(t, rs, frame{EventChanged, v3, ""})
			expectFrames(t, cs, frame{EventChanged, v3, ""})
		})
	}
}
