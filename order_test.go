package realtime

// Deterministic regression tests of the order rules (subscription.go):
// what a subscriber gets when its broker delivers a duplicate, an older
// version, a version after a lost one, or reports a gap; and the version
// of a snapshot. The broker is the in-process engine, driven directly.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// tapBroker is an engine node whose Node the test can call itself, as a
// broker would.
type tapBroker struct {
	Broker
	node Node
	// afterSince, when set, runs after a buffer lookup returns (once: it
	// is cleared first).
	afterSince func()
}

func (b *tapBroker) Since(ctx context.Context, key StreamKey, lastID string) (Lookup, error) {
	lk, err := b.Broker.Since(ctx, key, lastID)
	if f := b.afterSince; f != nil {
		b.afterSince = nil
		f()
	}
	return lk, err
}

func (b *tapBroker) Start(n Node) error {
	b.node = n
	return b.Broker.Start(n)
}

// orderEnv is a plugin on a tapped in-process engine, with a record store.
type orderEnv struct {
	m     *MemoryBroker
	tap   *tapBroker
	rt    *Plugin
	srv   *httptest.Server
	store *versionedStore
	tok   string
}

// versionedStore is a RecordLoader that reports the version it loads.
type versionedStore struct {
	recordStore
	versions map[Ref]uint64
}

func (s *versionedStore) Load(ctx context.Context, ref Ref) (any, error) {
	rec, err := s.recordStore.Load(ctx, ref)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return VersionedRecord{Record: rec, Version: s.versions[ref]}, nil
}

// newOrderEnv's subscriptions wait a minute after a gap (ResumeWait): a
// test that does not expect a wait times out reading if one happens.
func newOrderEnv(t *testing.T) *orderEnv {
	return newOrderEnvWaiting(t, time.Minute)
}

func newOrderEnvWaiting(t *testing.T, wait time.Duration) *orderEnv {
	t.Helper()
	e := &orderEnv{m: NewMemoryBroker(MemoryBufferConfig{}), tok: userToken(t, "u1")}
	e.store = &versionedStore{recordStore: *newRecordStore(), versions: map[Ref]uint64{}}
	e.tap = &tapBroker{Broker: e.m.Node()}
	e.rt, e.srv = newTestServer(t, Config{Broker: e.tap, Loader: e.store.Load, ResumeWait: wait})
	return e
}

// event is version v of posts/id.
func (e *orderEnv) event(t *testing.T, id string, v uint64) *Event {
	t.Helper()
	ev, err := e.rt.newEvent(context.Background(), Publication{Collection: "posts", ID: id, Event: EventChanged,
		Data: json.RawMessage(fmt.Sprintf(`{"id":%q,"v":%d}`, id, v)), Version: v})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// store records version v of posts/id as the stored record.
func (e *orderEnv) put(id string, v uint64) {
	ref := Ref{Tenant: DefaultTenant, Collection: "posts", ID: id}
	e.store.put(ref, json.RawMessage(fmt.Sprintf(`{"id":%q,"v":%d}`, id, v)))
	e.store.mu.Lock()
	e.store.versions[ref] = v
	e.store.mu.Unlock()
}

// publish stores and publishes version v (appended and delivered).
func (e *orderEnv) publish(t *testing.T, id string, v uint64) *Event {
	t.Helper()
	e.put(id, v)
	return e.outbox(t, id, v)
}

// outbox publishes version v, stored already: what an outbox does once the
// engine is back.
func (e *orderEnv) outbox(t *testing.T, id string, v uint64) *Event {
	t.Helper()
	ev := e.event(t, id, v)
	if err := e.rt.publish(context.Background(), ev, AppendInOrder); err != nil {
		t.Fatal(err)
	}
	return ev
}

// lose stores and appends version v to the buffer without delivering it:
// a message the link lost.
func (e *orderEnv) lose(t *testing.T, id string, v uint64) *Event {
	t.Helper()
	e.put(id, v)
	ev := e.event(t, id, v)
	if _, _, err := e.m.rec.appendRecord(ev, AppendInOrder); err != nil {
		t.Fatal(err)
	}
	return ev
}

// deliver hands ev to the node as the broker would, at a new position of
// its stream (what a broker that forgot the record's last version would
// do).
func (e *orderEnv) deliver(t *testing.T, ev *Event) {
	t.Helper()
	seq, err := e.m.buf.Append(context.Background(), StreamKey{Tenant: "other", Collection: "x"}, &Event{Type: EventChanged, ETag: `"x"`})
	if err != nil {
		t.Fatal(err)
	}
	e.tap.node.Deliver(ev.Ref, Entry{Seq: seq, Event: ev})
}

// follow opens a WebSocket following posts/id, past its first frames
// (subscribed, snapshot).
func (e *orderEnv) follow(t *testing.T, id string) *websocket.Conn {
	t.Helper()
	c, _ := connectWS(t, e.srv, e.tok)
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: id})
	expectRec(t, c, "subscribed", "")
	expectRec(t, c, EventSnapshot, id)
	return c
}

// expectVersion reads the next record frame and checks it is ev.
func expectVersion(t *testing.T, c *websocket.Conn, typ string, ev *Event) recFrame {
	t.Helper()
	f := expectRec(t, c, typ, ev.Ref.ID)
	if f.ETag != ev.ETag {
		t.Fatalf("got %s, want %s", f.raw, ev.Data)
	}
	return f
}

// TestOrderDuplicateAndOlderVersionsDropped: a broker that delivers a
// version twice, or an older one after a newer (a late drainer, a Redis
// that forgot the record's last version), is never followed by a
// subscriber: each version once, in order.
func TestOrderDuplicateAndOlderVersionsDropped(t *testing.T) {
	e := newOrderEnv(t)
	e.put("1", 1)
	c := e.follow(t, "1")
	v2 := e.publish(t, "1", 2)
	expectVersion(t, c, EventChanged, v2)
	e.deliver(t, v2)                 // the same version again, at a new position
	e.deliver(t, e.event(t, "1", 1)) // an older one
	v3 := e.publish(t, "1", 3)
	expectVersion(t, c, EventChanged, v3) // not 2 again, nor 1
}

// TestOrderJumpResumesFromBuffer: a version delivered after a lost one
// (the link dropped a message) makes a WebSocket's record resume from its
// last version: the missed events come from the buffer, in order, without
// resync, then the one that revealed the loss.
func TestOrderJumpResumesFromBuffer(t *testing.T) {
	e := newOrderEnv(t)
	e.publish(t, "1", 1)
	c := e.follow(t, "1")
	v2 := e.lose(t, "1", 2)
	v3 := e.lose(t, "1", 3)
	e.deliver(t, v3)
	expectVersion(t, c, EventChanged, v2)
	expectVersion(t, c, EventChanged, v3)
	v4 := e.publish(t, "1", 4)
	expectVersion(t, c, EventChanged, v4)
}

// TestOrderJumpWithoutBufferResyncs: when the missed versions are not in
// the buffer (a Redis restarted empty), the record gets resync and the
// stored record, before any later event, and never goes back.
func TestOrderJumpWithoutBufferResyncs(t *testing.T) {
	e := newOrderEnv(t)
	e.put("1", 1)
	c := e.follow(t, "1")
	e.put("1", 2)            // committed, its event lost
	e.put("1", 3)            // committed, its event lost
	v4 := e.event(t, "1", 4) // delivered, but not in the buffer
	e.put("1", 4)
	e.deliver(t, v4)
	if f := expectRec(t, c, EventResync, "1"); f.Reason != reasonBufferMiss {
		t.Fatalf("%s", f.raw)
	}
	if f := expectRec(t, c, EventSnapshot, "1"); string(f.Data) != `{"id":"1","v":4}` {
		t.Fatalf("after the resync: %s, want the stored version 4", f.raw)
	}
	e.deliver(t, e.event(t, "1", 3)) // a late older version: dropped
	v5 := e.publish(t, "1", 5)
	expectVersion(t, c, EventChanged, v5)
}

// TestOrderGapWithEventsAvailable: the broker's gap report when nothing
// was missed (or the missed events are in the buffer) costs no resync.
func TestOrderGapWithEventsAvailable(t *testing.T) {
	e := newOrderEnv(t)
	e.put("1", 1)
	c := e.follow(t, "1")
	v2 := e.publish(t, "1", 2)
	expectVersion(t, c, EventChanged, v2)
	e.tap.node.Gap(Ref{Tenant: DefaultTenant, Collection: "posts", ID: "1"})
	v3 := e.lose(t, "1", 3)
	e.tap.node.Gap(Ref{Tenant: DefaultTenant, Collection: "posts", ID: "1"})
	expectVersion(t, c, EventChanged, v3)
	v4 := e.publish(t, "1", 4)
	expectVersion(t, c, EventChanged, v4)
}

// TestOrderGapHoldsLaterEvents: after a gap, events delivered while the
// record resumes wait for it: the resync (when one is needed) comes
// before them.
func TestOrderGapHoldsLaterEvents(t *testing.T) {
	e := newOrderEnv(t)
	e.put("1", 1)
	c := e.follow(t, "1")
	e.put("1", 2) // its event lost, and not in the buffer
	key := Ref{Tenant: DefaultTenant, Collection: "posts", ID: "1"}
	e.tap.node.Gap(key)
	v3 := e.publish(t, "1", 3)
	f := expectRec(t, c, EventResync, "1")
	_ = f
	snap := expectRec(t, c, EventSnapshot, "1")
	if snap.ETag == v3.ETag {
		return // the stored record was already version 3: nothing more
	}
	expectVersion(t, c, EventChanged, v3)
}

// TestOrderGapWaitsForTheOutbox: after the broker's gap report (its link
// was down), a WebSocket's record whose resume point is not buffered
// while the stored record is ahead (writes committed during the outage,
// their events still in an outbox) waits for those versions: they come as
// events, in order, with no resync. Regression: the fault run's resyncs
// at a link's return, a moment before the outbox drained.
func TestOrderGapWaitsForTheOutbox(t *testing.T) {
	e := newOrderEnv(t) // waits up to a minute: the versions come first
	e.put("1", 1)
	c := e.follow(t, "1")
	e.put("1", 2) // committed during the outage
	e.put("1", 3)
	e.tap.node.Gap(Ref{Tenant: DefaultTenant, Collection: "posts", ID: "1"})
	v2 := e.outbox(t, "1", 2) // then the outbox publishes them
	v3 := e.outbox(t, "1", 3)
	expectVersion(t, c, EventChanged, v2)
	expectVersion(t, c, EventChanged, v3)
	v4 := e.publish(t, "1", 4)
	expectVersion(t, c, EventChanged, v4)
}

// TestOrderGapWaitEndsInResync: when the versions a record waits for
// after a gap are not published within ResumeWait (lost with the engine),
// it gets resync and the stored record, then what follows.
func TestOrderGapWaitEndsInResync(t *testing.T) {
	e := newOrderEnvWaiting(t, 50*time.Millisecond)
	e.put("1", 1)
	c := e.follow(t, "1")
	e.put("1", 2) // its event lost for good
	e.tap.node.Gap(Ref{Tenant: DefaultTenant, Collection: "posts", ID: "1"})
	if f := expectRec(t, c, EventResync, "1"); f.Reason != reasonBufferMiss {
		t.Fatalf("%s", f.raw)
	}
	if f := expectRec(t, c, EventSnapshot, "1"); string(f.Data) != `{"id":"1","v":2}` {
		t.Fatalf("after the resync: %s, want the stored version 2", f.raw)
	}
	v3 := e.publish(t, "1", 3)
	expectVersion(t, c, EventChanged, v3)
}

// TestOrderGapWaitEndsWhileDown: a wait after a gap that ends while the
// broker is down again (Redis restarting twice in a row) does not resume
// then (the buffer cannot be read: it would resync); the next gap, once
// the broker is back, resumes it and it waits again, so the outbox's
// versions still come as events.
func TestOrderGapWaitEndsWhileDown(t *testing.T) {
	e := newOrderEnvWaiting(t, 50*time.Millisecond)
	e.put("1", 1)
	c := e.follow(t, "1")
	e.put("1", 2) // committed during the outage
	ref := Ref{Tenant: DefaultTenant, Collection: "posts", ID: "1"}
	e.tap.node.Gap(ref)
	e.tap.node.Health(errors.New("engine down again"))
	r := e.rt.streams.resumer
	waits := func() (n int, timing bool) {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.waits), r.timing
	}
	waitFor(t, "the wait to begin", func() bool { n, _ := waits(); return n == 1 })
	waitFor(t, "the wait to end", func() bool { n, timing := waits(); return n == 0 && !timing }) // waited ran
	e.tap.node.Health(nil)
	e.tap.node.Gap(ref)
	v2 := e.outbox(t, "1", 2) // the outbox publishes it
	expectVersion(t, c, EventChanged, v2)
	v3 := e.publish(t, "1", 3)
	expectVersion(t, c, EventChanged, v3)
}

// TestOrderGapWaitThenJump: a record waiting after a gap that gets a
// version beyond the next one resumes at once (the versions before it
// were published before it: not buffered, they are lost), resync first.
func TestOrderGapWaitThenJump(t *testing.T) {
	e := newOrderEnv(t)
	e.put("1", 1)
	c := e.follow(t, "1")
	e.put("1", 2)
	e.tap.node.Gap(Ref{Tenant: DefaultTenant, Collection: "posts", ID: "1"})
	v3 := e.publish(t, "1", 3)
	expectRec(t, c, EventResync, "1")
	if f := expectRec(t, c, EventSnapshot, "1"); f.ETag != v3.ETag {
		t.Fatalf("after the resync: %s, want the stored version 3", f.raw)
	}
	v4 := e.publish(t, "1", 4)
	expectVersion(t, c, EventChanged, v4)
}

// TestOrderVersionedSnapshotNeverGoesBack: a subscriber whose snapshot is
// version 5 (the loader says so) while the buffer is behind (the outbox
// has not published 3, 4, 5 yet) never gets them afterwards, only what
// follows.
func TestOrderVersionedSnapshotNeverGoesBack(t *testing.T) {
	e := newOrderEnv(t)
	e.publish(t, "1", 1)
	e.publish(t, "1", 2)
	e.put("1", 5) // committed: 3, 4 and 5 wait in an outbox
	c := e.follow(t, "1")
	for v := uint64(3); v <= 5; v++ {
		e.publish(t, "1", v)
	}
	v6 := e.publish(t, "1", 6)
	expectVersion(t, c, EventChanged, v6)
}

// TestOrderJumpResumesSSEStream: an SSE record stream that would skip a
// version resumes in place, as a WebSocket's record does: the versions it
// missed from the buffer, on the same stream, then live ones. Its resume
// point is the Last-Event-ID it subscribed with while it has sent nothing
// (a resume from nothing would resync).
func TestOrderJumpResumesSSEStream(t *testing.T) {
	e := newOrderEnv(t)
	v1 := e.publish(t, "1", 1)
	s := openStream(t, nil, recordURL(e.srv, "1"), e.tok, http.Header{"Last-Event-ID": {v1.ETag}})
	waitFor(t, "the stream", func() bool { return e.rt.Subscribers() == 1 })
	v2 := e.lose(t, "1", 2)
	v3 := e.lose(t, "1", 3)
	e.deliver(t, v3)
	expectFrames(t, s, frame{EventChanged, v2.ETag, ""}, frame{EventChanged, v3.ETag, ""})
	v4 := e.publish(t, "1", 4)
	expectFrames(t, s, frame{EventChanged, v4.ETag, ""})
}

// TestOrderGapWhileSubscribing: a gap reported after a subscription's
// first frames were read from the buffer, before they are sent, resumes it
// once they are: the event appended meanwhile comes, not silence.
func TestOrderGapWhileSubscribing(t *testing.T) {
	for _, ws := range []bool{false, true} {
		t.Run(fmt.Sprintf("ws=%v", ws), func(t *testing.T) {
			e := newOrderEnv(t)
			v1 := e.publish(t, "1", 1)
			v2 := e.event(t, "1", 2)
			lost := make(chan error, 1)
			e.tap.afterSince = func() { // the first frames are read: up to date with v1
				e.put("1", 2)
				_, _, err := e.m.rec.appendRecord(v2, AppendInOrder) // its delivery lost
				lost <- err
				e.tap.node.Gap(Ref{Tenant: DefaultTenant, Collection: "posts", ID: "1"})
			}
			defer func() {
				select {
				case err := <-lost:
					if err != nil {
						t.Error(err)
					}
				default:
					t.Error("no buffer lookup")
				}
			}()
			if ws {
				c, _ := connectWS(t, e.srv, e.tok)
				subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "1", LastEventID: v1.ETag})
				expectRec(t, c, "subscribed", "")
				expectVersion(t, c, EventChanged, v2)
				return
			}
			s := openStream(t, nil, recordURL(e.srv, "1"), e.tok, http.Header{"Last-Event-ID": {v1.ETag}})
			expectFrames(t, s, frame{EventChanged, v2.ETag, ""})
		})
	}
}

// TestOrderGapBeforeAnyFrame: a WebSocket's record subscribed from an ETag
// it is up to date with, and sent nothing since, resumes after a gap from
// that ETag: what it missed, no resync.
func TestOrderGapBeforeAnyFrame(t *testing.T) {
	e := newOrderEnv(t)
	v1 := e.publish(t, "1", 1)
	c, _ := connectWS(t, e.srv, e.tok)
	subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "1", LastEventID: v1.ETag})
	expectRec(t, c, "subscribed", "")
	v2 := e.lose(t, "1", 2)
	e.tap.node.Gap(Ref{Tenant: DefaultTenant, Collection: "posts", ID: "1"})
	expectVersion(t, c, EventChanged, v2)
	v3 := e.publish(t, "1", 3)
	expectVersion(t, c, EventChanged, v3)
}

// TestOrderSnapshotResumesByPrevETag: a subscriber whose last frame is a
// snapshot (a version the buffer holds no event of: a quiet record, or one
// resynced after its events were lost) resumes exactly from the next
// version when that event names the snapshot's ETag as its PrevETag (the
// GORM hook's do): no resync. Without PrevETag it gets resync, as before.
func TestOrderSnapshotResumesByPrevETag(t *testing.T) {
	for _, withPrev := range []bool{true, false} {
		t.Run(fmt.Sprintf("prev=%v", withPrev), func(t *testing.T) {
			e := newOrderEnv(t)
			e.put("1", 3)
			s := openStream(t, nil, recordURL(e.srv, "1"), e.tok, nil)
			snap := e.event(t, "1", 3)
			expectFrames(t, s, frame{EventSnapshot, snap.ETag, ""})
			s.close()
			var evs []*Event
			for v := uint64(4); v <= 5; v++ {
				e.put("1", v)
				ev := e.event(t, "1", v)
				if withPrev {
					ev.PrevETag = e.event(t, "1", v-1).ETag
				}
				if err := e.rt.publish(context.Background(), ev, AppendInOrder); err != nil {
					t.Fatal(err)
				}
				evs = append(evs, ev)
			}
			again := openStream(t, nil, recordURL(e.srv, "1"), e.tok, http.Header{"Last-Event-ID": {snap.ETag}})
			if withPrev {
				expectFrames(t, again, frame{EventChanged, evs[0].ETag, ""}, frame{EventChanged, evs[1].ETag, ""})
				return
			}
			expectFrames(t, again, frame{EventResync, "", ""}, frame{EventSnapshot, evs[1].ETag, ""})
		})
	}
}

// TestPublishPrevETagValidated: PrevETag needs a version and a valid ETag.
func TestPublishPrevETagValidated(t *testing.T) {
	rt, _ := newTestServer(t, Config{})
	for _, pub := range []Publication{
		{Collection: "posts", ID: "1", Event: EventChanged, Data: json.RawMessage(`{}`), PrevETag: `"a"`},
		{Collection: "posts", ID: "1", Event: EventChanged, Data: json.RawMessage(`{}`), PrevETag: "a\nb", Version: 2},
	} {
		if _, err := rt.Publish(context.Background(), pub); !errors.Is(err, ErrBadRequest) {
			t.Fatalf("Publish(%+v) = %v, want ErrBadRequest", pub, err)
		}
	}
}

// TestPublishRequireLast: with RequireLast, a version above 1 of a record
// whose last version the engine does not know is not published
// (ErrLastUnknown, not an outage); the same publication without it is.
// RequireLast needs a version and excludes Gap.
func TestPublishRequireLast(t *testing.T) {
	rt, _ := newTestServer(t, Config{})
	ctx := context.Background()
	pub := func(id string, v uint64, requireLast bool) Publication {
		return Publication{Collection: "posts", ID: id, Event: EventChanged,
			Data: json.RawMessage(fmt.Sprintf(`{"id":%q,"v":%d}`, id, v)), Version: v, RequireLast: requireLast}
	}
	for _, tc := range []struct {
		name string
		pub  Publication
		want error // nil: published
	}{
		{"unknown last", pub("1", 3, true), ErrLastUnknown},
		{"unknown last, without RequireLast", pub("1", 3, false), nil},
		{"known last", pub("1", 4, true), nil},
		{"known last, ahead", pub("1", 6, true), ErrOutOfOrder},
		{"version 1", pub("2", 1, true), nil},
		{"no version", pub("3", 0, true), ErrBadRequest},
		{"with gap", func() Publication { p := pub("3", 2, true); p.Gap = true; return p }(), ErrBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := rt.Stats().Published.Events
			_, err := rt.Publish(ctx, tc.pub)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Publish = %v, want %v", err, tc.want)
			}
			if errors.Is(err, ErrUnavailable) {
				t.Fatalf("Publish = %v: not an outage", err)
			}
			want := uint64(0)
			if err == nil {
				want = 1
			}
			if published := rt.Stats().Published.Events - before; published != want {
				t.Fatalf("%d events published, want %d", published, want)
			}
		})
	}
}

// TestMemoryBufferRefusesNegativeBounds: a negative bound is refused, as
// Config refuses its own.
func TestMemoryBufferRefusesNegativeBounds(t *testing.T) {
	for _, cfg := range []MemoryBufferConfig{{Size: -1}, {MaxAge: -1}, {MaxBytes: -1}} {
		func() {
			defer func() {
				err, _ := recover().(error)
				if !errors.Is(err, ErrInvalidConfig) {
					t.Errorf("NewMemoryBuffer(%+v): panic %v, want ErrInvalidConfig", cfg, err)
				}
			}()
			NewMemoryBuffer(cfg)
		}()
	}
}

// pendingAfter is a PendingEvents that knows one pending version: next
// follows the ETag after.
type pendingAfter struct {
	after string
	next  uint64
}

func (p pendingAfter) NextPending(_ context.Context, _ Ref, etag string) (uint64, bool, error) {
	return p.next, etag == p.after, nil
}

// TestOrderReconnectWaitsForPending: a client reconnecting from an ETag the
// buffer does not hold (the engine restarted empty) while the versions
// after it wait in an outbox (a PendingEvents says so) waits for them as
// events, on an SSE stream as on a WebSocket: no resync. When they do not
// come within ResumeWait it gets resync and the stored record.
func TestOrderReconnectWaitsForPending(t *testing.T) {
	for _, tc := range []struct {
		name    string
		wait    time.Duration
		publish bool
	}{{"published", time.Minute, true}, {"never published", 50 * time.Millisecond, false}} {
		for _, ws := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/ws=%v", tc.name, ws), func(t *testing.T) {
				e := newOrderEnvWaiting(t, tc.wait)
				v1 := e.event(t, "1", 1) // the client's last version: not buffered
				e.put("1", 3)            // 2 and 3 committed, in the outbox
				e.rt.AddPendingEvents(pendingAfter{after: v1.ETag, next: 2})
				var next func(typ string) (etag, data string)
				if ws {
					c, _ := connectWS(t, e.srv, e.tok)
					subscribeRecords(t, c, "subscribe", wsRecordReq{Collection: "posts", ID: "1", LastEventID: v1.ETag})
					expectRec(t, c, "subscribed", "")
					next = func(typ string) (string, string) {
						f := expectRec(t, c, typ, "1")
						return f.ETag, string(f.Data)
					}
				} else {
					s := openStream(t, nil, recordURL(e.srv, "1"), e.tok, http.Header{"Last-Event-ID": {v1.ETag}})
					next = func(typ string) (string, string) {
						f := readFrames(t, s.fr, 1)[0]
						if f.Event != typ {
							t.Fatalf("got %v, want %s", framesOf([]sseFrame{f}), typ)
						}
						return f.ID, f.Data
					}
				}
				waitFor(t, "the subscription", func() bool { return e.rt.Subscribers() == 1 })
				if !tc.publish {
					next(EventResync)
					if _, data := next(EventSnapshot); data != `{"id":"1","v":3}` {
						t.Fatalf("after the resync: %s, want the stored version 3", data)
					}
					v4 := e.publish(t, "1", 4)
					if etag, _ := next(EventChanged); etag != v4.ETag {
						t.Fatalf("got %s, want version 4", etag)
					}
					return
				}
				for v := uint64(2); v <= 3; v++ { // the outbox publishes them
					ev := e.outbox(t, "1", v)
					if etag, _ := next(EventChanged); etag != ev.ETag {
						t.Fatalf("got %s, want version %d", etag, v)
					}
				}
			})
		}
	}
}
