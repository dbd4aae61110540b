package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

// twoNodes starts two plugins sharing one MemoryBroker, each on its own
// server, as two instances of one app behind a load balancer.
func twoNodes(t *testing.T, cfg Config) (m *MemoryBroker, a, b *Plugin, sa, sb *httptest.Server) {
	t.Helper()
	m = NewMemoryBroker(MemoryBufferConfig{})
	ca, cb := cfg, cfg
	ca.Broker, cb.Broker = m.Node(), m.Node()
	a, sa = newTestServer(t, ca)
	b, sb = newTestServer(t, cb)
	return m, a, b, sa, sb
}

func publishN(t *testing.T, rt *Plugin, id string, from, to int) []string {
	t.Helper()
	var etags []string
	for n := from; n < to; n++ {
		etag, err := rt.Publish(context.Background(), Publication{Collection: "posts", ID: id, Event: EventChanged, Data: json.RawMessage(recJSON(id, n))})
		if err != nil {
			t.Fatal(err)
		}
		etags = append(etags, etag)
	}
	return etags
}

func TestClusterRecordEventsCrossNodes(t *testing.T) {
	_, a, b, sa, sb := twoNodes(t, Config{})
	tok := userToken(t, "u1")
	onB := openStream(t, sb.Client(), recordURL(sb, "42"), tok, nil)
	colB := openStream(t, sb.Client(), collectionURL(sb), tok, nil)
	waitFor(t, "subscribers on B", func() bool { return b.Subscribers() == 2 })

	etags := publishN(t, a, "42", 0, 3)
	want := []frame{{EventChanged, etags[0], recJSON("42", 0)}, {EventChanged, etags[1], recJSON("42", 1)}, {EventChanged, etags[2], recJSON("42", 2)}}
	expectFrames(t, onB, want...)
	expectFrames(t, colB, want...)

	// The client that saw the first event on B resumes on A: it gets the
	// rest from the shared buffer, nothing twice.
	onB.close()
	more := publishN(t, b, "42", 3, 5)
	onA := openStream(t, sa.Client(), recordURL(sa, "42"), tok, http.Header{"Last-Event-Id": {etags[0]}})
	expectFrames(t, onA,
		frame{EventChanged, etags[1], ""}, frame{EventChanged, etags[2], ""},
		frame{EventChanged, more[0], ""}, frame{EventChanged, more[1], ""})
	last := publishN(t, a, "42", 5, 6)
	expectFrames(t, onA, frame{EventChanged, last[0], recJSON("42", 5)})
}

// Two nodes publishing to one record at once: every subscriber on either
// node sees the same order.
func TestClusterOneOrderForConcurrentPublishers(t *testing.T) {
	_, a, b, sa, sb := twoNodes(t, Config{})
	tok := userToken(t, "u1")
	streams := []*stream{
		openStream(t, sa.Client(), recordURL(sa, "7"), tok, nil),
		openStream(t, sb.Client(), recordURL(sb, "7"), tok, nil),
		openStream(t, sb.Client(), collectionURL(sb), tok, nil),
	}
	waitFor(t, "subscribers", func() bool { return a.Subscribers() == 1 && b.Subscribers() == 2 })
	const each = 50
	var wg sync.WaitGroup
	for i, rt := range []*Plugin{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range each {
				data := json.RawMessage(fmt.Sprintf(`{"id":"7","node":%d,"n":%d}`, i, n))
				if _, err := rt.Publish(context.Background(), Publication{Collection: "posts", ID: "7", Event: EventChanged, Data: data}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	var orders [][]string
	for _, s := range streams {
		fs := readFrames(t, s.fr, 2*each)
		var ids []string
		for _, f := range fs {
			ids = append(ids, f.ID)
		}
		orders = append(orders, ids)
	}
	for i := 1; i < len(orders); i++ {
		if strings.Join(orders[i], ",") != strings.Join(orders[0], ",") {
			t.Fatalf("subscriber %d saw another order than subscriber 0", i)
		}
	}
}

func TestClusterPushesPresenceAcks(t *testing.T) {
	_, a, b, sa, sb := twoNodes(t, Config{})
	ctx := context.Background()
	alice, _ := connectWS(t, sb, userToken(t, "alice"))
	defer alice.Close()
	bob, _ := connectWS(t, sa, userToken(t, "bob"))
	defer bob.Close()
	silent, _ := connectWS(t, sa, userToken(t, "carol"))
	defer silent.Close()

	// Presence on A sees B's connection, and the other way round.
	for _, rt := range []*Plugin{a, b} {
		users, n, err := rt.Presence(ctx, "")
		if err != nil || fmt.Sprint(users) != "[alice bob carol]" || n != 3 {
			t.Fatalf("presence: %v %d %v", users, n, err)
		}
	}
	if on, n, err := a.UserPresence(ctx, "", "alice"); err != nil || !on || n != 1 {
		t.Fatalf("alice's presence on A: %v %d %v", on, n, err)
	}

	// A push from A to alice (on B), bob twice and carol, excluding bob.
	done := make(chan NotifyResult, 1)
	go func() {
		res, err := a.Notify(ctx, Notification{Users: []string{"alice", "bob", "bob", "carol"}, ExcludeUsers: []string{"bob"},
			Event: "hello", Data: map[string]int{"n": 1}, AwaitAcks: 2 * time.Second})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	m := expectType(t, alice, "message")
	if m.Event != "hello" {
		t.Fatalf("alice got %s", m.raw)
	}
	expectType(t, silent, "message")
	sendWS(t, alice, `{"type":"ack","envelopeId":"`+m.EnvelopeID+`","result":{"ok":true}}`)
	res := <-done
	if res.Delivered != 2 || res.Users != 2 || len(res.Acks) != 1 || res.Acks[0].User != "alice" ||
		string(res.Acks[0].Result) != `{"ok":true}` || res.TimedOut != 1 {
		t.Fatalf("result: %+v", res)
	}

	// A broadcast from B reaches every connection of the tenant.
	res, err := b.Notify(ctx, Notification{Event: "all"})
	if err != nil || res.Delivered != 3 || res.Users != 3 {
		t.Fatalf("broadcast: %+v %v", res, err)
	}
	expectType(t, alice, "message")
	expectType(t, bob, "message")
	expectType(t, silent, "message")

	// A connection that closes leaves presence everywhere.
	silent.Close()
	waitFor(t, "carol to leave", func() bool { on, _, _ := b.UserPresence(ctx, "", "carol"); return !on })
}

func TestClusterResyncCrossNodes(t *testing.T) {
	_, a, b, _, sb := twoNodes(t, Config{})
	tok := userToken(t, "u1")
	col := openStream(t, sb.Client(), collectionURL(sb), tok, nil)
	waitFor(t, "subscriber on B", func() bool { return b.Subscribers() == 1 })
	if err := a.Resync(context.Background(), "posts"); err != nil {
		t.Fatal(err)
	}
	f := readFrames(t, col.fr, 1)[0]
	if f.Event != EventResync || !strings.Contains(f.Data, "bulk-write") {
		t.Fatalf("got %+v, want resync", f)
	}
}

// While the engine is down publishing fails loudly (503, errors, degraded
// health); once it is back, subscribers that may have missed events are
// resynced.
func TestClusterOutage(t *testing.T) {
	m, a, b, sa, sb := twoNodes(t, Config{})
	tok := userToken(t, "u1")
	col := openStream(t, sb.Client(), collectionURL(sb), tok, nil)
	waitFor(t, "subscriber on B", func() bool { return b.Subscribers() == 1 })
	ctx := context.Background()

	m.SetUnavailable(errors.New("connection refused"))
	if _, err := a.Publish(ctx, Publication{Collection: "posts", ID: "1", Event: EventChanged, Data: json.RawMessage(`{"id":"1"}`)}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("publish: %v, want ErrUnavailable", err)
	}
	resp := postJSON(t, sa.URL+"/api/v1/posts/1/events", publisherToken(t), `{"event":"changed","data":{"id":"1"}}`)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("REST publish: %d, want 503", resp.StatusCode)
	}
	resp = postJSON(t, sa.URL+"/api/v1/notify", publisherToken(t), `{"event":"e"}`)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("notify: %d, want 503", resp.StatusCode)
	}
	if _, err := a.Notify(ctx, Notification{Event: "e"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Notify: %v", err)
	}
	if err := a.Health(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("health: %v", err)
	}
	rec := httptest.NewRecorder()
	ginCtx, _ := gin.CreateTestContext(rec)
	a.HealthHandler()(ginCtx)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("health handler: %d", rec.Code)
	}

	m.SetUnavailable(nil)
	f := readFrames(t, col.fr, 1)[0]
	if f.Event != EventResync {
		t.Fatalf("after the outage: %+v, want resync", f)
	}
	if err := a.Health(); err != nil {
		t.Fatalf("health after: %v", err)
	}
	etags := publishN(t, a, "1", 0, 1)
	expectFrames(t, col, frame{EventChanged, etags[0], ""})
}

func TestClusterConfig(t *testing.T) {
	m := NewMemoryBroker(MemoryBufferConfig{})
	if _, err := New(Config{JWTSecret: testSecret, Broker: m.Node(), Buffer: NewMemoryBuffer(MemoryBufferConfig{})}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Buffer and Broker: %v", err)
	}
	n := m.Node()
	rt, err := New(Config{JWTSecret: testSecret, Broker: n})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A broker node starts once.
	if _, err := New(Config{JWTSecret: testSecret, Broker: n}); err == nil {
		t.Fatal("a started node was accepted again")
	}
}

// On one node too: concurrent publishers of one record give its record
// stream and its collection stream the same order.
func TestOneOrderRecordAndCollection(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	tok := userToken(t, "u1")
	rec := openStream(t, srv.Client(), recordURL(srv, "9"), tok, nil)
	col := openStream(t, srv.Client(), collectionURL(srv), tok, nil)
	waitFor(t, "subscribers", func() bool { return rt.Subscribers() == 2 })
	const each, publishers = 100, 4
	var wg sync.WaitGroup
	for i := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range each {
				data := json.RawMessage(fmt.Sprintf(`{"id":"9","p":%d,"n":%d}`, i, n))
				if _, err := rt.Publish(context.Background(), Publication{Collection: "posts", ID: "9", Event: EventChanged, Data: data}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	ids := func(s *stream) string {
		var out []string
		for _, f := range readFrames(t, s.fr, each*publishers) {
			out = append(out, f.ID)
		}
		return strings.Join(out, ",")
	}
	if ids(rec) != ids(col) {
		t.Fatal("the record stream and the collection stream ordered the same events differently")
	}
}

// A channel push from one node reaches the matching subscribers of every
// node, and only them.
func TestClusterChannelPush(t *testing.T) {
	_, a, _, sa, sb := twoNodes(t, Config{})
	onB, _ := connectWS(t, sb, userToken(t, "alice"))
	defer onB.Close()
	other, _ := connectWS(t, sa, userToken(t, "bob"))
	defer other.Close()
	sendWS(t, onB, `{"type":"subscribe","channels":["orders.*"]}`)
	expectType(t, onB, "subscribed")
	sendWS(t, other, `{"type":"subscribe","channels":["news.>"]}`)
	expectType(t, other, "subscribed")
	res, err := a.Notify(context.Background(), Notification{Channel: "orders.new", Event: "order_created", Data: map[string]int{"order_id": 1}})
	if err != nil || res.Delivered != 1 || res.Users != 1 {
		t.Fatalf("notify: %+v %v", res, err)
	}
	if m := expectType(t, onB, "message"); m.Channel != "orders.new" || m.Event != "order_created" {
		t.Fatalf("got %s", m.raw)
	}
	sendWS(t, other, `{"type":"ping"}`)
	expectType(t, other, "pong") // nothing was queued before it
}

// A gap in the broker's delivery (the engine lost events while down)
// resyncs a record followed over a WebSocket: a resync frame, then the
// record as stored now, then live events.
func TestClusterGapResyncsWebSocketRecords(t *testing.T) {
	store := newRecordStore()
	m, a, _, _, sb := twoNodes(t, Config{Loader: store.Load})
	store.put(Ref{Collection: "posts", ID: "1"}, rec{ID: "1"})
	c, _ := connectWS(t, sb, userToken(t, "alice"))
	defer c.Close()
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "1"})
	expectRec(t, c, "subscribed", "")
	expectRec(t, c, EventSnapshot, "1")

	m.SetUnavailable(errors.New("connection refused"))
	store.put(Ref{Collection: "posts", ID: "1"}, rec{ID: "1", N: 7}) // written while events cannot go out
	m.SetUnavailable(nil)
	if f := expectRec(t, c, EventResync, "1"); f.Reason != "buffer-miss" {
		t.Fatalf("%s", f.raw)
	}
	if f := expectRec(t, c, EventSnapshot, "1"); string(f.Data) != `{"id":"1","n":7}` {
		t.Fatalf("after the gap: %s, want the stored record", f.raw)
	}
	e := change(t, a, store, "1", 8)
	if f := expectRec(t, c, EventChanged, "1"); f.ETag != e {
		t.Fatalf("%s", f.raw)
	}
}
