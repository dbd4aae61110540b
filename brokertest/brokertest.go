// Package brokertest is a conformance suite for implementations of
// realtime.Broker (and, when implemented, realtime.PresenceStore).
//
// An adapter's test calls Run with a factory of two nodes sharing one
// engine:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, func(t *testing.T, cfg realtime.MemoryBufferConfig) (a, b realtime.Broker) {
//			m := realtime.NewMemoryBroker(cfg)
//			return m.Node(), m.Node()
//		})
//	}
//
// The factory is called once per subtest, with that subtest's t: it must
// return two fresh nodes of one engine isolated from every other subtest
// (a new engine, or a new key prefix), not yet started. It honours
// cfg.Size, cfg.MaxAge and cfg.Now where it can; it may register cleanups
// on t (they run after the suite has stopped both nodes) and may call
// t.Skip.
//
// Only Since/AgedOut/* and Since/AgedOutHeadThenNext/* set cfg.Now (a
// settable clock, for the age bound cfg.MaxAge). A factory whose engine
// keeps its own time skips them by calling t.Skip when cfg.Now != nil, or
// by returning nodes that implement ClockSetter with SetsClock reporting
// false. Since/OverSize/* set cfg.Size (0, 5 and 1; 0 means the default of
// 100). The Presence subtests run only on nodes implementing
// realtime.PresenceStore; they use real time (TTLs of a fraction of a
// second, awaited), never cfg.Now.
//
// Versions/* check AppendRecord's version rule (realtime.Broker), in each
// realtime.AppendMode; they expect Invalidate to forget a record's last
// version, as MemoryBuffer does. Versions/Concurrent is randomized: a failure gives its seed, and
// BROKERTEST_SEED=<seed> (SeedEnv) runs it again with that seed.
//
// The suite never asserts timing: every wait ends when what is awaited
// happens, or fails after WaitTimeout. That something is not delivered is
// checked through the order of one stream (or topic): a later event of the
// same stream, appended once the node watches it again, is awaited, and
// the earlier one must not be among the deliveries.
package brokertest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
)

// ClockSetter is optionally implemented by a Broker (the first node the
// factory returns) to tell whether its engine honours
// MemoryBufferConfig.Now. Without it the clock is assumed honoured.
type ClockSetter interface {
	SetsClock() bool
}

// factory is Run's argument.
type factory = func(t *testing.T, cfg realtime.MemoryBufferConfig) (a, b realtime.Broker)

// Run runs the conformance suite against the nodes newNodes returns.
func Run(t *testing.T, newNodes func(t *testing.T, cfg realtime.MemoryBufferConfig) (a, b realtime.Broker)) {
	t.Run("Since", func(t *testing.T) { testSince(t, newNodes) })
	t.Run("Positions", func(t *testing.T) { testPositions(t, newNodes) })
	t.Run("Invalidate", func(t *testing.T) { testInvalidate(t, newNodes) })
	t.Run("Delivery", func(t *testing.T) { testDelivery(t, newNodes) })
	t.Run("AppendRecord", func(t *testing.T) { testAppendRecord(t, newNodes) })
	t.Run("Versions", func(t *testing.T) { testVersions(t, newNodes) })
	t.Run("Recent", func(t *testing.T) { testRecent(t, newNodes) })
	t.Run("Topics", func(t *testing.T) { testTopics(t, newNodes) })
	t.Run("Presence", func(t *testing.T) { testPresence(t, newNodes) })
	t.Run("Stop", func(t *testing.T) { testStop(t, newNodes) })
	t.Run("EventEncoding", testEventEncoding)
}

// nodes are two started nodes of one engine and their recorders.
type nodes struct {
	a, b   realtime.Broker
	ra, rb *Recorder
	stopA  func(t *testing.T) // idempotent
	stopB  func(t *testing.T)
}

// start makes two nodes with cfg, starts them with fresh Recorders and
// stops them when t ends, checking then that no Gap, failed Health or
// breach of the Node contract was seen.
func start(t *testing.T, newNodes factory, cfg realtime.MemoryBufferConfig) *nodes {
	t.Helper()
	a, b := newNodes(t, cfg)
	if a == nil || b == nil {
		t.Fatal("the factory returned a nil Broker")
	}
	if cfg.Now != nil {
		if cs, ok := a.(ClockSetter); ok && !cs.SetsClock() {
			t.Skip("the broker cannot honour MemoryBufferConfig.Now")
		}
	}
	n := &nodes{a: a, b: b, ra: NewRecorder(), rb: NewRecorder()}
	n.stopA = stopper(a, "a")
	n.stopB = stopper(b, "b")
	if err := a.Start(n.ra); err != nil {
		t.Fatalf("a.Start: %v", err)
	}
	t.Cleanup(func() {
		n.stopA(t)
		checkRecorder(t, "a", n.ra)
	})
	if err := b.Start(n.rb); err != nil {
		t.Fatalf("b.Start: %v", err)
	}
	t.Cleanup(func() {
		n.stopB(t)
		checkRecorder(t, "b", n.rb)
	})
	return n
}

func stopper(br realtime.Broker, name string) func(t *testing.T) {
	var once sync.Once
	return func(t *testing.T) {
		t.Helper()
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
			defer cancel()
			if err := br.Stop(ctx); err != nil {
				t.Errorf("%s.Stop: %v", name, err)
			}
		})
	}
}

func checkRecorder(t *testing.T, name string, r *Recorder) {
	t.Helper()
	for _, p := range r.Problems() {
		t.Errorf("node %s: %s", name, p)
	}
	for _, k := range r.Gaps() {
		t.Errorf("node %s: Gap(%v) with a healthy engine", name, k)
	}
	for _, err := range r.HealthReports() {
		if err != nil {
			t.Errorf("node %s: Health(%v) with a healthy engine", name, err)
		}
	}
}

// Keys of the tests: a record stream and its collection's stream.
func recKey(id string) realtime.StreamKey {
	return realtime.StreamKey{Tenant: "t1", Collection: "posts", ID: id}
}

func collKey(k realtime.StreamKey) realtime.StreamKey {
	return realtime.StreamKey{Tenant: k.Tenant, Collection: k.Collection}
}

func kind(k realtime.StreamKey) string {
	if k.ID == "" {
		return "collection"
	}
	return "record"
}

// bothKinds is a record key and its collection's key.
var bothKinds = []realtime.StreamKey{recKey("42"), collKey(recKey("42"))}

// tricky is in every test event's data: a broker that re-encodes events
// must keep the bytes (HTML characters, non-ASCII, U+2028).
const tricky = `<&> é 🚀 ` + "\u2028"

// event returns a changed event on key's stream with ETag "tag".
func event(key realtime.StreamKey, tag string, at time.Time) *realtime.Event {
	ref := key
	if ref.ID == "" { // an event of a collection's stream is about one of its records
		ref.ID = "r-" + tag
	}
	return &realtime.Event{Type: realtime.EventChanged, Ref: ref, ETag: `"` + tag + `"`,
		Data: json.RawMessage(`{"v":"` + tag + `","s":"` + tricky + `"}`), Time: at}
}

// variedEvent is event with the type cycling through snapshot, changed and
// deleted (with a Prior).
func variedEvent(key realtime.StreamKey, tag string, i int) *realtime.Event {
	ev := event(key, tag, time.Now())
	switch i % 3 {
	case 0:
		ev.Type = realtime.EventSnapshot
	case 2:
		ev.Type = realtime.EventDeleted
		ev.Prior = json.RawMessage(`{"v":"prior-` + tag + `","owner":"u1"}`)
		ev.Data = json.RawMessage(`{"id":"` + ev.Ref.ID + `"}`)
	}
	return ev
}

// appendOne appends ev to key through br.
func appendOne(t *testing.T, br realtime.Broker, key realtime.StreamKey, ev *realtime.Event) uint64 {
	t.Helper()
	seq, err := br.Append(t.Context(), key, ev)
	if err != nil {
		t.Fatalf("Append %v %s: %v", key, ev.ETag, err)
	}
	return seq
}

// appendAll appends events tagged prefix000… to key, through the brokers
// in turn, and returns them with their positions, checking that they
// strictly increase.
func appendAll(t *testing.T, brokers []realtime.Broker, key realtime.StreamKey, prefix string, n int, at func() time.Time) ([]*realtime.Event, []uint64) {
	t.Helper()
	evs := make([]*realtime.Event, n)
	seqs := make([]uint64, n)
	for i := range n {
		evs[i] = event(key, fmt.Sprintf("%s%03d", prefix, i), at())
		seqs[i] = appendOne(t, brokers[i%len(brokers)], key, evs[i])
		if i > 0 && seqs[i] <= seqs[i-1] {
			t.Fatalf("%v: position %d after %d", key, seqs[i], seqs[i-1])
		}
	}
	return evs, seqs
}

func since(t *testing.T, br realtime.Broker, key realtime.StreamKey, lastID string) realtime.Lookup {
	t.Helper()
	lk, err := br.Since(t.Context(), key, lastID)
	if err != nil {
		t.Fatalf("Since %v %q: %v", key, lastID, err)
	}
	return lk
}

// diffEvent describes how got differs from want ("" when they are the
// same event: same frames, bytes for bytes, same Prior, Ref, Version and
// Time).
func diffEvent(got, want *realtime.Event) string {
	switch {
	case got == nil:
		return "nil event"
	case string(got.SSEFrame()) != string(want.SSEFrame()):
		return fmt.Sprintf("SSE frame %q, want %q", got.SSEFrame(), want.SSEFrame())
	case string(got.WSFrame()) != string(want.WSFrame()):
		return fmt.Sprintf("WebSocket frame %q, want %q", got.WSFrame(), want.WSFrame())
	case string(got.Prior) != string(want.Prior):
		return fmt.Sprintf("Prior %q, want %q", got.Prior, want.Prior)
	case got.Type != want.Type || got.Ref != want.Ref || got.ETag != want.ETag:
		return fmt.Sprintf("event %s %+v %s, want %s %+v %s", got.Type, got.Ref, got.ETag, want.Type, want.Ref, want.ETag)
	case got.Version != want.Version:
		return fmt.Sprintf("Version %d, want %d", got.Version, want.Version)
	case got.PrevETag != want.PrevETag:
		return fmt.Sprintf("PrevETag %q, want %q", got.PrevETag, want.PrevETag)
	case !got.Time.Equal(want.Time):
		return fmt.Sprintf("Time %v, want %v", got.Time, want.Time)
	}
	return ""
}

// wantEntries checks that got are exactly want at wantSeqs.
func wantEntries(t *testing.T, what string, got []realtime.Entry, want []*realtime.Event, wantSeqs []uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events, want %d", what, len(got), len(want))
	}
	for i, e := range got {
		if e.Seq != wantSeqs[i] {
			t.Fatalf("%s: event %d at position %d, want %d", what, i, e.Seq, wantSeqs[i])
		}
		if d := diffEvent(e.Event, want[i]); d != "" {
			t.Fatalf("%s: event %d (%s): %s", what, i, want[i].ETag, d)
		}
	}
}

// wantFound checks that lk found the resume point at seq, followed by
// exactly want.
func wantFound(t *testing.T, lk realtime.Lookup, seq uint64, want []*realtime.Event, wantSeqs []uint64) {
	t.Helper()
	if lk.Status != realtime.LookupFound || lk.Seq != seq {
		t.Fatalf("lookup %v at %d, want found at %d", lk.Status, lk.Seq, seq)
	}
	wantEntries(t, "events after the resume point", lk.Events, want, wantSeqs)
}

func wantUpToDate(t *testing.T, lk realtime.Lookup, seq uint64) {
	t.Helper()
	if lk.Status != realtime.LookupUpToDate || lk.Seq != seq {
		t.Fatalf("lookup %v at %d, want up-to-date at %d", lk.Status, lk.Seq, seq)
	}
	if len(lk.Events) != 0 {
		t.Fatalf("up-to-date lookup with %d events", len(lk.Events))
	}
}

func wantStatus(t *testing.T, lk realtime.Lookup, st realtime.LookupStatus) {
	t.Helper()
	if lk.Status != st {
		t.Fatalf("lookup %v, want %v", lk.Status, st)
	}
}

// fakeClock is a settable MemoryBufferConfig.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// watch makes br watch key (Stop, when t ends, ends it).
func watch(t *testing.T, br realtime.Broker, key realtime.StreamKey) {
	t.Helper()
	if err := br.Watch(t.Context(), key); err != nil {
		t.Fatalf("Watch %v: %v", key, err)
	}
}

func unwatch(t *testing.T, br realtime.Broker, key realtime.StreamKey) {
	t.Helper()
	if err := br.Unwatch(t.Context(), key); err != nil {
		t.Fatalf("Unwatch %v: %v", key, err)
	}
}

func listen(t *testing.T, br realtime.Broker, topic string) {
	t.Helper()
	if err := br.Listen(t.Context(), topic); err != nil {
		t.Fatalf("Listen %q: %v", topic, err)
	}
}

func unlisten(t *testing.T, br realtime.Broker, topic string) {
	t.Helper()
	if err := br.Unlisten(t.Context(), topic); err != nil {
		t.Fatalf("Unlisten %q: %v", topic, err)
	}
}

func publish(t *testing.T, br realtime.Broker, topic, msg string, wantNodes int) {
	t.Helper()
	got, err := br.Publish(t.Context(), topic, []byte(msg))
	if err != nil {
		t.Fatalf("Publish %q %q: %v", topic, msg, err)
	}
	if got != wantNodes {
		t.Fatalf("Publish %q %q reached %d nodes, want %d", topic, msg, got, wantNodes)
	}
}
