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
)

// pushesURL is srv's GET …/pushes/subscribe with query (may be "").
func pushesURL(srv *httptest.Server, query string) string {
	return srv.URL + "/api/v1/pushes/subscribe" + query
}

// openPushes opens a pushes stream and reads its connected frame.
func openPushes(t testing.TB, srv *httptest.Server, tok, query string, hdr http.Header) (*stream, connectedFrame) {
	t.Helper()
	s := openStream(t, nil, pushesURL(srv, query), tok, hdr)
	f := readFrames(t, s.fr, 1)[0]
	var cf connectedFrame
	if f.Event != "connected" || f.HasID || json.Unmarshal([]byte(f.Data), &cf) != nil || cf.Type != "connected" || cf.ConnectionID == "" {
		t.Fatalf("first frame %+v, want event connected with the connected message", f)
	}
	return s, cf
}

// expectPush reads one push frame of s and checks its event, envelope and
// id line (an id only for a channel push).
func expectPush(t testing.TB, s *stream, event string) envelope {
	t.Helper()
	f := readFrames(t, s.fr, 1)[0]
	var e envelope
	if err := json.Unmarshal([]byte(f.Data), &e); err != nil || f.Event != event || e.Event != event || e.Type != "message" {
		t.Fatalf("frame %+v, want push %q", f, event)
	}
	if want := e.Channel != ""; f.HasID != want || (want && f.ID != e.EnvelopeID) {
		t.Fatalf("frame %+v: id line %v, want %v (the envelopeId)", f, f.HasID, want)
	}
	return e
}

// pollPushes sends GET …/pushes/poll?query and decodes the answer.
func pollPushes(t testing.TB, srv *httptest.Server, tok, query string) (int, pushPollResponse) {
	t.Helper()
	resp := getWith(t, srv.URL+"/api/v1/pushes/poll?"+query, tok, nil)
	b, _ := io.ReadAll(resp.Body)
	var r pushPollResponse
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &r); err != nil || r.Messages == nil {
			t.Fatalf("poll answer %s: %v", b, err)
		}
	}
	return resp.StatusCode, r
}

func postAck(t testing.TB, srv *httptest.Server, tok, body string) int {
	t.Helper()
	return postJSON(t, srv.URL+"/api/v1/acks", tok, body).StatusCode
}

// A pushes stream gets what a WebSocket with no subscription gets (user
// pushes, broadcasts) plus the channels it lists, filtered like one, and
// counts in Notify's answer and in presence.
func TestPushStreamSelection(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	alice := userToken(t, "alice")
	s, cf := openPushes(t, srv, alice, "?channels="+url.QueryEscape("orders.*"), nil)
	if cf.User != "alice" || cf.Tenant != DefaultTenant {
		t.Fatalf("connected %+v", cf)
	}
	ws, _ := connectWS(t, srv, userToken(t, "bob")) // a WebSocket without subscriptions, for comparison

	res := notify(t, rt, Notification{Users: []string{"alice"}, Event: "to_alice", Data: map[string]int{"n": 1}})
	if res.Delivered != 1 || res.Users != 1 {
		t.Fatalf("user push: %+v", res)
	}
	if e := expectPush(t, s, "to_alice"); e.EnvelopeID != res.EnvelopeID || string(e.Data) != `{"n":1}` {
		t.Fatalf("envelope %+v", e)
	}
	notify(t, rt, Notification{Users: []string{"bob"}, Event: "to_bob"})
	notify(t, rt, Notification{Channel: "news.today", Event: "not_listed"})
	res = notify(t, rt, Notification{Event: "broadcast"})
	if res.Delivered != 2 || res.Users != 2 {
		t.Fatalf("broadcast: %+v", res)
	}
	expectPush(t, s, "broadcast")
	res = notify(t, rt, Notification{Channel: "orders.new", Event: "order"})
	if res.Delivered != 1 {
		t.Fatalf("channel push: %+v", res)
	}
	expectPush(t, s, "order")
	notify(t, rt, Notification{Event: "excluded", ExcludeUsers: []string{"alice"}})
	notify(t, rt, Notification{Users: []string{"alice"}, Event: "last"})
	expectPush(t, s, "last")
	expectMessage(t, ws, "to_bob")
	expectMessage(t, ws, "broadcast")
	expectMessage(t, ws, "excluded")

	users, conns, err := rt.Presence(context.Background(), "")
	if err != nil || conns != 2 || strings.Join(users, ",") != "alice,bob" {
		t.Fatalf("presence %v %d %v: the pushes stream counts", users, conns, err)
	}

	// Filters apply to user pushes and channel pushes alike.
	f, _ := openPushes(t, srv, alice, "?channels=orders.new&filters="+url.QueryEscape(`[{"type":"keep"},{"region":"eu"}]`), nil)
	notify(t, rt, Notification{Users: []string{"alice"}, Event: "drop"})
	notify(t, rt, Notification{Channel: "orders.new", Event: "drop", Data: map[string]string{"region": "us"}})
	notify(t, rt, Notification{Channel: "orders.new", Event: "eu", Data: map[string]string{"region": "eu"}})
	notify(t, rt, Notification{Users: []string{"alice"}, Event: "keep"})
	expectPush(t, f, "eu")
	expectPush(t, f, "keep")
}

func TestPushStreamRefusals(t *testing.T) {
	_, srv := newTestServer(t, Config{AuthorizeChannel: userChannels, WSMaxConnsPerUser: 2, WSRefuseBeforeUpgrade: true})
	alice := userToken(t, "alice")
	for _, tc := range []struct {
		query string
		code  int
	}{
		{"?channels=user.bob", http.StatusForbidden},
		{"?channels=" + url.QueryEscape("user.*"), http.StatusForbidden},
		{"?channels=a..b", http.StatusBadRequest},
		{"?filters=" + url.QueryEscape(`{"type":"a"}`), http.StatusBadRequest},
		{"?filters=" + url.QueryEscape(`[{"type":1}]`), http.StatusBadRequest},
	} {
		for _, path := range []string{"/api/v1/pushes/subscribe", "/api/v1/pushes/poll"} {
			if resp := getWith(t, srv.URL+path+tc.query, alice, nil); resp.StatusCode != tc.code {
				t.Errorf("%s%s: %d, want %d", path, tc.query, resp.StatusCode, tc.code)
			}
		}
	}
	if resp := getWith(t, pushesURL(srv, ""), "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token: %d", resp.StatusCode)
	}
	// The caps count WebSockets, pushes streams and polls together.
	connectWS(t, srv, alice)
	openPushes(t, srv, alice, "", nil)
	for _, path := range []string{"/api/v1/ws", "/api/v1/pushes/subscribe", "/api/v1/pushes/poll?timeout=0"} {
		resp := getWith(t, srv.URL+path, alice, http.Header{
			"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
			"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="},
		})
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusTooManyRequests || errorCode(t, string(b)) != "too_many_connections" {
			t.Errorf("%s over the cap: %d %s", path, resp.StatusCode, b)
		}
	}
}

// Pushes received over HTTP are acked by POST …/acks: the ack is the
// caller's and counts for its connection the push was delivered to.
func TestPushAcksOverHTTP(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	alice := userToken(t, "alice")
	s, cf := openPushes(t, srv, alice, "", nil)
	_, silent := openPushes(t, srv, userToken(t, "bob"), "", nil)

	done := make(chan NotifyResult, 1)
	go func() {
		res, _ := rt.Notify(context.Background(), Notification{Event: "q", AwaitAcks: hangGuard})
		done <- res
	}()
	e := expectPush(t, s, "q")
	for _, tc := range []struct {
		body string
		code int
	}{
		{`{"envelopeId":"` + e.EnvelopeID + `","result":1,"connectionId":"x"}`, http.StatusBadRequest},
		{`{"result":1}`, http.StatusBadRequest},
		{`{"envelopeId":7}`, http.StatusBadRequest},
	} {
		if code := postAck(t, srv, alice, tc.body); code != tc.code {
			t.Fatalf("ack %s: %d, want %d", tc.body, code, tc.code)
		}
	}
	if code := postAck(t, srv, "", `{"envelopeId":"`+e.EnvelopeID+`"}`); code != http.StatusUnauthorized {
		t.Fatalf("ack without token: %d", code)
	}
	// Another tenant's user of the same name cannot ack it.
	if code := postAck(t, srv, tenantToken(t, "alice", "t2"), `{"envelopeId":"`+e.EnvelopeID+`","result":"foreign"}`); code != http.StatusNoContent {
		t.Fatalf("foreign ack: %d", code)
	}
	if code := postAck(t, srv, alice, `{"envelopeId":"`+e.EnvelopeID+`","result":{"ok":true}}`); code != http.StatusNoContent {
		t.Fatalf("ack: %d", code)
	}
	if code := postAck(t, srv, userToken(t, "bob"), `{"envelopeId":"`+e.EnvelopeID+`","result":"bob"}`); code != http.StatusNoContent {
		t.Fatalf("bob's ack: %d", code)
	}
	var res NotifyResult
	select {
	case res = <-done:
	case <-time.After(hangGuard):
		t.Fatal("Notify still waiting though every connection acked")
	}
	if res.Delivered != 2 || len(res.Acks) != 2 || res.TimedOut != 0 {
		t.Fatalf("result %+v", res)
	}
	byUser := map[string]Ack{}
	for _, a := range res.Acks {
		byUser[a.User] = a
	}
	if a := byUser["alice"]; a.ConnectionID != cf.ConnectionID || string(a.Result) != `{"ok":true}` {
		t.Fatalf("alice's ack %+v, want connection %s", a, cf.ConnectionID)
	}
	if a := byUser["bob"]; a.ConnectionID != silent.ConnectionID || string(a.Result) != `"bob"` {
		t.Fatalf("bob's ack %+v", a)
	}
}

// A pushes poll answers the same selection as JSON, resumable on one
// concrete channel, and is reached, counted and awaited like a connection.
func TestPushPoll(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	alice := userToken(t, "alice")
	if code, r := pollPushes(t, srv, alice, "timeout=0.05"); code != http.StatusOK || len(r.Messages) != 0 || r.LastEventID != "" {
		t.Fatalf("empty poll: %d %+v", code, r)
	}
	type answer struct {
		code int
		r    pushPollResponse
	}
	got := make(chan answer, 1)
	go func() {
		code, r := pollPushes(t, srv, alice, "timeout=30")
		got <- answer{code, r}
	}()
	var res NotifyResult
	waitFor(t, "the push to reach the poll", func() bool {
		res = notify(t, rt, Notification{Users: []string{"alice"}, Event: "hello"})
		return res.Delivered == 1
	})
	a := <-got
	if a.code != http.StatusOK || len(a.r.Messages) != 1 {
		t.Fatalf("poll: %d %+v", a.code, a.r)
	}
	var e envelope
	if json.Unmarshal(a.r.Messages[0], &e) != nil || e.EnvelopeID != res.EnvelopeID || e.Event != "hello" {
		t.Fatalf("message %s, want %s", a.r.Messages[0], res.EnvelopeID)
	}

	// Resume on one concrete channel: what came after lastEventId, then
	// the new position; an unknown position is the channel's resync.
	ids := pushIDs(t, rt, "orders.new", 0, 3)
	code, r := pollPushes(t, srv, alice, "channels=orders.new&lastEventId="+ids[0])
	if code != http.StatusOK || strings.Join(envelopeIDs(t, r.Messages), ",") != strings.Join(ids[1:], ",") || r.LastEventID != ids[2] {
		t.Fatalf("resumed poll: %d %+v, want %v", code, r, ids[1:])
	}
	code, r = pollPushes(t, srv, alice, "channels=orders.new&timeout=0.05&lastEventId="+ids[2])
	if code != http.StatusOK || len(r.Messages) != 0 || r.LastEventID != ids[2] {
		t.Fatalf("up-to-date poll: %d %+v", code, r)
	}
	code, r = pollPushes(t, srv, alice, "channels=orders.new&lastEventId=unknown")
	var rs struct{ Type, Channel, Reason string }
	if code != http.StatusOK || len(r.Messages) != 1 || json.Unmarshal(r.Messages[0], &rs) != nil ||
		rs.Type != EventResync || rs.Channel != "orders.new" || rs.Reason != reasonBufferMiss {
		t.Fatalf("poll from an unknown position: %d %+v", code, r)
	}

	// Acks of a polled push: Notify awaits the poll like a connection.
	done := make(chan NotifyResult, 1)
	go func() {
		code, r := pollPushes(t, srv, alice, "timeout=30")
		var e envelope
		if code != http.StatusOK || len(r.Messages) != 1 || json.Unmarshal(r.Messages[0], &e) != nil {
			t.Errorf("poll for the ack: %d %+v", code, r)
			close(done)
			return
		}
		postAck(t, srv, alice, `{"envelopeId":"`+e.EnvelopeID+`","result":"polled"}`)
	}()
	waitFor(t, "the awaited push to reach the poll", func() bool {
		res = notify(t, rt, Notification{Users: []string{"alice"}, Event: "q", AwaitAcks: hangGuard})
		return res.Delivered == 1
	})
	if len(res.Acks) != 1 || res.Acks[0].User != "alice" || string(res.Acks[0].Result) != `"polled"` || res.TimedOut != 0 {
		t.Fatalf("awaited poll: %+v", res)
	}
}

// The pushes stream resumes its one concrete channel by Last-Event-ID;
// pushes to users carry no id, so the browser's Last-Event-ID stays a
// channel position.
func TestPushStreamResume(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	alice := userToken(t, "alice")
	ids := pushIDs(t, rt, "orders.new", 0, 3)
	s, _ := openPushes(t, srv, alice, "?channels=orders.new", http.Header{"Last-Event-Id": {ids[0]}})
	for _, id := range ids[1:] {
		if e := expectPush(t, s, "e"+map[string]string{ids[1]: "1", ids[2]: "2"}[id]); e.EnvelopeID != id {
			t.Fatalf("replayed %s, want %s", e.EnvelopeID, id)
		}
	}
	notify(t, rt, Notification{Users: []string{"alice"}, Event: "direct"})
	expectPush(t, s, "direct")
	s2, _ := openPushes(t, srv, alice, "?channels=orders.new", http.Header{"Last-Event-Id": {"gone"}})
	f := readFrames(t, s2.fr, 1)[0]
	if f.Event != EventResync || f.HasID || !strings.Contains(f.Data, `"channel":"orders.new"`) {
		t.Fatalf("resume from an unknown id: %+v, want resync", f)
	}
}
