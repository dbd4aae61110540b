package redisbroker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/ginrealtime/realtime"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// TestPush: a push is published on every topic, with its event's position
// when it has one; the position is the one the buffer gives the event.
func TestPush(t *testing.T) {
	c := newClient(t)
	prefix := testPrefix(t, c)
	a := newBroker(t, c, Config{Prefix: prefix})
	b := newBroker(t, newClient(t), Config{Prefix: prefix})
	startBroker(t, a)
	rb := startBroker(t, b)
	for _, topic := range []string{"t1", "t2"} {
		if err := b.Listen(bctx, topic); err != nil {
			t.Fatal(err)
		}
	}
	// Without an event: the message as is, on each topic.
	if _, nodes, err := a.Push(bctx, realtime.StreamKey{}, nil, nil, []byte("x")); nodes != 0 || err != nil {
		t.Fatalf("Push to no topic: %d nodes, %v", nodes, err)
	}
	seq, nodes, err := a.Push(bctx, realtime.StreamKey{}, nil, []string{"t1", "t2", "t3"}, []byte(`{"m":1}`))
	if err != nil || seq != 0 || nodes != 2 {
		t.Fatalf("Push without event: seq %d nodes %d err %v, want 0 2 nil", seq, nodes, err)
	}
	// With one: appended first, its position before the message.
	key := realtime.StreamKey{Tenant: "t", Collection: "#chan", ID: "orders.new"}
	ev := &realtime.Event{Type: "created", Ref: key, ETag: "env-1", Data: json.RawMessage(`{"x":1}`), Time: time.Now()}
	seq, nodes, err = a.Push(bctx, key, ev, []string{"t2"}, []byte(`{"m":2}`))
	if err != nil || seq == 0 || nodes != 1 {
		t.Fatalf("Push with event: seq %d nodes %d err %v", seq, nodes, err)
	}
	recent, err := a.Recent(bctx, key, 10)
	if err != nil || len(recent) != 1 || recent[0].Seq != seq || recent[0].Event.ETag != "env-1" {
		t.Fatalf("Recent after Push: %+v %v, want the event at %d", recent, err, seq)
	}
	eventually(t, "the messages", func() bool { return len(rb.messagesOf("t2")) == 2 })
	if got := rb.messagesOf("t1"); !slices.Equal(got, []string{`{"m":1}`}) {
		t.Errorf("t1: %q", got)
	}
	want := []string{`{"m":1}`, strconv.FormatUint(seq, 10) + "\n" + `{"m":2}`}
	if got := rb.messagesOf("t2"); !slices.Equal(got, want) {
		t.Errorf("t2: %q, want %q", got, want)
	}
	// PublishEach: each message on its topic, in one round trip.
	if err := a.PublishEach(bctx, []string{"t1", "t2"}, [][]byte{[]byte("a"), []byte("b")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "PublishEach", func() bool { return len(rb.messagesOf("t2")) == 3 })
	if got := rb.messagesOf("t1"); !slices.Equal(got, []string{`{"m":1}`, "a"}) {
		t.Errorf("t1 after PublishEach: %q", got)
	}
	if err := a.PublishEach(bctx, []string{"t1"}, nil); err == nil {
		t.Error("PublishEach with more topics than messages: no error")
	}
}

// TestPushCountsAcrossNodes: Notify's counts (PROTOCOL.md §7) across two
// nodes: a user with connections on both nodes is one user, each
// connection one delivery; acks come back from the other node.
func TestPushCountsAcrossNodes(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	secret := []byte("push-test-secret-push-test-secret")
	prefix := testPrefix(t, newClient(t))
	node := func() (*realtime.Plugin, string) {
		p, srv := pluginNode(t, secret, prefix)
		return p, "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/ws?token="
	}
	a, urlA := node()
	_, urlB := node()
	dial := func(url, user string) *websocket.Conn {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": user, "exp": time.Now().Add(time.Hour).Unix(),
		}).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		c, _, err := websocket.DefaultDialer.Dial(url+tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","channels":["orders.*"]}`)); err != nil {
			t.Fatal(err)
		}
		readUntil(t, c, `"type":"subscribed"`)
		return c
	}
	// u1 on both nodes, u2 on node B.
	conns := []*websocket.Conn{dial(urlA, "u1"), dial(urlB, "u1"), dial(urlB, "u2")}
	for i, tc := range []struct {
		name             string
		n                realtime.Notification
		delivered, users int
		reached          []int // indexes into conns
	}{
		{"tenant", realtime.Notification{Event: "e0"}, 3, 2, []int{0, 1, 2}},
		{"users", realtime.Notification{Users: []string{"u1", "u1", "u3"}, Event: "e1"}, 2, 1, []int{0, 1}},
		{"both users", realtime.Notification{Users: []string{"u2", "u1"}, Event: "e2"}, 3, 2, []int{0, 1, 2}},
		{"excluded", realtime.Notification{ExcludeUsers: []string{"u1"}, Event: "e3"}, 1, 1, []int{2}},
		{"channel", realtime.Notification{Channel: "orders.new", Event: "e4"}, 3, 2, []int{0, 1, 2}},
		{"channel users", realtime.Notification{Channel: "orders.new", Users: []string{"u2"}, Event: "e5"}, 1, 1, []int{2}},
		{"no one", realtime.Notification{Users: []string{"u9"}, Event: "e6"}, 0, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.n.Data = map[string]int{"i": i}
			res, err := a.Notify(bctx, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if res.Delivered != tc.delivered || res.Users != tc.users {
				t.Fatalf("delivered %d users %d, want %d %d", res.Delivered, res.Users, tc.delivered, tc.users)
			}
			for _, k := range tc.reached {
				readUntil(t, conns[k], fmt.Sprintf(`"event":"%s"`, tc.n.Event))
			}
		})
	}
	// Acks from both nodes reach the publisher on node A.
	acked := make(chan error, 1)
	go func() {
		for _, c := range conns[1:] {
			var env struct {
				Event      string `json:"event"`
				EnvelopeID string `json:"envelopeId"`
			}
			for env.Event != "ask" {
				_, m, err := c.ReadMessage()
				if err != nil {
					acked <- err
					return
				}
				_ = json.Unmarshal(m, &env)
			}
			_ = c.WriteMessage(websocket.TextMessage, []byte(`{"type":"ack","envelopeId":"`+env.EnvelopeID+`","result":{"ok":true}}`))
		}
		acked <- nil
	}()
	res, err := a.Notify(bctx, realtime.Notification{Event: "ask", AwaitAcks: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-acked; err != nil {
		t.Fatal(err)
	}
	if res.Delivered != 3 || res.Users != 2 || len(res.Acks) != 2 || res.TimedOut != 1 {
		t.Fatalf("awaited acks: %+v, want 3 delivered, 2 users, 2 acks, 1 timed out", res)
	}
}

// pluginNode starts a plugin on a broker of prefix, served under /api,
// both closed when t ends.
func pluginNode(t testing.TB, secret []byte, prefix string) (*realtime.Plugin, *httptest.Server) {
	br := newBroker(t, newClient(t), Config{Prefix: prefix})
	p, err := realtime.New(realtime.Config{JWTSecret: secret, Broker: br, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	p.Register(r.Group("/api"))
	srv := httptest.NewServer(r)
	t.Cleanup(func() {
		srv.Close()
		_ = p.Close(context.Background())
	})
	return p, srv
}

// readUntil reads c's frames until one contains want, and returns it.
func readUntil(t *testing.T, c *websocket.Conn, want string) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
	for {
		_, m, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		if strings.Contains(string(m), want) {
			return m
		}
	}
}
