package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	neturl "net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// Tests of Plugin.Stats: each counter driven by a real client (SSE
// streams, long polls, WebSockets, a stalled TCP peer), waiting for the
// counts (the writers add theirs when they go idle) with waitFor.

// statsWait polls rt.Stats until cond holds.
func statsWait(t *testing.T, rt *Plugin, what string, cond func(s Stats) bool) Stats {
	t.Helper()
	var s Stats
	waitFor(t, what, func() bool { s = rt.Stats(); return cond(s) })
	return s
}

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func debugLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestStatsConnectionsAndDelivery(t *testing.T) {
	var logs syncBuf
	e := newEnv(t, Config{Logger: debugLogger(&logs)}, true)
	rt, srv := e.rt, e.srv
	e.put(t, "42", 1)

	rec := openStream(t, srv.Client(), recordURL(srv, "42"), e.tok, nil)
	col := openStream(t, srv.Client(), collectionURL(srv), e.tok, nil)
	ch := openStream(t, srv.Client(), srv.URL+"/api/v1/channels/subscribe?channels=orders.new,orders.*", e.tok, nil)
	ws, _ := connectWS(t, srv, tenantToken(t, "u2", "acme"))
	sendWS(t, ws, `{"type":"subscribe","channels":["a.b"],"records":[{"collection":"posts","id":"7","lastEventId":"\"x\""}]}`)
	expectType(t, ws, "subscribed")
	// The poll waits from the record's current version: up to date.
	pollURL := srv.URL + "/api/v1/posts/42/poll?timeout=10&lastEventId=" + neturl.QueryEscape(rec.lastID(t))
	polled := make(chan error, 1)
	go func() {
		resp, err := dial(context.Background(), srv.Client(), pollURL, e.tok, "")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		polled <- err
	}()

	s := statsWait(t, rt, "every connection", func(s Stats) bool { return s.Connections.Poll == 1 })
	want := PerTransport{SSERecord: 1, SSECollection: 1, SSEChannel: 1, WebSocket: 1, Poll: 1}
	if s.Connections != want {
		t.Fatalf("connections %+v, want %+v", s.Connections, want)
	}
	if got := s.Subscriptions; got.Records != 3 || got.Collections != 1 || got.Channels != 3 || got.RecordStreams != 2 || got.CollectionStreams != 1 {
		t.Errorf("subscriptions %+v, want 3 records (stream, poll, socket) of 2 streams, 1 collection, 3 channels", got)
	}
	if len(s.Tenants) != 2 || s.Tenants[0].Tenant != DefaultTenant || s.Tenants[0].Total != 4 ||
		s.Tenants[1].Tenant != "acme" || s.Tenants[1].Connections.WebSocket != 1 {
		t.Errorf("tenants %+v, want default (4) then acme (1 WebSocket)", s.Tenants)
	}
	if top := rt.TopTenants(1); len(top) != 1 || top[0].Tenant != DefaultTenant {
		t.Errorf("TopTenants(1) = %+v", top)
	}

	etag := e.put(t, "42", 2)
	expectFrames(t, rec, frame{EventChanged, etag, ""})
	expectFrames(t, col, frame{EventChanged, etag, ""})
	if err := <-polled; err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Notify(context.Background(), Notification{Channel: "orders.new", Event: "order_created", Data: map[string]int{"id": 1}}); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, ch, "order_created")

	s = statsWait(t, rt, "the deliveries", func(s Stats) bool {
		d := s.Delivery
		return d.Frames.SSERecord >= 2 && d.Frames.SSECollection >= 1 && d.Frames.Poll >= 1 && d.Frames.SSEChannel >= 1 &&
			d.Latency.Count >= 3 && s.Connections.Poll == 0
	})
	d := s.Delivery
	if d.Frames.SSERecord != 2 || d.Frames.SSECollection != 1 || d.Frames.Poll != 1 || d.Frames.SSEChannel != 1 {
		t.Errorf("frames %+v: want record 2 (snapshot, changed), collection 1, poll 1, channel 1", d.Frames)
	}
	if d.Frames.WebSocket < 3 { // subscribed, the record's first frames, …
		t.Errorf("WebSocket frames %d, want the answers written", d.Frames.WebSocket)
	}
	if d.Bytes.SSERecord < uint64(len(etag)) || d.Writes.SSERecord < 2 || d.Bytes.Poll != 0 {
		t.Errorf("bytes %+v writes %+v", d.Bytes, d.Writes)
	}
	// The changed event went live to the record stream, the collection
	// stream and the poll: three latencies; the snapshot was not live.
	if d.Latency.Count != 3 || d.Latency.Sum <= 0 || len(d.Latency.Counts) != len(d.Latency.Bounds)+1 {
		t.Errorf("latency %+v, want 3 observations", d.Latency)
	}
	if d.Fanout.Count < 1 || d.PushFanout.Count < 1 {
		t.Errorf("fan-out %d, push fan-out %d, want both observed", d.Fanout.Count, d.PushFanout.Count)
	}
	if s.Published.Events != 2 || s.Published.Pushes != 1 {
		t.Errorf("published %+v, want 2 events, 1 push", s.Published)
	}
	if s.Disconnects.Closed.Poll != 0 {
		t.Errorf("an answered poll counted as a disconnect: %+v", s.Disconnects.Closed)
	}

	rec.close()
	col.close()
	ch.close()
	ws.Close()
	s = statsWait(t, rt, "every connection closed", func(s Stats) bool { return s.Connections.Total() == 0 })
	if got := s.Disconnects.Closed; got.SSERecord != 1 || got.SSECollection != 1 || got.SSEChannel != 1 || got.WebSocket != 1 {
		t.Errorf("closed %+v, want one of each stream", got)
	}
	if s.Subscriptions != (SubscriptionStats{}) || len(s.Tenants) != 0 {
		t.Errorf("subscriptions %+v tenants %+v after every close", s.Subscriptions, s.Tenants)
	}

	l := logs.String()
	for _, want := range []string{
		`msg="realtime: connection opened" transport=sse_record tenant=default user=u1 collection=posts id=42`,
		`msg="realtime: connection opened" transport=websocket tenant=acme user=u2`,
		`msg="realtime: connection closed" transport=sse_record tenant=default user=u1 collection=posts id=42 reason=closed duration=`,
		`msg="realtime: connection closed" transport=sse_collection tenant=default user=u1 collection=posts reason=closed`,
	} {
		if !strings.Contains(l, want) {
			t.Errorf("logs lack %s:\n%s", want, l)
		}
	}
	if !strings.Contains(l, "frames=2") {
		t.Errorf("the record stream's close does not log its 2 frames:\n%s", l)
	}
	if strings.Contains(l, e.tok) {
		t.Error("a token reached the logs")
	}
}

// expectEvents reads the next events of s and checks their types; a want
// "resync <reason>" checks the resync's reason too.
func expectEvents(t *testing.T, s *stream, want ...string) {
	t.Helper()
	for _, w := range want {
		typ, reason, _ := strings.Cut(w, " ")
		guard := timeGuard(s.resp.Body)
		f, err := s.fr.next()
		guard.Stop()
		if err != nil || f.Event != typ || (reason != "" && !strings.Contains(f.Data, `"`+reason+`"`)) {
			t.Fatalf("frame %+v %v, want %s", f, err, w)
		}
	}
}

// lastID reads the stream's first frame, the record's snapshot, and
// returns its ETag.
func (s *stream) lastID(t *testing.T) string {
	t.Helper()
	f, err := s.fr.next()
	if err != nil || f.Event != EventSnapshot {
		t.Fatalf("first frame %+v %v, want the snapshot", f, err)
	}
	return f.ID
}

func TestStatsSlowSubscribers(t *testing.T) {
	var logs syncBuf
	// A blocked write ends after WriteTimeout: the WebSocket's close
	// frame (1013) cannot be written to a peer that never reads.
	rt, srv := newTestServer(t, Config{QueueSize: 4, WSSendQueue: 4, WriteTimeout: 2 * time.Second, Logger: debugLogger(&logs)})
	tok := userToken(t, "u1")
	addr := srv.Listener.Addr().String()
	dialStalled(t, addr, fmt.Sprintf("GET /api/v1/posts/42/subscribe HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", addr, tok))
	dialStalled(t, addr, "GET /api/v1/ws HTTP/1.1\r\nHost: "+addr+
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer "+tok+"\r\n\r\n")
	statsWait(t, rt, "both stalled peers", func(s Stats) bool { return s.Connections.SSERecord == 1 && s.Connections.WebSocket == 1 })
	pad := strings.Repeat("x", 64<<10)
	deadline := time.Now().Add(hangGuard)
	for n := 0; ; n++ {
		s := rt.Stats()
		if s.Disconnects.Slow.SSERecord == 1 && s.Disconnects.Slow.WebSocket == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slow disconnect after %d events: %+v", n, s.Disconnects)
		}
		if n > 100 {
			time.Sleep(5 * time.Millisecond) // the queues overflowed long ago: wait for the write timeout
		}
		data, _ := json.Marshal(map[string]any{"id": "42", "n": n, "pad": pad})
		if _, err := rt.Publish(context.Background(), Publication{Collection: "posts", ID: "42", Event: EventChanged, Data: data}); err != nil {
			t.Fatal(err)
		}
		if _, err := rt.Notify(context.Background(), Notification{Event: "big", Data: json.RawMessage(data)}); err != nil {
			t.Fatal(err)
		}
	}
	s := statsWait(t, rt, "the slow peers gone", func(s Stats) bool { return s.Connections.Total() == 0 })
	if s.Disconnects.Slow.Total() != 2 || s.Disconnects.Error.Total() != 0 {
		t.Errorf("disconnects %+v, want 2 slow", s.Disconnects)
	}
	l := logs.String()
	for _, want := range []string{
		`level=WARN msg="realtime: slow subscriber disconnected; it resumes on reconnect" transport=sse_record tenant=default user=u1 collection=posts id=42 reason=slow`,
		`level=WARN msg="realtime: slow subscriber disconnected; it resumes on reconnect" transport=websocket tenant=default user=u1 reason=slow`,
	} {
		if !strings.Contains(l, want) {
			t.Errorf("logs lack %s:\n%s", want, l)
		}
	}
	if strings.Contains(l, tok) {
		t.Error("a token reached the logs")
	}
}

func TestStatsExpiredAndRevoked(t *testing.T) {
	var revoked atomic.Bool
	rt, srv := newTestServer(t, Config{
		Heartbeat: 20 * time.Millisecond, JWTLeeway: time.Nanosecond,
		Authorize: func(_ context.Context, a Access) error {
			if revoked.Load() && a.Ref.ID == "9" {
				return ErrForbidden
			}
			return nil
		},
	})
	c := validClaims("u1")
	c["exp"] = time.Now().Add(2 * time.Second).Unix()
	short := mintToken(t, testSecret, c)
	openStream(t, srv.Client(), recordURL(srv, "42"), short, nil)
	ws, _ := connectWS(t, srv, short)
	defer ws.Close()
	rev := openStream(t, srv.Client(), recordURL(srv, "9"), userToken(t, "u1"), nil)

	statsWait(t, rt, "the streams", func(s Stats) bool { return s.Connections.SSERecord == 2 })
	revoked.Store(true)
	if _, err := rt.Publish(context.Background(), Publication{Collection: "posts", ID: "9", Event: EventChanged, Data: json.RawMessage(`{"id":"9"}`)}); err != nil {
		t.Fatal(err)
	}
	if fs := readToEnd(t, rev.fr); len(fs) != 0 {
		t.Errorf("revoked stream got %+v", fs)
	}
	if code := closeCode(t, ws); code != closePolicyViolation {
		t.Errorf("close code %d, want 1008", code)
	}
	s := statsWait(t, rt, "the ends", func(s Stats) bool { return s.Connections.Total() == 0 })
	if d := s.Disconnects; d.Expired.SSERecord != 1 || d.Expired.WebSocket != 1 || d.Revoked.SSERecord != 1 || d.Closed.Total() != 0 {
		t.Errorf("disconnects %+v, want expired: 1 SSE, 1 WebSocket; revoked: 1 SSE", d)
	}
}

func TestStatsResyncs(t *testing.T) {
	m := NewMemoryBroker(MemoryBufferConfig{})
	e := newEnv(t, Config{Broker: m.Node()}, true)
	rt, srv := e.rt, e.srv
	e.put(t, "1", 1)

	// buffer-miss: a resume point the buffer does not have.
	miss := openStream(t, srv.Client(), recordURL(srv, "1"), e.tok, http.Header{"Last-Event-Id": {`"gone"`}})
	expectEvents(t, miss, EventResync, EventSnapshot)
	col := openStream(t, srv.Client(), collectionURL(srv), e.tok, nil)
	// version-jump: version 3 published over a gap after version 1.
	ws, _ := connectWS(t, srv, e.tok)
	defer ws.Close()
	e.store.put(Ref{Collection: "posts", ID: "v"}, rec{ID: "v"})
	sendWS(t, ws, `{"type":"subscribe","records":[{"collection":"posts","id":"v"}]}`)
	expectType(t, ws, "subscribed")
	for _, v := range []uint64{1, 3} {
		if _, err := rt.Publish(context.Background(), Publication{Collection: "posts", ID: "v", Event: EventChanged,
			Data: json.RawMessage(fmt.Sprintf(`{"id":"v","v":%d}`, v)), Version: v, Gap: v == 3}); err != nil {
			t.Fatal(err)
		}
	}
	s := statsWait(t, rt, "a version jump", func(s Stats) bool { return s.Resyncs.VersionJump >= 1 })
	if s.Resyncs.BufferMiss != 1 {
		t.Errorf("buffer-miss %d, want 1", s.Resyncs.BufferMiss)
	}

	// bulk-write: the collection stream, the record stream and the socket's records.
	if err := rt.Resync(context.Background(), "posts"); err != nil {
		t.Fatal(err)
	}
	s = statsWait(t, rt, "a bulk resync", func(s Stats) bool { return s.Resyncs.BulkWrite >= 1 })
	if s.Resyncs.BulkWrite != 3 {
		t.Errorf("bulk-write %d, want 3 (record stream, collection stream, socket record)", s.Resyncs.BulkWrite)
	}
	expectEvents(t, col, EventChanged, EventChanged, EventResync+" bulk-write")

	// gap: an outage of the engine.
	if !s.Broker.Up || s.Broker.Outages != 0 || !s.Broker.LastOutageStart.IsZero() {
		t.Fatalf("broker %+v before the outage", s.Broker)
	}
	m.SetUnavailable(errors.New("engine down"))
	s = rt.Stats()
	if s.Broker.Up || s.Broker.Outages != 1 || s.Broker.LastOutageStart.IsZero() || !s.Broker.LastOutageEnd.IsZero() {
		t.Errorf("broker %+v during the outage", s.Broker)
	}
	m.SetUnavailable(nil)
	s = statsWait(t, rt, "the gap", func(s Stats) bool { return s.Resyncs.Gap >= 1 })
	if !s.Broker.Up || s.Broker.Outages != 1 || s.Broker.LastOutageEnd.Before(s.Broker.LastOutageStart) || s.Broker.Gaps < 2 {
		t.Errorf("broker %+v after the outage, want up, one outage, a gap per watched stream", s.Broker)
	}
	expectEvents(t, col, EventResync+" buffer-miss")
}

func TestStatsAuthFailures(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	expired := validClaims("u1")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	noSub := jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}
	for _, tok := range []string{
		"", "not-a-jwt", mintToken(t, []byte("another-secret-0123456789"), validClaims("u1")),
		mintToken(t, testSecret, expired), mintToken(t, testSecret, noSub),
	} {
		resp := getWith(t, recordURL(srv, "1"), tok, nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	resp := postJSON(t, srv.URL+"/api/v1/notify", userToken(t, "u1"), `{"event":"x"}`)
	resp.Body.Close()
	if c, resp, _ := dialWS(t, srv, userToken(t, "u1"), false, http.Header{"Origin": {"https://evil.example"}}); c != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %d", resp.StatusCode)
	}
	want := AuthFailureStats{Missing: 1, Malformed: 1, Signature: 1, Expired: 1, Claims: 1, Scope: 1, Origin: 1}
	if got := rt.Stats().AuthFailures; got != want {
		t.Errorf("auth failures %+v, want %+v", got, want)
	}
}

func TestStatsAcks(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	acker, _ := connectWS(t, srv, userToken(t, "u1"))
	silent, _ := connectWS(t, srv, userToken(t, "u2"))
	defer acker.Close()
	defer silent.Close()
	go func() {
		var f wsFrame
		acker.SetReadDeadline(time.Now().Add(hangGuard))
		if err := acker.ReadJSON(&f); err == nil {
			_ = acker.WriteMessage(websocket.TextMessage, []byte(`{"type":"ack","envelopeId":"`+f.EnvelopeID+`","result":true}`))
		}
	}()
	res, err := rt.Notify(context.Background(), Notification{Event: "e", AwaitAcks: 500 * time.Millisecond})
	if err != nil || len(res.Acks) != 1 || res.TimedOut != 1 {
		t.Fatalf("notify %+v %v", res, err)
	}
	if got := rt.Stats().Acks; got != (AckStats{Received: 1, TimedOut: 1}) {
		t.Errorf("acks %+v, want 1 received, 1 timed out", got)
	}
}

func TestStatsBuffer(t *testing.T) {
	rt, _ := newTestServer(t, Config{BufferMemory: 4 << 10})
	for i := range 20 {
		publishN(t, rt, fmt.Sprint(i), 0, 3)
	}
	b := rt.Stats().Buffer
	if !b.Reported || b.Entries == 0 || b.Streams == 0 || b.Bytes <= 0 || b.Bytes > 4<<10 || b.Evictions == 0 {
		t.Errorf("buffer %+v, want entries within 4 KiB and evictions", b)
	}
	// A broker's own buffer reports through it.
	m := NewMemoryBroker(MemoryBufferConfig{})
	rt2, _ := newTestServer(t, Config{Broker: m.Node()})
	publishN(t, rt2, "1", 0, 2)
	if b := rt2.Stats().Buffer; !b.Reported || b.Entries != 4 || b.Streams != 2 {
		t.Errorf("broker's buffer %+v, want 4 entries in 2 streams", b)
	}
}

func TestStatsWriterStalls(t *testing.T) {
	rt, srv := newTestServer(t, Config{Writers: 1, QueueSize: 1000, WriteTimeout: time.Minute})
	tok := userToken(t, "u1")
	addr := srv.Listener.Addr().String()
	dialStalled(t, addr, fmt.Sprintf("GET /api/v1/posts/42/subscribe HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", addr, tok))
	s := openStream(t, srv.Client(), recordURL(srv, "42"), tok, nil)
	statsWait(t, rt, "both subscribers", func(s Stats) bool { return s.Connections.SSERecord == 2 })
	if w := rt.Stats().Writers; w.Workers != 1 || w.Stalls != 0 {
		t.Fatalf("writers %+v before any stall", w)
	}
	go func() { _, _ = io.Copy(io.Discard, s.resp.Body) }()
	pad := strings.Repeat("x", 64<<10)
	for n := 0; rt.Stats().Writers.Stalls == 0; n++ {
		if n == 1000 {
			t.Fatal("no stall after 1000 events of 64 KiB to a peer that never reads")
		}
		data, _ := json.Marshal(map[string]any{"id": "42", "n": n, "pad": pad})
		if _, err := rt.Publish(context.Background(), Publication{Collection: "posts", ID: "42", Event: EventChanged, Data: data}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
}

type fakeSource struct{ n uint64 }

func (f *fakeSource) ReportStats(s *Stats) {
	s.Queue.Queues++
	s.Queue.Consumed += f.n
}

func TestStatsSources(t *testing.T) {
	rt, _ := newTestServer(t, Config{})
	remove := rt.AddStatsSource(&fakeSource{n: 3})
	rt.AddStatsSource(&fakeSource{n: 4})
	if q := rt.Stats().Queue; q.Queues != 2 || q.Consumed != 7 {
		t.Errorf("queue %+v, want the two sources summed", q)
	}
	remove()
	remove()
	if q := rt.Stats().Queue; q.Queues != 1 || q.Consumed != 4 {
		t.Errorf("queue %+v after remove", q)
	}
}

// TestStatsConcurrent reads Stats while clients come and go and events
// flow (for the race detector), and checks the JSON shape.
func TestStatsConcurrent(t *testing.T) {
	e := newEnv(t, Config{}, false)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = e.rt.Stats()
			}
		})
	}
	for i := range 5 {
		s := openStream(t, e.srv.Client(), recordURL(e.srv, "1"), e.tok, nil)
		e.put(t, "1", i)
		s.close()
	}
	close(stop)
	wg.Wait()
	b, err := json.Marshal(e.rt.Stats())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	_ = json.Unmarshal(b, &m)
	for _, k := range []string{"connections", "tenants", "subscriptions", "published", "delivery", "resyncs", "disconnects",
		"authFailures", "acks", "queue", "broker", "outbox", "buffer", "writers"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b)
		}
	}
	if bytes.Contains(b, []byte("lastOutageStart")) {
		t.Errorf("a zero outage time is encoded: %s", b)
	}
}

// TestTallyAllocatesNothing: metering a write costs no allocation.
func TestTallyAllocatesNothing(t *testing.T) {
	c := &conn{kind: kindSSERecord}
	s := &subscription{started: time.Now()}
	ev := &Event{Type: EventChanged, Time: time.Now()}
	batch := []out{{ev: ev, sub: s}, {ev: keepaliveEvent}, {ev: ev}}
	var tl tally
	var m deliveryMeter
	allocs := testing.AllocsPerRun(1000, func() {
		c.wrote = 100
		tl.add(c, batch, time.Time{})
		tl.flush(&m)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per write", allocs)
	}
	if m.frames[kindSSERecord].Load() != 2*1001 || m.bytes[kindSSERecord].Load() != 100*1001 {
		t.Errorf("frames %d bytes %d", m.frames[kindSSERecord].Load(), m.bytes[kindSSERecord].Load())
	}
	if h := m.latency.snapshot(latencyBounds); h.Count != 1001 {
		t.Errorf("%d latencies, want one per write (the event of the subscription)", h.Count)
	}
}

// BenchmarkDeliveryMeter is what metering adds to one write of one live
// record event on a writer-pool worker: the tally (added to the shared
// atomics every tallyJobs writes). Compare with the write itself (a
// loopback write costs microseconds; BenchmarkPublish).
func BenchmarkDeliveryMeter(b *testing.B) {
	c := &conn{kind: kindSSERecord}
	s := &subscription{started: time.Now()}
	ev := &Event{Type: EventChanged, Time: time.Now()}
	batch := []out{{ev: ev, sub: s}}
	var tl tally
	var m deliveryMeter
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		c.wrote = 180
		tl.add(c, batch, now)
		if tl.jobs++; tl.jobs >= tallyJobs {
			tl.flush(&m)
		}
	}
}
