package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/websocket"
)

// pushIDs pushes n messages event e0… to channel and returns their envelopeIds.
func pushIDs(t testing.TB, rt *Plugin, channel string, from, to int) []string {
	t.Helper()
	var ids []string
	for i := from; i < to; i++ {
		res := notify(t, rt, Notification{Channel: channel, Event: fmt.Sprintf("e%d", i), Data: map[string]int{"n": i}})
		ids = append(ids, res.EnvelopeID)
	}
	return ids
}

// subscribeSince subscribes c to channels with since and reads the
// subscribed answer.
func subscribeSince(t testing.TB, c *websocket.Conn, channels []string, since map[string]string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"type": "subscribe", "channels": channels, "since": since})
	sendWS(t, c, string(b))
	expectType(t, c, "subscribed")
}

// expectPushes reads len(ids) message frames and checks their envelopeIds.
func expectPushes(t testing.TB, c *websocket.Conn, ids ...string) {
	t.Helper()
	for i, id := range ids {
		f := expectType(t, c, "message")
		if f.EnvelopeID != id {
			t.Fatalf("push %d: %s, want envelopeId %s", i, f.raw, id)
		}
	}
}

// chanSSEURL is the SSE channel stream URL of srv for channels.
func chanSSEURL(srv *httptest.Server, channels string) string {
	return srv.URL + "/api/v1/channels/subscribe?channels=" + url.QueryEscape(channels)
}

// history reads GET …/channels/:channel/history as tok.
func history(t testing.TB, srv *httptest.Server, tok, channel, query string) (int, channelHistoryAnswer, string) {
	t.Helper()
	resp := getWith(t, srv.URL+"/api/v1/channels/"+channel+"/history"+query, tok, nil)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var a channelHistoryAnswer
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &a); err != nil {
			t.Fatalf("history body %s: %v", b, err)
		}
	}
	return resp.StatusCode, a, string(b)
}

func envelopeIDs(t testing.TB, msgs []json.RawMessage) []string {
	t.Helper()
	out := []string{}
	for _, m := range msgs {
		var e envelope
		if err := json.Unmarshal(m, &e); err != nil || e.Type != "message" {
			t.Fatalf("history message %s: %v", m, err)
		}
		out = append(out, e.EnvelopeID)
	}
	return out
}

func TestChannelSinceReplaysExactlyTheMissed(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	tok := userToken(t, "alice")
	c, _ := connectWS(t, srv, tok)
	subscribeSince(t, c, []string{"orders.new"}, nil)
	seen := pushIDs(t, rt, "orders.new", 0, 3)
	expectPushes(t, c, seen...)
	c.Close()

	missed := pushIDs(t, rt, "orders.new", 3, 6)
	pushIDs(t, rt, "orders.other", 0, 2) // another channel: not replayed
	c2, _ := connectWS(t, srv, tok)
	subscribeSince(t, c2, []string{"orders.new", "misc.*"}, map[string]string{"orders.new": seen[2]})
	expectPushes(t, c2, missed...)
	live := pushIDs(t, rt, "orders.new", 6, 7)
	expectPushes(t, c2, live...)

	// Up to date: nothing replayed, live follows.
	c3, _ := connectWS(t, srv, tok)
	subscribeSince(t, c3, []string{"orders.new"}, map[string]string{"orders.new": live[0]})
	more := pushIDs(t, rt, "orders.new", 7, 8)
	expectPushes(t, c3, more...)
}

func TestChannelSinceMissGivesResync(t *testing.T) {
	rt, srv := newTestServer(t, Config{BufferSize: 3})
	ids := pushIDs(t, rt, "orders.new", 0, 5) // ids[0], ids[1] evicted
	c, _ := connectWS(t, srv, userToken(t, "alice"))
	for _, since := range []string{ids[0], "never-pushed"} {
		subscribeSince(t, c, []string{"orders.new"}, map[string]string{"orders.new": since})
		f := expectType(t, c, "resync")
		if f.Channel != "orders.new" || !strings.Contains(string(f.raw), `"reason":"buffer-miss"`) {
			t.Fatalf("resync frame %s", f.raw)
		}
		sendWS(t, c, `{"type":"unsubscribe","channels":["orders.new"]}`)
		expectType(t, c, "unsubscribed")
	}
	// An unknown channel is a miss too; then live.
	subscribeSince(t, c, []string{"fresh"}, map[string]string{"fresh": "x"})
	expectType(t, c, "resync")
	live := pushIDs(t, rt, "fresh", 0, 1)
	expectPushes(t, c, live...)
}

func TestChannelSinceBadRequests(t *testing.T) {
	_, srv := newTestServer(t, Config{})
	c, _ := connectWS(t, srv, userToken(t, "alice"))
	for _, frame := range []string{
		`{"type":"subscribe","channels":["orders.*"],"since":{"orders.*":"x"}}`,
		`{"type":"subscribe","channels":["orders.new"],"since":{"orders.old":"x"}}`,
		`{"type":"subscribe","channels":["orders.new"],"since":{"orders.new":""}}`,
		`{"type":"subscribe","channels":["orders.new"],"since":["orders.new"]}`,
		`{"type":"subscribe","since":{"orders.new":"x"}}`,
	} {
		sendWS(t, c, frame)
		if f := expectType(t, c, "error"); f.Code != "bad_request" {
			t.Fatalf("%s: %s", frame, f.raw)
		}
	}
	sendWS(t, c, `{"type":"ping"}`)
	expectType(t, c, "pong")
}

// Pushes racing a since-subscribe: the resumed connection gets every push
// after its resume point once, in order, whatever the interleaving.
func TestChannelSinceHandOverUnderConcurrentPushes(t *testing.T) {
	rt, srv := newTestServer(t, Config{BufferSize: 1000})
	tok := userToken(t, "alice")
	for round := range 20 {
		ch := fmt.Sprintf("race.r%d", round)
		prefix := pushIDs(t, rt, ch, 0, 3)
		c, _ := connectWS(t, srv, tok)
		const pushers, each = 3, 15
		var (
			mu  sync.Mutex
			ids [pushers][]string
			wg  sync.WaitGroup
		)
		start := make(chan struct{})
		for w := range pushers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := range each {
					res, err := rt.Notify(context.Background(), Notification{Channel: ch, Event: "e", Data: map[string]int{"w": w, "i": i}})
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					ids[w] = append(ids[w], res.EnvelopeID)
					mu.Unlock()
				}
			}()
		}
		close(start)
		b, _ := json.Marshal(map[string]any{"type": "subscribe", "channels": []string{ch}, "since": map[string]string{ch: prefix[1]}})
		sendWS(t, c, string(b))
		expectType(t, c, "subscribed")
		wg.Wait()
		want := map[string]int{prefix[2]: -1}
		for w := range pushers {
			for i, id := range ids[w] {
				want[id] = w*1000 + i
			}
		}
		got := map[string]bool{}
		lastOf := make([]int, pushers)
		for i := range lastOf {
			lastOf[i] = -1
		}
		for len(got) < len(want) {
			f := expectType(t, c, "message")
			if got[f.EnvelopeID] {
				t.Fatalf("round %d: %s twice", round, f.EnvelopeID)
			}
			pos, ok := want[f.EnvelopeID]
			if !ok {
				t.Fatalf("round %d: unexpected push %s", round, f.raw)
			}
			got[f.EnvelopeID] = true
			if pos >= 0 { // each pusher's pushes in its order
				w, i := pos/1000, pos%1000
				if i <= lastOf[w] {
					t.Fatalf("round %d: pusher %d push %d after %d", round, w, i, lastOf[w])
				}
				lastOf[w] = i
			}
		}
		// Nothing more: a ping's pong comes next.
		sendWS(t, c, `{"type":"ping"}`)
		expectType(t, c, "pong")
		c.Close()
	}
}

func TestChannelTargetingInReplayAndHistory(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	all := notify(t, rt, Notification{Channel: "team", Event: "all"}).EnvelopeID
	first := all
	forAlice := notify(t, rt, Notification{Channel: "team", Event: "alice-only", Users: []string{"alice"}}).EnvelopeID
	notBob := notify(t, rt, Notification{Channel: "team", Event: "not-bob", ExcludeUsers: []string{"bob"}}).EnvelopeID
	last := notify(t, rt, Notification{Channel: "team", Event: "last"}).EnvelopeID
	_ = first

	code, a, body := history(t, srv, userToken(t, "bob"), "team", "")
	if code != 200 || a.Channel != "team" {
		t.Fatalf("history: %d %s", code, body)
	}
	if got := envelopeIDs(t, a.Messages); !slices.Equal(got, []string{all, last}) {
		t.Fatalf("bob's history %v, want %v", got, []string{all, last})
	}
	_, a, _ = history(t, srv, userToken(t, "alice"), "team", "")
	if got := envelopeIDs(t, a.Messages); !slices.Equal(got, []string{all, forAlice, notBob, last}) {
		t.Fatalf("alice's history %v", got)
	}
	_, a, _ = history(t, srv, userToken(t, "carol"), "team", "")
	if got := envelopeIDs(t, a.Messages); !slices.Equal(got, []string{all, notBob, last}) {
		t.Fatalf("carol's history %v", got)
	}
	// The Go API sees everything.
	msgs, err := rt.ChannelHistory(context.Background(), DefaultTenant, "team", 0)
	if err != nil || len(msgs) != 4 {
		t.Fatalf("ChannelHistory: %d %v", len(msgs), err)
	}

	bob, _ := connectWS(t, srv, userToken(t, "bob"))
	subscribeSince(t, bob, []string{"team"}, map[string]string{"team": all})
	expectPushes(t, bob, last)
	alice, _ := connectWS(t, srv, userToken(t, "alice"))
	subscribeSince(t, alice, []string{"team"}, map[string]string{"team": all})
	expectPushes(t, alice, forAlice, notBob, last)
	// Filters apply to the replay as to live pushes.
	carol, _ := connectWS(t, srv, userToken(t, "carol"))
	sendWS(t, carol, `{"type":"subscribe","filters":[{"type":"last"}]}`)
	expectType(t, carol, "subscribed")
	subscribeSince(t, carol, []string{"team"}, map[string]string{"team": all})
	expectPushes(t, carol, last)
}

func TestChannelHistoryOldestFirstAndLimit(t *testing.T) {
	rt, srv := newTestServer(t, Config{BufferSize: 5})
	tok := userToken(t, "alice")
	ids := pushIDs(t, rt, "feed.main", 0, 8)
	code, a, body := history(t, srv, tok, "feed.main", "")
	if code != 200 || !slices.Equal(envelopeIDs(t, a.Messages), ids[3:]) {
		t.Fatalf("history %d %s, want %v", code, body, ids[3:])
	}
	_, a, _ = history(t, srv, tok, "feed.main", "?limit=2")
	if got := envelopeIDs(t, a.Messages); !slices.Equal(got, ids[6:]) {
		t.Fatalf("limit 2: %v", got)
	}
	_, a, _ = history(t, srv, tok, "feed.main", "?limit=500")
	if len(a.Messages) != 5 {
		t.Fatalf("limit over BufferSize: %d", len(a.Messages))
	}
	// Exactly the bytes pushed on the WebSocket.
	var e envelope
	json.Unmarshal(a.Messages[4], &e)
	if e.Event != "e7" || e.Channel != "feed.main" || string(e.Data) != `{"n":7}` {
		t.Fatalf("message %s", a.Messages[4])
	}
	code, a, _ = history(t, srv, tok, "never.used", "")
	if code != 200 || a.Messages == nil || len(a.Messages) != 0 {
		t.Fatalf("empty history: %d %+v", code, a)
	}
	for _, bad := range []struct{ ch, q string }{{"feed.*", ""}, {"feed.>", ""}, {"feed.main", "?limit=0"}, {"feed.main", "?limit=x"}, {"a..b", ""}} {
		if code, _, body := history(t, srv, tok, bad.ch, bad.q); code != 400 {
			t.Fatalf("%s%s: %d %s", bad.ch, bad.q, code, body)
		}
	}
	if code, _, _ := history(t, srv, "", "feed.main", ""); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	// Tenants never see each other's channels.
	_, a, _ = history(t, srv, tenantToken(t, "alice", "other"), "feed.main", "")
	if len(a.Messages) != 0 {
		t.Fatalf("other tenant sees %d messages", len(a.Messages))
	}
}

func TestChannelSSEWildcardsAndResume(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	tok := userToken(t, "alice")
	s := openStream(t, srv.Client(), chanSSEURL(srv, "orders.*,user.alice"), tok, nil)
	a := notify(t, rt, Notification{Channel: "orders.new", Event: "order_created", Data: map[string]int{"id": 1}})
	notify(t, rt, Notification{Channel: "other.new", Event: "nope"})
	notify(t, rt, Notification{Event: "no-channel"})
	b := notify(t, rt, Notification{Channel: "user.alice", Event: "hi", Users: []string{"alice"}})
	notify(t, rt, Notification{Channel: "orders.eu.new", Event: "nope"})
	c := notify(t, rt, Notification{Channel: "orders.old", Event: "gone"})
	if c.Delivered != 1 || c.Users != 1 {
		t.Fatalf("notify result %+v", c)
	}
	msgs, _ := rt.ChannelHistory(context.Background(), DefaultTenant, "orders.new", 1)
	expectFrames(t, s,
		frame{"order_created", a.EnvelopeID, string(msgs[0])},
		frame{"hi", b.EnvelopeID, ""},
		frame{"gone", c.EnvelopeID, ""})
	// SSE streams are not presence, and not awaited for acks.
	if _, n, _ := rt.Presence(context.Background(), DefaultTenant); n != 0 {
		t.Fatalf("presence counts %d connections", n)
	}
	if res := notify(t, rt, Notification{Channel: "orders.new", Event: "x", AwaitAcks: 50e6}); res.Delivered != 1 || res.TimedOut != 0 {
		t.Fatalf("await acks result %+v", res)
	}
	s.close()

	// One concrete channel: Last-Event-ID resumes it.
	ids := pushIDs(t, rt, "orders.new", 0, 3)
	r := openStream(t, srv.Client(), chanSSEURL(srv, "orders.new"), tok, http.Header{"Last-Event-Id": {ids[0]}})
	expectFrames(t, r, frame{"e1", ids[1], ""}, frame{"e2", ids[2], ""})
	live := pushIDs(t, rt, "orders.new", 3, 4)
	expectFrames(t, r, frame{"e3", live[0], ""})
	r.close()
	// The lastEventId query parameter too.
	q := openStream(t, srv.Client(), chanSSEURL(srv, "orders.new")+"&lastEventId="+ids[1], tok, nil)
	expectFrames(t, q, frame{"e2", ids[2], ""}, frame{"e3", live[0], ""})
	q.close()
	// A miss: resync without an id, then live.
	m := openStream(t, srv.Client(), chanSSEURL(srv, "orders.new"), tok, http.Header{"Last-Event-Id": {"unknown"}})
	expectFrames(t, m, frame{EventResync, "", `{"channel":"orders.new","reason":"buffer-miss"}`})
	more := pushIDs(t, rt, "orders.new", 4, 5)
	expectFrames(t, m, frame{"e4", more[0], ""})
	// With a pattern Last-Event-ID is ignored: live only.
	w := openStream(t, srv.Client(), chanSSEURL(srv, "orders.*"), tok, http.Header{"Last-Event-Id": {ids[0]}})
	more = pushIDs(t, rt, "orders.new", 5, 6)
	expectFrames(t, w, frame{"e5", more[0], ""})
}

func TestChannelSSEBadRequests(t *testing.T) {
	_, srv := newTestServer(t, Config{WSMaxChannels: 2})
	tok := userToken(t, "alice")
	for _, q := range []string{"", "?channels=", "?channels=a..b", "?channels=a,b,c", "?channels=a%20b"} {
		resp := getWith(t, srv.URL+"/api/v1/channels/subscribe"+q, tok, nil)
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("%q: %d", q, resp.StatusCode)
		}
	}
	resp := getWith(t, chanSSEURL(srv, "a"), "", nil)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
}

func TestNotifyRefusesEventsThatBreakSSE(t *testing.T) {
	rt, _ := newTestServer(t, Config{})
	for _, ev := range []string{"a\nb", "a\rb", "a\x00b"} {
		if _, err := rt.Notify(context.Background(), Notification{Channel: "x", Event: ev}); !errors.Is(err, ErrBadRequest) {
			t.Fatalf("%q: %v", ev, err)
		}
	}
}

// Resume on node B of pushes made on node A; history and SSE across nodes.
func TestChannelCrossNodes(t *testing.T) {
	_, a, _, _, sb := twoNodes(t, Config{})
	tok := userToken(t, "alice")
	s := openStream(t, sb.Client(), chanSSEURL(sb, "orders.*"), tok, nil)
	ids := pushIDs(t, a, "orders.new", 0, 4)
	expectFrames(t, s, frame{"e0", ids[0], ""}, frame{"e1", ids[1], ""}, frame{"e2", ids[2], ""}, frame{"e3", ids[3], ""})

	code, h, body := history(t, sb, tok, "orders.new", "")
	if code != 200 || !slices.Equal(envelopeIDs(t, h.Messages), ids) {
		t.Fatalf("history on B: %d %s", code, body)
	}
	c, _ := connectWS(t, sb, tok)
	subscribeSince(t, c, []string{"orders.new"}, map[string]string{"orders.new": ids[1]})
	expectPushes(t, c, ids[2], ids[3])
	live := pushIDs(t, a, "orders.new", 4, 5)
	expectPushes(t, c, live...)
	r := openStream(t, sb.Client(), chanSSEURL(sb, "orders.new"), tok, http.Header{"Last-Event-Id": {ids[2]}})
	expectFrames(t, r, frame{"e3", ids[3], ""}, frame{"e4", live[0], ""})
	// Delivered counts cover B's stream.
	if res := notify(t, a, Notification{Channel: "orders.new", Event: "x", AwaitAcks: 50e6}); res.Delivered != 3 || res.TimedOut != 1 {
		// s (orders.*), r (orders.new) and c, the one WebSocket, which does not ack.
		t.Fatalf("result %+v", res)
	}
}

// The unreachable shared buffer: Notify with a channel answers 503 and
// delivers nothing; a since-subscribe gets resync.
func TestChannelBrokerDown(t *testing.T) {
	m, a, _, sa, _ := twoNodes(t, Config{})
	tok := userToken(t, "alice")
	c, _ := connectWS(t, sa, tok)
	subscribeSince(t, c, []string{"orders.new"}, nil)
	m.SetUnavailable(errors.New("down"))
	if _, err := a.Notify(context.Background(), Notification{Channel: "orders.new", Event: "x"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Notify while down: %v", err)
	}
	c2, _ := connectWS(t, sa, tok)
	subscribeSince(t, c2, []string{"orders.new"}, map[string]string{"orders.new": "x"})
	expectType(t, c2, "resync")
	if code, _, _ := history(t, sa, tok, "orders.new", ""); code != 503 {
		t.Fatalf("history while down: %d", code)
	}
	m.SetUnavailable(nil)
	sendWS(t, c, `{"type":"ping"}`)
	expectType(t, c, "pong") // nothing was delivered
}

// userChannels is the example CMS's rule: user.<x> only for x itself, and
// no pattern that could reach another user's channel.
func userChannels(_ context.Context, a ChannelAccess) error {
	first, rest, _ := strings.Cut(a.Channel, ".")
	switch first {
	case "user":
		if rest == a.Identity.User {
			return nil
		}
		return ErrForbidden
	case "*", ">":
		if a.Pattern {
			return ErrForbidden
		}
	}
	return nil
}

func TestChannelAuthorizationOnAllPaths(t *testing.T) {
	rt, srv := newTestServer(t, Config{AuthorizeChannel: userChannels})
	id := notify(t, rt, Notification{Channel: "user.123", Event: "secret"}).EnvelopeID
	mallory := userToken(t, "456")

	// WebSocket: the refused channel gets an error frame, the others are subscribed.
	c, _ := connectWS(t, srv, mallory)
	sendWS(t, c, `{"type":"subscribe","channels":["user.123","news","user.*","user.456"],"since":{"user.123":"`+id+`"}}`)
	for _, ch := range []string{"user.123", "user.*"} {
		f := expectType(t, c, "error")
		if f.Code != "forbidden" || f.Channel != ch {
			t.Fatalf("refusal %s", f.raw)
		}
	}
	f := expectType(t, c, "subscribed")
	if !slices.Equal(f.Channels, []string{"news", "user.456"}) {
		t.Fatalf("subscribed %s", f.raw)
	}
	notify(t, rt, Notification{Channel: "user.123", Event: "secret"})
	news := notify(t, rt, Notification{Channel: "news", Event: "n"}).EnvelopeID
	expectPushes(t, c, news)

	// SSE: 403 before the stream.
	for _, chs := range []string{"user.123", "news,user.123", "*.123", "user.>"} {
		resp := getWith(t, chanSSEURL(srv, chs), mallory, nil)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 403 || errorCode(t, string(b)) != "forbidden" {
			t.Fatalf("SSE %s: %d %s", chs, resp.StatusCode, b)
		}
	}
	// History: 403.
	if code, _, body := history(t, srv, mallory, "user.123", ""); code != 403 {
		t.Fatalf("history: %d %s", code, body)
	}
	if _, err := rt.ChannelHistoryFor(context.Background(), &Identity{User: "456", Tenant: DefaultTenant}, "user.123", 0); !errors.Is(err, ErrForbidden) {
		t.Fatalf("ChannelHistoryFor: %v", err)
	}
	// The owner reads all three ways.
	owner := userToken(t, "123")
	if code, a, _ := history(t, srv, owner, "user.123", ""); code != 200 || len(a.Messages) != 2 {
		t.Fatalf("owner history: %d %d", code, len(a.Messages))
	}
	s := openStream(t, srv.Client(), chanSSEURL(srv, "user.123"), owner, http.Header{"Last-Event-Id": {id}})
	readFrames(t, s.fr, 1)
	o, _ := connectWS(t, srv, owner)
	subscribeSince(t, o, []string{"user.123"}, map[string]string{"user.123": id})
	expectType(t, o, "message")
}

func FuzzChannelQueries(f *testing.F) {
	f.Add("orders.*,user.123", `{"orders.new":"x"}`)
	f.Add(" a , a ,b.>", `{"a":""}`)
	f.Add(",,", `[]`)
	f.Add("a..b", `{"a.*":"y"}`)
	f.Fuzz(func(t *testing.T, channels, since string) {
		chs, err := parseChannelList([]string{channels}, 10)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if len(chs) == 0 || len(chs) > 10 {
			t.Fatalf("%d channels", len(chs))
		}
		for _, ch := range chs {
			if validChannel(ch, true) != nil {
				t.Fatalf("invalid %q accepted", ch)
			}
		}
		m, err := parseSince(json.RawMessage(since), chs)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("since error %v", err)
			}
			return
		}
		for ch, id := range m {
			if validChannel(ch, false) != nil || !slices.Contains(chs, ch) || id == "" || strings.ContainsAny(id, "\r\n\x00") {
				t.Fatalf("since %q: %q accepted", ch, id)
			}
		}
	})
}
