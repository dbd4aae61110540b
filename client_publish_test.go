package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// chatPublish is an AuthorizeChannel that lets clients publish on chat.>
// channels only, and read every channel.
func chatPublish(_ context.Context, a ChannelAccess) error {
	if a.Op == ChannelOpPublish && !strings.HasPrefix(a.Channel, "chat.") {
		return ErrForbidden
	}
	return nil
}

// publishWS sends a publish message on c and returns the answer frame.
func publishWS(t testing.TB, c *websocket.Conn, msg string) wsFrame {
	t.Helper()
	sendWS(t, c, msg)
	return readWS(t, c)
}

func TestClientPublishRefusedByDefault(t *testing.T) {
	// With channel rules that never look at the operation, and without
	// ClientPublish: refused.
	for _, cfg := range []Config{{}, {AuthorizeChannel: func(context.Context, ChannelAccess) error { return nil }}} {
		rt, srv := newTestServer(t, cfg)
		sub, _ := connectWS(t, srv, userToken(t, "bob"))
		sendWS(t, sub, `{"type":"subscribe","channels":["chat.room1"]}`)
		expectType(t, sub, "subscribed")
		pub, _ := connectWS(t, srv, userToken(t, "alice"))
		f := publishWS(t, pub, `{"type":"publish","channel":"chat.room1","event":"msg","data":{"text":"hi"}}`)
		if f.Type != "error" || f.Code != "forbidden" || f.Channel != "chat.room1" {
			t.Fatalf("publish without ClientPublish: %s, want forbidden", f.raw)
		}
		msgs, err := rt.ChannelHistory(context.Background(), DefaultTenant, "chat.room1", 10)
		if err != nil || len(msgs) != 0 {
			t.Fatalf("history after a refused publish: %d %v", len(msgs), err)
		}
		sendWS(t, sub, `{"type":"ping"}`)
		expectType(t, sub, "pong") // nothing was delivered before
	}
	if _, err := New(Config{JWTSecret: testSecret, ClientPublish: true}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("ClientPublish without AuthorizeChannel: %v", err)
	}
}

// expectFrom reads a push of c and checks it was published by from.
func expectFrom(t testing.TB, c *websocket.Conn, event, from string) envelope {
	t.Helper()
	f := expectMessage(t, c, event)
	var e envelope
	if err := json.Unmarshal(f.raw, &e); err != nil || e.From != from {
		t.Fatalf("push %s, want from %q", f.raw, from)
	}
	return e
}

func TestClientPublish(t *testing.T) {
	rt, srv := newTestServer(t, Config{ClientPublish: true, AuthorizeChannel: chatPublish})
	bob, _ := connectWS(t, srv, userToken(t, "bob"))
	sendWS(t, bob, `{"type":"subscribe","channels":["chat.*"]}`)
	expectType(t, bob, "subscribed")
	es := openStream(t, nil, chanSSEURL(srv, "chat.room1"), userToken(t, "carol"), nil)
	alice, _ := connectWS(t, srv, userToken(t, "alice"))

	f := publishWS(t, alice, `{"type":"publish","channel":"chat.room1","event":"msg","data":{"text":"hi"}}`)
	var ans wsPublished
	if json.Unmarshal(f.raw, &ans) != nil || ans.Type != "published" || ans.Channel != "chat.room1" || len(ans.EnvelopeID) != 36 {
		t.Fatalf("answer %s", f.raw)
	}
	e := expectFrom(t, bob, "msg", "alice")
	if e.EnvelopeID != ans.EnvelopeID || e.Channel != "chat.room1" || string(e.Data) != `{"text":"hi"}` {
		t.Fatalf("delivered %+v", e)
	}
	fr := readFrames(t, es.fr, 1)[0]
	if fr.Event != "msg" || fr.ID != ans.EnvelopeID || !strings.Contains(fr.Data, `"from":"alice"`) {
		t.Fatalf("SSE channel stream frame %+v", fr)
	}
	msgs, err := rt.ChannelHistory(context.Background(), DefaultTenant, "chat.room1", 10)
	if err != nil || len(msgs) != 1 || !strings.Contains(string(msgs[0]), `"from":"alice"`) {
		t.Fatalf("history %s %v", msgs, err)
	}

	// event is optional; data may be absent.
	if f := publishWS(t, alice, `{"type":"publish","channel":"chat.room1"}`); f.Type != "published" {
		t.Fatalf("publish without event: %s", f.raw)
	}
	if e := expectFrom(t, bob, DefaultPushEvent, "alice"); string(e.Data) != "null" {
		t.Fatalf("data %s, want null", e.Data)
	}
	for _, tc := range []struct{ msg, code string }{
		{`{"type":"publish","channel":"news.today","event":"msg"}`, "forbidden"},
		{`{"type":"publish","channel":"chat.*","event":"msg"}`, "bad_request"},
		{`{"type":"publish","channel":"chat.room1","event":"a\nb"}`, "bad_request"},
		{`{"type":"publish","channel":"chat.room1","users":["bob"]}`, "bad_request"},
		{`{"type":"publish","event":"msg"}`, "bad_request"},
	} {
		if f := publishWS(t, alice, tc.msg); f.Type != "error" || f.Code != tc.code {
			t.Fatalf("%s: %s, want %s", tc.msg, f.raw, tc.code)
		}
	}
	// Nothing of the refused ones reached bob: his next push is a new one.
	publishWS(t, alice, `{"type":"publish","channel":"chat.room2","event":"after"}`)
	expectFrom(t, bob, "after", "alice")
}

// A browser's publish crosses nodes (one path: Notify), and pushes
// streams on any node receive it; acks over HTTP reach the origin whichever
// node takes them.
func TestClusterClientPublishAndPushStreams(t *testing.T) {
	m, a, b, sa, sb := twoNodes(t, Config{ClientPublish: true, AuthorizeChannel: chatPublish})
	c, sc := newTestServer(t, Config{Broker: m.Node(), ClientPublish: true, AuthorizeChannel: chatPublish})
	_ = c

	onB, _ := connectWS(t, sb, userToken(t, "bob"))
	sendWS(t, onB, `{"type":"subscribe","channels":["chat.>"]}`)
	expectType(t, onB, "subscribed")
	streamB, cfB := openPushes(t, sb, userToken(t, "carol"), "?channels=chat.room1", nil)
	pub, _ := connectWS(t, sa, userToken(t, "alice"))

	f := publishWS(t, pub, `{"type":"publish","channel":"chat.room1","event":"msg","data":[1]}`)
	if f.Type != "published" {
		t.Fatalf("publish on A: %s", f.raw)
	}
	if e := expectFrom(t, onB, "msg", "alice"); e.EnvelopeID != f.EnvelopeID {
		t.Fatalf("WebSocket on B got %+v", e)
	}
	if e := expectPush(t, streamB, "msg"); e.EnvelopeID != f.EnvelopeID || e.From != "alice" {
		t.Fatalf("pushes stream on B got %+v", e)
	}
	_, h, _ := history(t, sb, userToken(t, "bob"), "chat.room1", "")
	if ids := envelopeIDs(t, h.Messages); len(ids) != 1 || ids[0] != f.EnvelopeID {
		t.Fatalf("history on B: %v", ids)
	}

	// A Notify of A awaits the pushes stream on B; its user acks through
	// A (the origin), B (the node that delivered) or C (neither).
	for i, via := range []*httptest.Server{sa, sb, sc} {
		done := make(chan NotifyResult, 1)
		go func() {
			res, _ := a.Notify(context.Background(), Notification{Users: []string{"carol"}, Event: "q", AwaitAcks: hangGuard})
			done <- res
		}()
		e := expectPush(t, streamB, "q")
		result := `"via` + string(rune('A'+i)) + `"`
		if code := postAck(t, via, userToken(t, "carol"), `{"envelopeId":"`+e.EnvelopeID+`","result":`+result+`}`); code != 204 {
			t.Fatalf("ack via node %d: %d", i, code)
		}
		res := <-done
		if res.Delivered != 1 || len(res.Acks) != 1 || res.Acks[0].ConnectionID != cfB.ConnectionID || string(res.Acks[0].Result) != result {
			t.Fatalf("ack via node %d: %+v", i, res)
		}
	}
	_ = b
}
