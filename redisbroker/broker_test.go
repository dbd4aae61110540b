package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/redis/go-redis/v9"
)

func TestNewConfig(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never contacted
	defer c.Close()
	b, err := New(c, Config{})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Prefix: "rt:", Size: 100, MaxAge: time.Hour, StreamTTL: 24 * time.Hour,
		ProbeInterval: 2 * time.Second, ProbeTimeout: 3 * time.Second}
	got := b.cfg
	got.Logger = nil
	if got != want {
		t.Errorf("defaults %+v, want %+v", got, want)
	}
	for name, cfg := range map[string]Config{
		"brace in prefix":      {Prefix: "a{b"},
		"negative size":        {Size: -1},
		"huge size":            {Size: 1 << 30},
		"negative MaxAge":      {MaxAge: -time.Second},
		"TTL under MaxAge":     {MaxAge: 2 * time.Hour, StreamTTL: time.Hour},
		"negative probe":       {ProbeInterval: -1},
		"negative timeout":     {ProbeTimeout: -1},
		"sub-second StreamTTL": {StreamTTL: time.Millisecond},
	} {
		if _, err := New(c, cfg); !errors.Is(err, ErrInvalidConfig) || !errors.Is(err, realtime.ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		}
	}
	if _, err := New(nil, Config{}); !errors.Is(err, realtime.ErrInvalidConfig) {
		t.Errorf("nil client: %v", err)
	}
}

func TestPositionRoundTrip(t *testing.T) {
	for _, id := range []string{"1-0", "1700000000000-0", "1700000000000-1048575", "17592186044415-5"} {
		p, err := position(id)
		if err != nil || entryID(p) != id {
			t.Errorf("%s → %d (%v) → %s", id, p, err, entryID(p))
		}
	}
	for _, id := range []string{"x", "1-1048576", "1-", "-1", "17592186044416-0"} {
		if _, err := position(id); err == nil {
			t.Errorf("%s accepted", id)
		}
	}
	a, _ := position("5-1048575")
	b, _ := position("6-0")
	if a >= b {
		t.Error("positions do not follow ids")
	}
}

// TestPositionsNeverReused: positions increase across Invalidate, even
// when the stream starts again within the same millisecond.
func TestPositionsNeverReused(t *testing.T) {
	b := bufferOn(t, Config{Size: 3})
	key := recKey("1")
	var last uint64
	for round := range 20 {
		_, seqs := appendAll(t, b, key, fmt.Sprint("r", round, "-"), 5, time.Now)
		if seqs[0] <= last {
			t.Fatalf("round %d: position %d not above %d", round, seqs[0], last)
		}
		last = seqs[len(seqs)-1]
		if err := b.Invalidate(bctx, key.Tenant, key.Collection); err != nil {
			t.Fatal(err)
		}
		if lk := since(t, b, key, fmt.Sprintf(`"r%d-004"`, round)); lk.Status != realtime.LookupUnknown {
			t.Fatalf("round %d: %v after Invalidate", round, lk.Status)
		}
	}
}

// TestAppendDedupe: the script run twice with one dedupe id (a retry after
// a broken connection) stores and delivers the event once.
func TestAppendDedupe(t *testing.T) {
	c := newClient(t)
	prefix := testPrefix(t, c)
	a := newBroker(t, c, Config{Prefix: prefix})
	ra := startBroker(t, a)
	key := recKey("1")
	if err := a.Watch(bctx, key); err != nil {
		t.Fatal(err)
	}
	ev := bufEvent(key, "once", time.Now())
	s1, _, err := a.appendOnce(bctx, []realtime.StreamKey{key}, ev, "same-id", false, realtime.AppendInOrder)
	if err != nil {
		t.Fatal(err)
	}
	s2, _, err := a.appendOnce(bctx, []realtime.StreamKey{key}, ev, "same-id", false, realtime.AppendInOrder)
	if err != nil {
		t.Fatal(err)
	}
	if s1[0] != s2[0] {
		t.Fatalf("retry got position %d, first %d", s2[0], s1[0])
	}
	next := bufEvent(key, "next", time.Now())
	s3, err := a.Append(bctx, key, next)
	if err != nil {
		t.Fatal(err)
	}
	got := ra.waitDeliveries(t, key, 2)
	wantEntries(t, got, []*realtime.Event{ev, next}, []uint64{s1[0], s3})
	if n, _ := c.XLen(bctx, a.keys.stream(key)).Result(); n != 2 {
		t.Fatalf("%d entries stored, want 2", n)
	}
	lk := since(t, a, key, ev.ETag)
	wantFound(t, lk, s1[0], []*realtime.Event{next}, []uint64{s3})
}

// TestAppendRecord: both streams get the event, in the same order for
// concurrent appends of one record.
func TestAppendRecord(t *testing.T) {
	c := newClient(t)
	prefix := testPrefix(t, c)
	a := newBroker(t, c, Config{Prefix: prefix})
	ra := startBroker(t, a)
	key := recKey("7")
	coll := collOf(key)
	for _, k := range []realtime.StreamKey{key, coll} {
		if err := a.Watch(bctx, k); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	const n = 40
	for i := range n {
		wg.Go(func() {
			ev := bufEvent(key, fmt.Sprint("v", i), time.Now())
			if _, err := a.AppendRecord(bctx, ev, realtime.AppendInOrder); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	rec := ra.waitDeliveries(t, key, n)
	col := ra.waitDeliveries(t, coll, n)
	for i := range n {
		if rec[i].Event.ETag != col[i].Event.ETag {
			t.Fatalf("event %d: record stream %s, collection stream %s", i, rec[i].Event.ETag, col[i].Event.ETag)
		}
	}
}

// TestTwoNodes: two brokers append concurrently to one stream; both nodes
// see the same sequence; a node watching A never gets B's events.
func TestTwoNodes(t *testing.T) {
	c := newClient(t)
	prefix := testPrefix(t, c)
	a := newBroker(t, c, Config{Prefix: prefix})
	b := newBroker(t, newClient(t), Config{Prefix: prefix})
	ra, rb := startBroker(t, a), startBroker(t, b)
	keyA, keyB := recKey("A"), recKey("B")
	for _, br := range []*Broker{a, b} {
		if err := br.Watch(bctx, keyA); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Watch(bctx, keyB); err != nil {
		t.Fatal(err)
	}
	const n = 100
	var wg sync.WaitGroup
	for i, br := range []*Broker{a, b} {
		wg.Go(func() {
			for j := range n {
				if _, err := br.Append(bctx, keyA, bufEvent(keyA, fmt.Sprintf("n%d-%03d", i, j), time.Now())); err != nil {
					t.Error(err)
					return
				}
				if j%10 == 0 {
					if _, err := br.Append(bctx, keyB, bufEvent(keyB, fmt.Sprintf("b%d-%03d", i, j), time.Now())); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	da := ra.waitDeliveries(t, keyA, 2*n)
	db := rb.waitDeliveries(t, keyA, 2*n)
	for i := range da {
		if da[i].Seq != db[i].Seq || da[i].Event.ETag != db[i].Event.ETag {
			t.Fatalf("delivery %d: node a %d %s, node b %d %s", i, da[i].Seq, da[i].Event.ETag, db[i].Seq, db[i].Event.ETag)
		}
	}
	rb.waitDeliveries(t, keyB, 20)
	// A later event of A, and still nothing of B on node a.
	last, err := b.Append(bctx, keyA, bufEvent(keyA, "last", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the last event", func() bool { return ra.lastSeq(keyA) == last })
	if got := ra.of(keyB); len(got) != 0 {
		t.Fatalf("node a got %d events of a stream it does not watch", len(got))
	}
	// Unwatch: later events are not delivered; a count of two needs two.
	if err := b.Watch(bctx, keyB); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := b.Unwatch(bctx, keyB); err != nil {
			t.Fatal(err)
		}
	}
	before := len(rb.of(keyB))
	if _, err := a.Append(bctx, keyB, bufEvent(keyB, "unseen", time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := b.Watch(bctx, keyB); err != nil {
		t.Fatal(err)
	}
	seen, err := a.Append(bctx, keyB, bufEvent(keyB, "seen", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	got := rb.waitDeliveries(t, keyB, before+1)
	if len(got) != before+1 || got[before].Seq != seen {
		t.Fatalf("after unwatch and watch: %d deliveries, last at %d, want %d then %d", len(got), got[len(got)-1].Seq, before+1, seen)
	}
	for _, r := range []recorder{ra, rb} {
		if n := r.gapsOf(keyA) + r.gapsOf(keyB); n != 0 {
			t.Errorf("%d gaps with a healthy Redis", n)
		}
		if h := r.healthReports(); len(h) != 0 {
			t.Errorf("health reports %v with a healthy Redis", h)
		}
	}
}

func TestTopics(t *testing.T) {
	c := newClient(t)
	prefix := testPrefix(t, c)
	a := newBroker(t, c, Config{Prefix: prefix})
	b := newBroker(t, c, Config{Prefix: prefix})
	ra, rb := startBroker(t, a), startBroker(t, b)
	publish := func(br *Broker, topic, msg string, want int) {
		t.Helper()
		n, err := br.Publish(bctx, topic, []byte(msg))
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Fatalf("Publish %q reached %d nodes, want %d", msg, n, want)
		}
	}
	publish(a, "x", "nobody", 0)
	for _, br := range []*Broker{a, b} {
		if err := br.Listen(bctx, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Listen(bctx, "x"); err != nil { // counted: two
		t.Fatal(err)
	}
	publish(a, "x", "m1", 2)
	publish(b, "x", "m2", 2)
	if err := a.Unlisten(bctx, "x"); err != nil {
		t.Fatal(err)
	}
	publish(a, "x", "m3", 2)
	// A message received while Unlisten runs may be dropped: m3 first.
	eventually(t, "3 messages", func() bool { return len(rb.messagesOf("x")) == 3 })
	if err := b.Unlisten(bctx, "x"); err != nil {
		t.Fatal(err)
	}
	publish(a, "x", "m4", 1)
	eventually(t, "4 messages", func() bool { return len(ra.messagesOf("x")) == 4 })
	if got := ra.messagesOf("x"); !slices.Equal(got, []string{"m1", "m2", "m3", "m4"}) {
		t.Errorf("node a: %q", got)
	}
	// b stopped listening before m4: a later message on another topic it
	// listens to comes, m4 does not.
	if err := b.Listen(bctx, "y"); err != nil {
		t.Fatal(err)
	}
	publish(a, "y", "later", 1)
	eventually(t, "later", func() bool { return len(rb.messagesOf("y")) == 1 })
	if got := rb.messagesOf("x"); !slices.Equal(got, []string{"m1", "m2", "m3"}) {
		t.Errorf("node b: %q", got)
	}
}

func TestPresence(t *testing.T) {
	c := newClient(t)
	prefix := testPrefix(t, c)
	a := newBroker(t, c, Config{Prefix: prefix})
	b := newBroker(t, newClient(t), Config{Prefix: prefix})
	ctx := bctx
	if users, n, err := a.Presence(ctx, "t1"); err != nil || len(users) != 0 || n != 0 || users == nil {
		t.Fatalf("empty: %q %d %v", users, n, err)
	}
	long := time.Minute
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.AddPresence(ctx, long,
		realtime.PresenceConn{Tenant: "t1", User: "bob", ConnID: "c1"},
		realtime.PresenceConn{Tenant: "t1", User: "bob", ConnID: "c2"},
		realtime.PresenceConn{Tenant: "t2", User: "eve", ConnID: "c3"}))
	must(b.AddPresence(ctx, long,
		realtime.PresenceConn{Tenant: "t1", User: "al:{ice}", ConnID: "c:4"},
		realtime.PresenceConn{Tenant: "t1", User: "bob", ConnID: "c5"}))
	users, n, err := b.Presence(ctx, "t1")
	must(err)
	if !slices.Equal(users, []string{"al:{ice}", "bob"}) || n != 4 {
		t.Fatalf("t1: %q %d", users, n)
	}
	if n, err := a.UserPresence(ctx, "t1", "bob"); err != nil || n != 3 {
		t.Fatalf("bob: %d %v", n, err)
	}
	must(a.RemovePresence(ctx, realtime.PresenceConn{Tenant: "t1", User: "bob", ConnID: "c5"}))
	if n, err := b.UserPresence(ctx, "t1", "bob"); err != nil || n != 2 {
		t.Fatalf("bob after remove: %d %v", n, err)
	}
	// Expiry: a short ttl, not refreshed.
	must(b.AddPresence(ctx, 200*time.Millisecond, realtime.PresenceConn{Tenant: "t2", User: "zed", ConnID: "c6"}))
	if users, n, _ := a.Presence(ctx, "t2"); !slices.Equal(users, []string{"eve", "zed"}) || n != 2 {
		t.Fatalf("t2: %q %d", users, n)
	}
	eventually(t, "zed's connection to expire", func() bool {
		users, n, err := a.Presence(ctx, "t2")
		return err == nil && slices.Equal(users, []string{"eve"}) && n == 1
	})
	if n, err := a.UserPresence(ctx, "t2", "zed"); err != nil || n != 0 {
		t.Fatalf("zed after expiry: %d %v", n, err)
	}
	// A refresh keeps a connection.
	must(a.AddPresence(ctx, long, realtime.PresenceConn{Tenant: "t2", User: "zed", ConnID: "c6"}))
	if n, _ := b.UserPresence(ctx, "t2", "zed"); n != 1 {
		t.Fatalf("zed refreshed: %d", n)
	}
}

// TestStopEndsCalls: after Stop no call reaches the node and Watch fails.
func TestStopEndsCalls(t *testing.T) {
	c := newClient(t)
	prefix := testPrefix(t, c)
	a := newBroker(t, c, Config{Prefix: prefix})
	r := newRecorder()
	if err := a.Start(r); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(r); err == nil {
		t.Fatal("started twice")
	}
	key := recKey("s")
	if err := a.Watch(bctx, key); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bctx, waitTimeout)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Watch(bctx, key); !errors.Is(err, realtime.ErrClosed) {
		t.Fatalf("Watch after Stop: %v", err)
	}
	if _, err := a.Append(bctx, key, bufEvent(key, "after", time.Now())); err != nil {
		t.Fatal(err)
	}
	calls := len(r.of(key))
	time.Sleep(100 * time.Millisecond) // a call would be a bug; none is awaited
	if len(r.of(key)) != calls || calls != 0 {
		t.Fatalf("%d deliveries after Stop", len(r.of(key)))
	}
}

// TestAppendRecordIfLastKnown: with realtime.AppendIfLastKnown, a version
// above 1 of a record without a version key (never appended, or the key
// lost: Redis restarted empty, expired) is refused with ErrLastUnknown
// (status 4): nothing is stored or published and the dedupe key is not
// set, so the same call may be made again. With the key there, or for
// version 1, the mode appends as usual.
func TestAppendRecordIfLastKnown(t *testing.T) {
	c := newClient(t)
	a := newBroker(t, c, Config{Prefix: testPrefix(t, c)})
	ra := startBroker(t, a)
	rec := recKey("unknown")
	streams := []realtime.StreamKey{rec, collOf(rec)}
	for _, k := range streams {
		if err := a.Watch(bctx, k); err != nil {
			t.Fatal(err)
		}
	}
	vk := a.keys.version(rec)
	event := func(v uint64) *realtime.Event {
		ev := bufEvent(rec, fmt.Sprint("v", v), time.Now())
		ev.Version = v
		return ev
	}
	wantUnknown := func(what string, dup bool, err error) {
		t.Helper()
		if !errors.Is(err, ErrLastUnknown) || !errors.Is(err, realtime.ErrLastUnknown) || isUnavailable(err) || errors.Is(err, realtime.ErrOutOfOrder) || dup {
			t.Fatalf("%s: dup=%v, %v; want ErrLastUnknown", what, dup, err)
		}
	}

	// Never appended: refused, nothing written, and the dedupe id is free.
	v3 := event(3)
	_, dup, err := a.appendOnce(bctx, streams, v3, "unknown-id", true, realtime.AppendIfLastKnown)
	wantUnknown("version 3 of a record never appended", dup, err)
	for _, k := range []string{a.keys.stream(rec), a.keys.stream(collOf(rec)), vk, a.keys.dedupe(rec, "unknown-id")} {
		if n, err := c.Exists(bctx, k).Result(); err != nil || n != 0 {
			t.Fatalf("%s after a refusal: exists=%d %v", k, n, err)
		}
	}
	v1, v2 := event(1), event(2)
	if dup, err := a.AppendRecord(bctx, v1, realtime.AppendIfLastKnown); err != nil || dup {
		t.Fatalf("version 1: dup=%v %v; want appended", dup, err)
	}
	if dup, err := a.AppendRecord(bctx, v2, realtime.AppendIfLastKnown); err != nil || dup {
		t.Fatalf("version 2 after 1: dup=%v %v; want appended", dup, err)
	}

	// The version key lost (as by a Redis restarted empty): unknown again,
	// until a version is appended without the mode; the refused call's
	// dedupe id appends then (no dedupe key was set).
	if err := c.Del(bctx, vk).Err(); err != nil {
		t.Fatal(err)
	}
	dup, err = a.AppendRecord(bctx, v3, realtime.AppendIfLastKnown)
	wantUnknown("version 3 once the version key is lost", dup, err)
	if _, dup, err := a.appendOnce(bctx, streams, v3, "unknown-id", true, realtime.AppendInOrder); err != nil || dup {
		t.Fatalf("version 3 in order, the refused call's dedupe id: dup=%v %v; want appended", dup, err)
	}
	v4 := event(4)
	if dup, err := a.AppendRecord(bctx, v4, realtime.AppendIfLastKnown); err != nil || dup {
		t.Fatalf("version 4 after 3: dup=%v %v; want appended", dup, err)
	}
	if dup, err := a.AppendRecord(bctx, event(3), realtime.AppendIfLastKnown); err != nil || !dup {
		t.Fatalf("version 3 again: dup=%v %v; want a duplicate", dup, err)
	}
	if got, err := c.Get(bctx, vk).Result(); err != nil || got != "4" {
		t.Fatalf("version key %q %v, want 4", got, err)
	}
	want := []*realtime.Event{v1, v2, v3, v4}
	for _, k := range streams {
		got := ra.waitDeliveries(t, k, len(want))
		if len(got) != len(want) {
			t.Fatalf("%v: %d deliveries, want %d", k, len(got), len(want))
		}
		for i, e := range got {
			if e.Event.ETag != want[i].ETag || e.Event.Version != want[i].Version {
				t.Fatalf("%v: delivery %d is %s@v%d, want %s@v%d", k, i, e.Event.ETag, e.Event.Version, want[i].ETag, want[i].Version)
			}
		}
	}
	if n, _ := c.XLen(bctx, a.keys.stream(rec)).Result(); n != int64(len(want)) {
		t.Fatalf("%d entries stored, want %d", n, len(want))
	}
}
