package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// notify pushes n and fails t on error.
func notify(t testing.TB, rt *Plugin, n Notification) NotifyResult {
	t.Helper()
	res, err := rt.Notify(context.Background(), n)
	if err != nil {
		t.Fatalf("Notify %+v: %v", n, err)
	}
	return res
}

// expectMessage reads the next frame and checks it is the push of event.
func expectMessage(t testing.TB, c *websocket.Conn, event string) wsFrame {
	t.Helper()
	f := expectType(t, c, "message")
	if f.Event != event {
		t.Fatalf("got push %s, want event %q", f.raw, event)
	}
	return f
}

func TestNotifyEnvelopeSameBytes(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	a, _ := connectWS(t, srv, userToken(t, "alice"))
	b, _ := connectWS(t, srv, userToken(t, "bob"))
	res := notify(t, rt, Notification{Event: "hello", Data: map[string]any{"n": 1}})
	if res.Delivered != 2 || res.Users != 2 || len(res.EnvelopeID) != 36 || len(res.Acks) != 0 || res.TimedOut != 0 {
		t.Fatalf("result %+v", res)
	}
	fa, fb := expectMessage(t, a, "hello"), expectMessage(t, b, "hello")
	if !bytes.Equal(fa.raw, fb.raw) {
		t.Fatalf("different bytes:\n%s\n%s", fa.raw, fb.raw)
	}
	if fa.EnvelopeID != res.EnvelopeID || string(fa.Data) != `{"n":1}` || fa.Channel != "" {
		t.Fatalf("envelope %s", fa.raw)
	}
	if _, err := time.Parse(time.RFC3339, fa.Timestamp); err != nil {
		t.Fatalf("timestamp %q: %v", fa.Timestamp, err)
	}
	var keys map[string]json.RawMessage
	json.Unmarshal(fa.raw, &keys)
	for _, k := range []string{"type", "envelopeId", "channel", "event", "data", "timestamp"} {
		if _, ok := keys[k]; !ok {
			t.Fatalf("envelope %s lacks %q", fa.raw, k)
		}
	}
	notify(t, rt, Notification{Event: "raw", Data: json.RawMessage(`[1,2]`)})
	if f := expectMessage(t, a, "raw"); string(f.Data) != `[1,2]` {
		t.Fatalf("raw data %s", f.raw)
	}
}

func TestNotifyMulticastDuplicatesExclusions(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	a1, _ := connectWS(t, srv, userToken(t, "alice"))
	a2, _ := connectWS(t, srv, userToken(t, "alice"))
	b, _ := connectWS(t, srv, userToken(t, "bob"))
	c, _ := connectWS(t, srv, userToken(t, "carol"))

	res := notify(t, rt, Notification{Users: []string{"alice", "alice", "bob", "carol", "nobody"}, ExcludeUsers: []string{"carol"}, Event: "m1"})
	if res.Delivered != 3 || res.Users != 2 {
		t.Fatalf("multicast %+v", res)
	}
	res = notify(t, rt, Notification{ExcludeUsers: []string{"alice"}, Event: "m2"})
	if res.Delivered != 2 || res.Users != 2 {
		t.Fatalf("broadcast except %+v", res)
	}
	res = notify(t, rt, Notification{Event: "m3"})
	if res.Delivered != 4 || res.Users != 3 {
		t.Fatalf("broadcast %+v", res)
	}
	// Each connection got exactly its pushes, in order, once.
	for _, x := range []*websocket.Conn{a1, a2} {
		expectMessage(t, x, "m1")
		expectMessage(t, x, "m3")
	}
	expectMessage(t, b, "m1")
	expectMessage(t, b, "m2")
	expectMessage(t, b, "m3")
	expectMessage(t, c, "m2")
	expectMessage(t, c, "m3")
}

func TestNotifyNoCrossTenantDelivery(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	d, _ := connectWS(t, srv, userToken(t, "alice"))
	t2, _ := connectWS(t, srv, tenantToken(t, "alice", "t2"))
	if res := notify(t, rt, Notification{Users: []string{"alice"}, Event: "default-only"}); res.Delivered != 1 {
		t.Fatalf("%+v", res)
	}
	notify(t, rt, Notification{Event: "everyone-default"})
	if res := notify(t, rt, Notification{Tenant: "t2", Event: "t2-marker"}); res.Delivered != 1 {
		t.Fatalf("%+v", res)
	}
	expectMessage(t, t2, "t2-marker") // nothing of the default tenant came first
	expectMessage(t, d, "default-only")
	expectMessage(t, d, "everyone-default")
	// The tenant of ctx.
	res, err := rt.Notify(WithTenant(context.Background(), "t2"), Notification{Event: "ctx"})
	if err != nil || res.Delivered != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	expectMessage(t, t2, "ctx")
}

func TestNotifyChannelsWithWildcards(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	a, _ := connectWS(t, srv, userToken(t, "alice"))
	b, _ := connectWS(t, srv, userToken(t, "bob"))
	sendWS(t, a, `{"type":"subscribe","channels":["orders.*","user.>"]}`)
	if f := expectType(t, a, "subscribed"); fmt.Sprint(f.Channels) != "[orders.* user.>]" {
		t.Fatalf("subscribed %s", f.raw)
	}
	sendWS(t, a, `{"type":"subscribe","channels":["news"]}`)
	if f := expectType(t, a, "subscribed"); fmt.Sprint(f.Channels) != "[news orders.* user.>]" {
		t.Fatalf("subscribed %s", f.raw)
	}
	for _, ch := range []string{"orders.eu.new", "orders", "user", "other.x"} {
		if res := notify(t, rt, Notification{Channel: ch, Event: "miss"}); res.Delivered != 0 {
			t.Fatalf("channel %s delivered %+v", ch, res)
		}
	}
	for _, ch := range []string{"orders.new", "user.1", "user.1.inbox", "news"} {
		if res := notify(t, rt, Notification{Channel: ch, Event: "hit"}); res.Delivered != 1 {
			t.Fatalf("channel %s: %+v", ch, res)
		}
		if f := expectMessage(t, a, "hit"); f.Channel != ch {
			t.Fatalf("push %s, want channel %s", f.raw, ch)
		}
	}
	// Users and channel together: only alice's subscribed connections.
	if res := notify(t, rt, Notification{Users: []string{"alice", "bob"}, Channel: "user.7", Event: "both"}); res.Delivered != 1 || res.Users != 1 {
		t.Fatalf("users+channel %+v", res)
	}
	expectMessage(t, a, "both")
	if res := notify(t, rt, Notification{Users: []string{"alice"}, Channel: "orders.a.b", Event: "miss"}); res.Delivered != 0 {
		t.Fatalf("users+channel miss %+v", res)
	}

	sendWS(t, a, `{"type":"unsubscribe","channels":["orders.*","never"]}`)
	if f := expectType(t, a, "unsubscribed"); fmt.Sprint(f.Channels) != "[news user.>]" {
		t.Fatalf("unsubscribed %s", f.raw)
	}
	if res := notify(t, rt, Notification{Channel: "orders.new", Event: "miss"}); res.Delivered != 0 {
		t.Fatalf("after unsubscribe %+v", res)
	}
	notify(t, rt, Notification{Event: "marker"})
	expectMessage(t, a, "marker")
	expectMessage(t, b, "marker") // bob got no channel push before

	sendWS(t, a, `{"type":"subscribe","channels":["bad..name"]}`)
	expectType(t, a, "error")
	if _, err := rt.Notify(context.Background(), Notification{Channel: "orders.*", Event: "x"}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("publish to a pattern: %v", err)
	}
}

func TestNotifyFilters(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	a, _ := connectWS(t, srv, userToken(t, "alice"))
	sendWS(t, a, `{"type":"subscribe","filters":[{"type":"chat_message","questId":"q1"},{"type":"ping_all"}]}`)
	expectType(t, a, "subscribed")
	for _, n := range []Notification{
		{Event: "chat_message", Data: map[string]any{"questId": "q2"}},
		{Event: "other", Data: map[string]any{"questId": "q1"}},
		{Event: "chat_message", Data: "q1"},
	} {
		if res := notify(t, rt, n); res.Delivered != 0 {
			t.Fatalf("%+v passed the filters: %+v", n, res)
		}
	}
	if res := notify(t, rt, Notification{Event: "chat_message", Data: map[string]any{"questId": "q1", "text": "hi"}}); res.Delivered != 1 {
		t.Fatalf("matching push: %+v", res)
	}
	expectMessage(t, a, "chat_message")
	notify(t, rt, Notification{Event: "ping_all"})
	expectMessage(t, a, "ping_all")

	sendWS(t, a, `{"type":"subscribe","filters":[{"nested":{"x":1}}]}`)
	expectType(t, a, "error")

	sendWS(t, a, `{"type":"unsubscribe","filters":[]}`)
	expectType(t, a, "unsubscribed")
	if res := notify(t, rt, Notification{Event: "other"}); res.Delivered != 1 {
		t.Fatalf("after unsubscribe: %+v", res)
	}
	expectMessage(t, a, "other")
}

func TestNotifyAwaitAcks(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	a, ca := connectWS(t, srv, userToken(t, "alice"))
	b, _ := connectWS(t, srv, userToken(t, "bob")) // silent
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.SetReadDeadline(time.Now().Add(hangGuard))
		_, msg, err := a.ReadMessage()
		if err != nil {
			return
		}
		var f wsFrame
		json.Unmarshal(msg, &f)
		a.WriteMessage(websocket.TextMessage, []byte(`{"type":"ack","envelopeId":"`+f.EnvelopeID+`","result":{"ok":true}}`))
		a.WriteMessage(websocket.TextMessage, []byte(`{"type":"ack","envelopeId":"`+f.EnvelopeID+`","result":"again"}`))
	}()
	res := notify(t, rt, Notification{Event: "q", AwaitAcks: 500 * time.Millisecond})
	wg.Wait()
	if res.Delivered != 2 || len(res.Acks) != 1 || res.TimedOut != 1 {
		t.Fatalf("result %+v", res)
	}
	if ack := res.Acks[0]; ack.User != "alice" || ack.ConnectionID != ca.ConnectionID || string(ack.Result) != `{"ok":true}` {
		t.Fatalf("ack %+v", ack)
	}
	expectMessage(t, b, "q")

	// Everyone acks: the answer comes without waiting for the timeout.
	go func() {
		for _, c := range []*websocket.Conn{a, b} {
			c.SetReadDeadline(time.Now().Add(hangGuard))
			_, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			var f wsFrame
			json.Unmarshal(msg, &f)
			c.WriteMessage(websocket.TextMessage, []byte(`{"type":"ack","envelopeId":"`+f.EnvelopeID+`","result":1}`))
		}
	}()
	res = notify(t, rt, Notification{Event: "q2", AwaitAcks: MaxAwaitAcks})
	if res.Delivered != 2 || len(res.Acks) != 2 || res.TimedOut != 0 {
		t.Fatalf("all acked: %+v", res)
	}
	if _, err := rt.Notify(context.Background(), Notification{Event: "x", AwaitAcks: MaxAwaitAcks + time.Second}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("awaitAcks over 30s: %v", err)
	}
	if _, err := rt.Notify(context.Background(), Notification{Users: []string{"nobody"}}); err != nil {
		t.Fatalf("no event (default %q): %v", DefaultPushEvent, err)
	}
}

func TestNotifyHTTP(t *testing.T) {
	_, srv := newTestServer(t, Config{MaxBodyBytes: 512})
	a, _ := connectWS(t, srv, userToken(t, "alice"))
	url := srv.URL + "/api/v1/notify"
	pub := publisherToken(t)
	resp := postJSON(t, url, pub, `{"users":["alice","alice"],"excludeUsers":["bob"],"channel":"","event":"order_created","data":{"order_id":123}}`)
	var res NotifyResult
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&res) != nil || res.Delivered != 1 || res.Users != 1 || res.Acks == nil {
		t.Fatalf("notify: %d %+v", resp.StatusCode, res)
	}
	if f := expectMessage(t, a, "order_created"); string(f.Data) != `{"order_id":123}` || f.EnvelopeID != res.EnvelopeID {
		t.Fatalf("push %s", f.raw)
	}
	for _, tc := range []struct {
		tok, body string
		status    int
	}{
		{"", `{"event":"x"}`, http.StatusUnauthorized},
		{userToken(t, "alice"), `{"event":"x"}`, http.StatusForbidden},
		{pub, `{"event":"x","data":"` + strings.Repeat("x", 600) + `"}`, http.StatusRequestEntityTooLarge},
		{pub, `{"event":`, http.StatusBadRequest},
		{pub, `{"event":"x","exclude_users":["bob"]}`, http.StatusBadRequest},
		{pub, `{"event":"x","users":"alice"}`, http.StatusBadRequest},
		{pub, `{"event":"x","awaitAcks":"1m"}`, http.StatusBadRequest},
		{pub, `{"event":"x","awaitAcks":"soon"}`, http.StatusBadRequest},
		{pub, `{"event":"x","channel":"a.*"}`, http.StatusBadRequest},
	} {
		if resp := postJSON(t, url, tc.tok, tc.body); resp.StatusCode != tc.status {
			t.Fatalf("%s: %d, want %d", tc.body, resp.StatusCode, tc.status)
		}
	}
	resp = postJSON(t, url, pub, `{"event":"x","awaitAcks":"50ms"}`)
	res = NotifyResult{}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&res) != nil || res.Delivered != 1 || res.TimedOut != 1 {
		t.Fatalf("await: %d %+v", resp.StatusCode, res)
	}
}

func TestNotifySlowReaderCloses1013(t *testing.T) {
	rt, srv := newTestServer(t, Config{WSSendQueue: 2})
	slow, _ := connectWS(t, srv, userToken(t, "slow"))
	fast, _ := connectWS(t, srv, userToken(t, "fast"))
	big := strings.Repeat("x", 256<<10)
	// fast reads everything as it comes, and the publisher keeps fast's
	// pace (waits for each push to reach it); slow reads nothing until its
	// queue has overflowed.
	recv := make(chan struct{}, 1)
	got := make(chan int, 1)
	go func() {
		n := 0
		defer func() { got <- n }()
		for {
			fast.SetReadDeadline(time.Now().Add(hangGuard))
			_, msg, err := fast.ReadMessage()
			if err != nil || bytes.Contains(msg, []byte(`"event":"end"`)) {
				return
			}
			n++
			recv <- struct{}{}
		}
	}()
	sent := 0
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("the slow reader's queue never overflowed")
		}
		res := notify(t, rt, Notification{Event: "big", Data: big})
		sent++
		select {
		case <-recv:
		case <-time.After(hangGuard):
			t.Fatal("fast did not get its push")
		}
		if res.Delivered == 1 {
			break // the slow connection is closing: only fast got it
		}
	}
	if res := notify(t, rt, Notification{Users: []string{"slow"}, Event: "after"}); res.Delivered != 0 {
		t.Fatalf("push to a closing connection: %+v", res)
	}
	if res := notify(t, rt, Notification{Users: []string{"fast"}, Event: "end"}); res.Delivered != 1 {
		t.Fatalf("push to fast: %+v", res)
	}
	if n := <-got; n != sent {
		t.Fatalf("fast got %d of %d pushes", n, sent)
	}
	if code := closeCode(t, slow); code != websocket.CloseTryAgainLater {
		t.Fatalf("close code %d, want 1013", code)
	}
	waitFor(t, "the slow connection to leave presence", func() bool { on, _, _ := rt.UserPresence(context.Background(), "", "slow"); return !on })
}

func TestNotifyAfterClose(t *testing.T) {
	rt, _ := newTestServer(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Notify(context.Background(), Notification{Event: "x"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Notify after Close: %v", err)
	}
}

// channelPatternMatches (the per-connection check of a push to given users)
// agrees with channelIndex (the push to a channel's subscribers).
func TestNotifyPatternMatchAgreesWithIndex(t *testing.T) {
	patterns := []string{"a", "a.b", "a.*", "a.>", "*", "*.b", "*.*", ">", "a.*.c", "a.b.>", "*.>", "b.>", "a.b.c"}
	channels := []string{"a", "b", "a.b", "a.c", "b.b", "a.b.c", "a.x.c", "a.b.c.d", "x.y.z"}
	for _, p := range patterns {
		if err := validChannel(p, true); err != nil {
			t.Fatalf("pattern %q: %v", p, err)
		}
		for _, ch := range channels {
			x := newChannelIndex[int]()
			x.add(p, 1)
			idx := false
			x.match(ch, func(int) { idx = true })
			if got := channelPatternMatches(p, ch); got != idx {
				t.Errorf("pattern %q channel %q: per-connection %v, index %v", p, ch, got, idx)
			}
		}
	}
}

func TestNotifyThousandsOfPatterns(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	const conns, per = 20, 100
	var cs []*websocket.Conn
	for i := range conns {
		c, _ := connectWS(t, srv, userToken(t, fmt.Sprintf("u%d", i)))
		var chans []string
		for j := range per {
			chans = append(chans, fmt.Sprintf("room.%d.%d", i, j))
		}
		if i%2 == 0 {
			chans[per-1] = "room.*.hot"
		}
		b, _ := json.Marshal(map[string]any{"type": "subscribe", "channels": chans})
		sendWS(t, c, string(b))
		if f := expectType(t, c, "subscribed"); len(f.Channels) != per {
			t.Fatalf("subscribed %d channels", len(f.Channels))
		}
		cs = append(cs, c)
	}
	if res := notify(t, rt, Notification{Channel: "room.7.42", Event: "one"}); res.Delivered != 1 {
		t.Fatalf("one subscriber: %+v", res)
	}
	expectMessage(t, cs[7], "one")
	if res := notify(t, rt, Notification{Channel: "room.x.hot", Event: "half"}); res.Delivered != conns/2 {
		t.Fatalf("wildcard subscribers: %+v", res)
	}
	for i := 0; i < conns; i += 2 {
		expectMessage(t, cs[i], "half")
	}
}

// TestNotifyCountsWhatIsQueued: a node counts a push's connections before it
// queues to them only when each takes it; a connection that is ending, but
// not yet gone from the targets, is not counted.
func TestNotifyCountsWhatIsQueued(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	a, _ := connectWS(t, srv, userToken(t, "a"))
	b, _ := connectWS(t, srv, userToken(t, "b"))
	if res := notify(t, rt, Notification{Event: "first"}); res.Delivered != 2 || res.Users != 2 {
		t.Fatalf("first push: %+v", res)
	}
	expectMessage(t, a, "first")
	expectMessage(t, b, "first")
	var bt *target
	rt.pushes.reg.mu.RLock()
	for _, x := range rt.pushes.reg.sockets {
		if x.ident.User == "b" {
			bt = x
		}
	}
	rt.pushes.reg.mu.RUnlock()
	// b's connection ends (its close not yet written: not kicked), still
	// among the targets of the first push, kept for this one.
	bt.c.mu.Lock()
	kick := bt.c.endLocked()
	bt.c.mu.Unlock()
	if res := notify(t, rt, Notification{Event: "second"}); res.Delivered != 1 || res.Users != 1 {
		t.Fatalf("push with b ending: %+v, want 1 connection of 1 user", res)
	}
	expectMessage(t, a, "second")
	if kick {
		bt.c.kick()
	}
	closeCode(t, b) // its end goes out once kicked
}
