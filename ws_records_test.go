package realtime

// Record subscriptions over the WebSocket (PROTOCOL.md §6 records, with
// the semantics of §3): gorilla's client against a real httptest server.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// recFrame is a server → client frame of a record subscription.
type recFrame struct {
	Type       string          `json:"type"`
	Code       string          `json:"code"`
	Message    string          `json:"message"`
	Collection string          `json:"collection"`
	ID         string          `json:"id"`
	ETag       string          `json:"etag"`
	Reason     string          `json:"reason"`
	Data       json.RawMessage `json:"data"`
	Channels   []string        `json:"channels"`
	Records    []wsRecordRef   `json:"records"`
	raw        []byte
}

func readRec(t testing.TB, c *websocket.Conn) recFrame {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(hangGuard))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	var f recFrame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame %q: %v", b, err)
	}
	f.raw = b
	return f
}

func expectRec(t testing.TB, c *websocket.Conn, typ, id string) recFrame {
	t.Helper()
	f := readRec(t, c)
	if f.Type != typ || (id != "" && f.ID != id) {
		t.Fatalf("frame %s, want type %q id %q", f.raw, typ, id)
	}
	return f
}

func subscribeRecords(t testing.TB, c *websocket.Conn, typ string, recs ...wsRecordReq) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"type": typ, "records": recs})
	sendWS(t, c, string(b))
}

func etagOf(t testing.TB, rt *Plugin, collection, id string, r any) string {
	t.Helper()
	e, err := rt.ETag(collection, id, r)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func recordsServer(t testing.TB, cfg Config) (*Plugin, *httptest.Server, *recordStore) {
	t.Helper()
	store := newRecordStore()
	if cfg.Loader == nil {
		cfg.Loader = store.Load
	}
	rt, srv := newTestServer(t, cfg)
	return rt, srv, store
}

// change stores and publishes a new version of posts/id.
func change(t testing.TB, rt *Plugin, store *recordStore, id string, n int) string {
	t.Helper()
	r := rec{ID: id, N: n}
	store.put(Ref{Collection: "posts", ID: id}, r)
	etag, err := rt.Changed(context.Background(), "posts", id, r)
	if err != nil {
		t.Fatal(err)
	}
	return etag
}

func TestWSRecordsSnapshotAndLiveOrder(t *testing.T) {
	rt, srv, store := recordsServer(t, Config{})
	ids := []string{"1", "2", "3"}
	for _, id := range ids {
		store.put(Ref{Collection: "posts", ID: id}, rec{ID: id, N: -1})
	}
	c, _ := connectWS(t, srv, userToken(t, "alice"))
	var reqs []wsRecordReq
	for _, id := range ids {
		reqs = append(reqs, wsRecordReq{Collection: "posts", ID: id})
	}
	subscribeRecords(t, c, "subscribe", reqs...)
	sub := expectRec(t, c, "subscribed", "")
	if len(sub.Records) != 3 || sub.Channels == nil {
		t.Fatalf("subscribed %s", sub.raw)
	}
	snaps := map[string]recFrame{}
	for range ids {
		f := expectRec(t, c, EventSnapshot, "")
		snaps[f.ID] = f
	}
	for _, id := range ids {
		f := snaps[id]
		want := etagOf(t, rt, "posts", id, rec{ID: id, N: -1})
		if f.Collection != "posts" || f.ETag != want || string(f.Data) != fmt.Sprintf(`{"id":%q,"n":-1}`, id) {
			t.Fatalf("snapshot of %s: %s (etag want %s)", id, f.raw, want)
		}
	}
	// Interleaved publishes: each record's frames in publish order.
	want := map[string][]string{}
	for n := range 30 {
		id := ids[n%len(ids)]
		want[id] = append(want[id], change(t, rt, store, id, n))
	}
	got := map[string][]string{}
	for range 30 {
		f := expectRec(t, c, EventChanged, "")
		got[f.ID] = append(got[f.ID], f.ETag)
	}
	for _, id := range ids {
		if fmt.Sprint(got[id]) != fmt.Sprint(want[id]) {
			t.Fatalf("record %s: got %v, want %v", id, got[id], want[id])
		}
	}
	if n := rt.Subscribers(); n != 3 {
		t.Fatalf("%d subscribers, want 3", n)
	}
	c.Close()
	waitFor(t, "the socket's record subscribers to detach", func() bool { return rt.Subscribers() == 0 })
}

func TestWSRecordsResume(t *testing.T) {
	rt, srv, store := recordsServer(t, Config{})
	var etags []string
	for n := range 5 {
		etags = append(etags, change(t, rt, store, "1", n))
	}
	store.put(Ref{Collection: "posts", ID: "2"}, rec{ID: "2", N: 7})
	cur2 := etagOf(t, rt, "posts", "2", rec{ID: "2", N: 7})
	c, _ := connectWS(t, srv, userToken(t, "alice"))

	// Found in the buffer: exactly the missed events, then live.
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "1", LastEventID: etags[2]})
	expectRec(t, c, "subscribed", "")
	for _, e := range etags[3:] {
		if f := expectRec(t, c, EventChanged, "1"); f.ETag != e {
			t.Fatalf("replay %s, want etag %s", f.raw, e)
		}
	}
	e5 := change(t, rt, store, "1", 5)
	if f := expectRec(t, c, EventChanged, "1"); f.ETag != e5 {
		t.Fatalf("live %s, want %s", f.raw, e5)
	}

	// Up to date with the stored record (never buffered): nothing until the next event.
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "2", LastEventID: cur2})
	expectRec(t, c, "subscribed", "")
	e2 := change(t, rt, store, "2", 8)
	if f := expectRec(t, c, EventChanged, "2"); f.ETag != e2 {
		t.Fatalf("first frame of an up-to-date record: %s", f.raw)
	}

	// Unknown (evicted) resume point: resync, then the snapshot.
	store.put(Ref{Collection: "posts", ID: "3"}, rec{ID: "3", N: 1})
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "3", LastEventID: `"evicted"`})
	expectRec(t, c, "subscribed", "")
	if f := expectRec(t, c, EventResync, "3"); f.Reason != "buffer-miss" || f.Collection != "posts" {
		t.Fatalf("resync %s", f.raw)
	}
	if f := expectRec(t, c, EventSnapshot, "3"); f.ETag != etagOf(t, rt, "posts", "3", rec{ID: "3", N: 1}) {
		t.Fatalf("snapshot after resync %s", f.raw)
	}

	// A record gone since: resync, then deleted with the tombstone.
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "gone", LastEventID: `"old"`})
	expectRec(t, c, "subscribed", "")
	expectRec(t, c, EventResync, "gone")
	if f := expectRec(t, c, EventDeleted, "gone"); f.ETag != TombstoneETag("posts", "gone") || string(f.Data) != `{"id":"gone"}` {
		t.Fatalf("deleted after resync %s", f.raw)
	}

	// An up-to-date record stays quiet while the others go on.
	e6 := change(t, rt, store, "1", 6)
	if f := expectRec(t, c, EventChanged, "1"); f.ETag != e6 {
		t.Fatalf("live %s, want %s", f.raw, e6)
	}
}

func TestWSRecordsForbiddenAndNotFound(t *testing.T) {
	auth := func(_ context.Context, a Access) error {
		if a.Ref.ID == "secret" {
			return ErrForbidden
		}
		return nil
	}
	rt, srv, store := recordsServer(t, Config{Authorize: auth})
	store.put(Ref{Collection: "posts", ID: "1"}, rec{ID: "1"})
	store.put(Ref{Collection: "posts", ID: "secret"}, rec{ID: "secret"})
	c, _ := connectWS(t, srv, userToken(t, "alice"))
	subscribeRecords(t, c, "subscribe",
		wsRecordReq{Collection: "posts", ID: "secret"},
		wsRecordReq{Collection: "posts", ID: "missing"},
		wsRecordReq{Collection: "posts", ID: "1"})
	if f := expectRec(t, c, "error", "secret"); f.Code != "forbidden" || f.Collection != "posts" {
		t.Fatalf("%s", f.raw)
	}
	if f := expectRec(t, c, "error", "missing"); f.Code != "not_found" {
		t.Fatalf("%s", f.raw)
	}
	sub := expectRec(t, c, "subscribed", "")
	if len(sub.Records) != 1 || sub.Records[0] != (wsRecordRef{"posts", "1"}) {
		t.Fatalf("subscribed %s", sub.raw)
	}
	expectRec(t, c, EventSnapshot, "1")
	if n := rt.Subscribers(); n != 1 {
		t.Fatalf("%d subscribers, want 1 (refused ones untracked)", n)
	}
	change(t, rt, store, "secret", 1) // never reaches this socket
	change(t, rt, store, "1", 1)
	expectRec(t, c, EventChanged, "1")
}

func TestWSRecordsRevokedMidStream(t *testing.T) {
	var revoked sync.Map
	auth := func(_ context.Context, a Access) error {
		if _, ok := revoked.Load(a.Ref.ID); ok {
			return ErrForbidden
		}
		return nil
	}
	rt, srv, store := recordsServer(t, Config{Authorize: auth})
	for _, id := range []string{"1", "2"} {
		store.put(Ref{Collection: "posts", ID: id}, rec{ID: id})
	}
	c, _ := connectWS(t, srv, userToken(t, "alice"))
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "1", LastEventID: etagOf(t, rt, "posts", "1", rec{ID: "1"})},
		wsRecordReq{Collection: "posts", ID: "2", LastEventID: etagOf(t, rt, "posts", "2", rec{ID: "2"})})
	expectRec(t, c, "subscribed", "")
	change(t, rt, store, "1", 1)
	expectRec(t, c, EventChanged, "1")
	revoked.Store("1", true)
	change(t, rt, store, "1", 2)
	if f := expectRec(t, c, "error", "1"); f.Code != "forbidden" {
		t.Fatalf("%s", f.raw)
	}
	waitFor(t, "the revoked record to detach", func() bool { return rt.Subscribers() == 1 })
	change(t, rt, store, "1", 3) // nothing more of record 1
	e := change(t, rt, store, "2", 1)
	if f := expectRec(t, c, EventChanged, "2"); f.ETag != e {
		t.Fatalf("%s", f.raw)
	}
	sendWS(t, c, "ping")
	expectRec(t, c, "pong", "")
	// Resubscribing is refused now.
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "1"})
	if f := expectRec(t, c, "error", "1"); f.Code != "forbidden" {
		t.Fatalf("%s", f.raw)
	}
	if f := expectRec(t, c, "subscribed", ""); len(f.Records) != 1 || f.Records[0].ID != "2" {
		t.Fatalf("%s", f.raw)
	}
}

func TestWSRecordsUnsubscribe(t *testing.T) {
	rt, srv, store := recordsServer(t, Config{})
	for _, id := range []string{"1", "2"} {
		store.put(Ref{Collection: "posts", ID: id}, rec{ID: id})
	}
	c, _ := connectWS(t, srv, userToken(t, "alice"))
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "1"}, wsRecordReq{Collection: "posts", ID: "2"})
	expectRec(t, c, "subscribed", "")
	expectRec(t, c, EventSnapshot, "")
	expectRec(t, c, EventSnapshot, "")
	subscribeRecords(t, c, "unsubscribe", wsRecordReq{Collection: "posts", ID: "1"})
	if f := expectRec(t, c, "unsubscribed", ""); len(f.Records) != 1 || f.Records[0].ID != "2" {
		t.Fatalf("%s", f.raw)
	}
	if n := rt.Subscribers(); n != 1 {
		t.Fatalf("%d subscribers after unsubscribe, want 1", n)
	}
	change(t, rt, store, "1", 1)
	e := change(t, rt, store, "2", 1)
	if f := expectRec(t, c, EventChanged, "2"); f.ETag != e {
		t.Fatalf("after unsubscribe: %s", f.raw)
	}
	// A channel subscribe answers with the records too; a bare unsubscribe drops everything.
	sendWS(t, c, `{"type":"subscribe","channels":["orders.*"]}`)
	if f := expectRec(t, c, "subscribed", ""); len(f.Channels) != 1 || len(f.Records) != 1 {
		t.Fatalf("%s", f.raw)
	}
	sendWS(t, c, `{"type":"unsubscribe"}`)
	if f := expectRec(t, c, "unsubscribed", ""); len(f.Channels) != 0 || len(f.Records) != 0 {
		t.Fatalf("%s", f.raw)
	}
	if n := rt.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers, want 0", n)
	}
	change(t, rt, store, "2", 2)
	sendWS(t, c, "ping")
	expectRec(t, c, "pong", "")
}

func TestWSRecordsBadInputAndLimit(t *testing.T) {
	rt, srv, store := recordsServer(t, Config{WSMaxRecords: 2})
	store.put(Ref{Collection: "posts", ID: "1"}, rec{ID: "1"})
	c, _ := connectWS(t, srv, userToken(t, "alice"))
	for _, bad := range []string{
		`{"type":"subscribe","records":{"collection":"posts"}}`,
		`{"type":"subscribe","records":[{"collection":"posts"}]}`,
		`{"type":"subscribe","records":[{"id":"1"}]}`,
		`{"type":"subscribe","records":[{"collection":"posts","id":"1","lastEventId":"a\nb"}]}`,
		`{"type":"subscribe","records":[{"collection":"posts","id":"1"},{"collection":"posts","id":"2"},{"collection":"posts","id":"3"}]}`,
	} {
		sendWS(t, c, bad)
		if f := expectRec(t, c, "error", ""); f.Code != "bad_request" || f.Message == "" {
			t.Fatalf("%s → %s", bad, f.raw)
		}
	}
	if n := rt.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers after refused subscribes", n)
	}
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "1"}, wsRecordReq{Collection: "posts", ID: "1"})
	if f := expectRec(t, c, "subscribed", ""); len(f.Records) != 1 {
		t.Fatalf("%s", f.raw)
	}
	expectRec(t, c, EventSnapshot, "1")
	// Resubscribing a followed record changes nothing (no second snapshot).
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "1"}, wsRecordReq{Collection: "posts", ID: "x", LastEventID: `"e"`})
	expectRec(t, c, "subscribed", "")
	expectRec(t, c, EventResync, "x")
	expectRec(t, c, EventDeleted, "x")
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "y"})
	if f := expectRec(t, c, "error", ""); f.Code != "bad_request" {
		t.Fatalf("over the limit: %s", f.raw)
	}
	if n := rt.Subscribers(); n != 2 {
		t.Fatalf("%d subscribers, want 2", n)
	}
}

// TestWSRecordsPluginClose closes the plugin under open record
// subscriptions: every subscriber is detached and untracked (goleak checks
// the goroutines in TestMain).
func TestWSRecordsPluginClose(t *testing.T) {
	rt, srv, store := recordsServer(t, Config{})
	store.put(Ref{Collection: "posts", ID: "1"}, rec{ID: "1"})
	c, _ := connectWS(t, srv, userToken(t, "alice"))
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "1"})
	expectRec(t, c, "subscribed", "")
	expectRec(t, c, EventSnapshot, "1")
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := rt.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers after Close", n)
	}
	if code := closeCode(t, c); code != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want 1001", code)
	}
}

// TestWSRecordsBulkResync: Plugin.Resync gives each followed record a
// resync frame (reason bulk-write), then the record as stored now (§3), and
// live events go on; a record deleted meanwhile comes as deleted.
func TestWSRecordsBulkResync(t *testing.T) {
	rt, srv, store := recordsServer(t, Config{})
	store.put(Ref{Collection: "posts", ID: "1"}, rec{ID: "1"})
	c, _ := connectWS(t, srv, userToken(t, "alice"))
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "1"})
	expectRec(t, c, "subscribed", "")
	expectRec(t, c, EventSnapshot, "1")
	if err := rt.Resync(context.Background(), "posts"); err != nil {
		t.Fatal(err)
	}
	if f := expectRec(t, c, EventResync, "1"); f.Reason != "bulk-write" {
		t.Fatalf("%s", f.raw)
	}
	if f := expectRec(t, c, EventSnapshot, "1"); string(f.Data) != `{"id":"1","n":0}` {
		t.Fatalf("after the resync: %s, want the stored record", f.raw)
	}
	e := change(t, rt, store, "1", 1)
	if f := expectRec(t, c, EventChanged, "1"); f.ETag != e {
		t.Fatalf("%s", f.raw)
	}
	// Deleted in the store without an event, then a bulk resync: deleted.
	store.del(Ref{Collection: "posts", ID: "1"})
	if err := rt.Resync(context.Background(), "posts"); err != nil {
		t.Fatal(err)
	}
	expectRec(t, c, EventResync, "1")
	expectRec(t, c, EventDeleted, "1")
}

// TestWSRecordsHandoverProperty publishes to several records from several
// goroutines while sockets subscribe, unsubscribe, resubscribe from their
// last ETag and reconnect at random points: every socket's sequence of each
// record must follow the publish order, without loss or duplicate (the
// checker of TestHandoverProperty, per record and per subscription).
func TestWSRecordsHandoverProperty(t *testing.T) {
	base := handoverBaseSeed(t)
	t.Logf("seed %d (reproduce: go test -race -run TestWSRecordsHandoverProperty -seed=%d .)", base, base)
	iterations := 6
	if testing.Short() {
		iterations = 2
	}
	for i := range iterations {
		seed := base + uint64(i)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { wsHandoverRun(t, seed) })
	}
}

// recLog is one subscription of one record: its resume point and frames.
type recLog = connLog

func wsHandoverRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x51ed27))
	const (
		records = 3
		perPub  = 200
		clients = 4
	)
	ids := []string{"a", "b", "c"}
	var inner Buffer = NewMemoryBuffer(MemoryBufferConfig{Size: []int{3, 8, 256}[rng.IntN(3)]})
	rbs := map[string]*recordingBuffer{}
	for _, id := range ids {
		rb := newRecordingBuffer(inner, StreamKey{Tenant: DefaultTenant, Collection: "posts", ID: id})
		rbs[id] = rb
		inner = rb
	}
	cfg := Config{
		Buffer:      inner,
		QueueSize:   []int{4, 16, 512}[rng.IntN(3)],
		WSSendQueue: []int{8, 256}[rng.IntN(2)],
		Loader: func(ctx context.Context, ref Ref) (any, error) {
			if rb := rbs[ref.ID]; rb != nil {
				return rb.load(ctx, ref)
			}
			return nil, ErrNotFound
		},
	}
	t.Logf("queue %d, ws queue %d", cfg.QueueSize, cfg.WSSendQueue)
	rt, srv := newPluginServer(t, cfg, nil, nil)
	tok := userToken(t, "u1")
	for _, id := range ids {
		if _, err := rt.Changed(context.Background(), "posts", id, rec{ID: id, N: -1}); err != nil {
			t.Fatal(err)
		}
	}
	total := perPub + 1
	ctx, cancel := context.WithTimeout(context.Background(), 2*hangGuard)
	defer cancel()
	var wg sync.WaitGroup
	start := make(chan struct{})
	var pubErr atomic.Value
	for r := range records {
		id := ids[r]
		prng := rand.New(rand.NewPCG(seed, uint64(100+r)))
		wg.Go(func() {
			<-start
			for i := range perPub {
				if _, err := rt.Changed(context.Background(), "posts", id, rec{ID: id, N: i}); err != nil {
					pubErr.Store(err)
					return
				}
				time.Sleep(time.Duration(prng.IntN(600)) * time.Microsecond)
			}
		})
	}
	logs := make([]map[string][]recLog, clients)
	errs := make([]error, clients)
	for c := range clients {
		crng := rand.New(rand.NewPCG(seed, uint64(200+c)))
		wg.Go(func() {
			<-start
			logs[c], errs[c] = wsHandoverClient(ctx, crng, srv, tok, ids, rbs, total)
		})
	}
	close(start)
	wg.Wait()
	if err, _ := pubErr.Load().(error); err != nil {
		t.Fatalf("publish: %v", err)
	}
	subs, resyncs, ends := 0, 0, map[string]int{}
	for c := range clients {
		for _, id := range ids {
			for _, l := range logs[c][id] {
				subs++
				ends[l.end]++
				if len(l.frames) > 0 && l.frames[0].Event == EventResync {
					resyncs++
				}
			}
		}
	}
	t.Logf("%d record subscriptions (%d began with resync), ended: %v", subs, resyncs, ends)
	for c := range clients {
		err := errs[c]
		for _, id := range ids {
			if err != nil {
				break
			}
			var pos int
			pos, err = checkSequence(rbs[id], logs[c][id])
			if err == nil && pos != total-1 {
				err = fmt.Errorf("ended at version %d of %d", pos, total-1)
			}
			if err != nil {
				err = fmt.Errorf("record %s: %w", id, err)
			}
		}
		if err != nil {
			t.Errorf("client %d: %v", c, err)
			for _, id := range ids {
				for i, l := range logs[c][id] {
					t.Logf("client %d record %s subscription %d: lastEventId %q, %d frames, end: %s", c, id, i, l.lastID, len(l.frames), l.end)
				}
			}
		}
	}
}

// wsHandoverClient follows every record until it has the last version of
// each, on one socket at a time: at random points it unsubscribes a record
// and resubscribes it from its last ETag, or drops the socket and
// reconnects; a 1013 close (queue overflow) reconnects too.
func wsHandoverClient(ctx context.Context, rng *rand.Rand, srv *httptest.Server, tok string, ids []string, rbs map[string]*recordingBuffer, total int) (map[string][]recLog, error) {
	logs := map[string][]recLog{}
	cur := map[string]*recLog{}
	lastID := map[string]string{}
	done := map[string]bool{}
	finish := func(id, end string) {
		if l := cur[id]; l != nil {
			l.end = end
			logs[id] = append(logs[id], *l)
			cur[id] = nil
		}
	}
	d := websocket.Dialer{HandshakeTimeout: hangGuard}
	for {
		if err := ctx.Err(); err != nil {
			return logs, fmt.Errorf("gave up: %w", err)
		}
		allDone := true
		for _, id := range ids {
			allDone = allDone && done[id]
		}
		if allDone {
			return logs, nil
		}
		conn, _, err := d.DialContext(ctx, wsURL(srv)+"?token="+tok, nil)
		if err != nil {
			return logs, fmt.Errorf("dial: %w", err)
		}
		read := func() (recFrame, error) {
			var f recFrame
			conn.SetReadDeadline(time.Now().Add(hangGuard))
			_, b, err := conn.ReadMessage()
			if err != nil {
				return f, err
			}
			err = json.Unmarshal(b, &f)
			f.raw = b
			return f, err
		}
		subscribe := func(typ string, want []string) error {
			var reqs []wsRecordReq
			for _, id := range want {
				reqs = append(reqs, wsRecordReq{Collection: "posts", ID: id, LastEventID: lastID[id]})
				if typ == "subscribe" {
					cur[id] = &recLog{lastID: lastID[id]}
				}
			}
			b, _ := json.Marshal(map[string]any{"type": typ, "records": reqs})
			conn.SetWriteDeadline(time.Now().Add(hangGuard))
			return conn.WriteMessage(websocket.TextMessage, b)
		}
		var want []string
		for _, id := range ids {
			if !done[id] {
				want = append(want, id)
			}
		}
		connErr := func() error {
			defer conn.Close()
			if f, err := read(); err != nil || f.Type != "connected" {
				return fmt.Errorf("connected: %v %s", err, f.raw)
			}
			if err := subscribe("subscribe", want); err != nil {
				return err
			}
			budget := 1 + rng.IntN(40)
			leaving := "" // a record being unsubscribed
			for {
				f, err := read()
				if err != nil {
					var ce *websocket.CloseError
					if errors.As(err, &ce) && ce.Code == websocket.CloseTryAgainLater {
						for _, id := range ids {
							finish(id, "1013")
						}
						return nil // overflow: reconnect and resume
					}
					return fmt.Errorf("read: %w", err)
				}
				switch f.Type {
				case "subscribed":
					continue
				case "unsubscribed":
					finish(leaving, "unsubscribed")
					if err := subscribe("subscribe", []string{leaving}); err != nil {
						return err
					}
					leaving = ""
					continue
				case "error":
					return fmt.Errorf("error frame %s", f.raw)
				}
				l := cur[f.ID]
				if l == nil {
					return fmt.Errorf("frame %s of a record not subscribed", f.raw)
				}
				sf := sseFrame{Event: f.Type, ID: f.ETag, HasID: f.ETag != "", Data: string(f.Data), HasData: true}
				if f.Type == EventResync {
					sf.Data = `{"reason":"` + f.Reason + `"}`
				}
				l.frames = append(l.frames, sf)
				if f.ETag != "" {
					lastID[f.ID] = f.ETag
					if i, _, _ := rbs[f.ID].position(f.ETag); i == total-1 {
						done[f.ID] = true
					}
				}
				allDone := true
				for _, id := range ids {
					allDone = allDone && done[id]
				}
				if allDone {
					return nil
				}
				if budget--; budget > 0 || leaving != "" {
					continue
				}
				if rng.IntN(2) == 0 {
					return nil // drop the socket
				}
				leaving = ids[rng.IntN(len(ids))]
				if err := subscribe("unsubscribe", []string{leaving}); err != nil {
					return err
				}
				budget = 1 + rng.IntN(40)
			}
		}()
		for _, id := range ids {
			finish(id, "socket ended")
		}
		if connErr != nil {
			return logs, connErr
		}
	}
}
