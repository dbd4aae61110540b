package redisbroker

// Stream epochs: a node tells a stream created again (Redis restarted
// empty or flushed, its keys expired) from the one it watched, and takes
// neither a reconnection nor Invalidate for one.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/redis/go-redis/v9"
)

// callsOf describes key's Deliver and Gap calls to r, in call order:
// [deliver "<etag>"@<position> gap …].
func callsOf(r recorder, key realtime.StreamKey) string {
	return fmt.Sprint(r.StreamCalls(key))
}

// delivered is how callsOf describes the delivery of ev at seq.
func delivered(ev *realtime.Event, seq uint64) string {
	return fmt.Sprintf("deliver %s@%d", ev.ETag, seq)
}

// wantCalls waits until r got as many calls about key as want has, then
// checks that they are want, in that order.
func wantCalls(t *testing.T, r recorder, key realtime.StreamKey, want ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d calls about %v", len(want), key), func() bool {
		return len(r.StreamCalls(key)) >= len(want)
	})
	if got, w := callsOf(r, key), fmt.Sprint(want); got != w {
		t.Fatalf("calls about %v: %s, want %s", key, got, w)
	}
}

// appendRetry appends ev to key through br, retrying while Redis is
// coming back (the client's connections broke with it).
func appendRetry(t *testing.T, br *Broker, key realtime.StreamKey, ev *realtime.Event) uint64 {
	t.Helper()
	var seq uint64
	eventually(t, "an append once Redis is back", func() bool {
		var err error
		seq, err = br.Append(bctx, key, ev)
		if err != nil && !isUnavailable(err) {
			t.Fatal(err)
		}
		return err == nil
	})
	return seq
}

// appendNow appends ev to key through br.
func appendNow(t *testing.T, br *Broker, key realtime.StreamKey, ev *realtime.Event) uint64 {
	t.Helper()
	seq, err := br.Append(bctx, key, ev)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func watchAll(t *testing.T, brokers []*Broker, keys ...realtime.StreamKey) {
	t.Helper()
	for _, br := range brokers {
		for _, k := range keys {
			if err := br.Watch(bctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// headOf returns the head of stream name ("<epoch> <last id>"; "" for
// none).
func headOf(t *testing.T, c *redis.Client, name string) string {
	t.Helper()
	v, err := c.Get(bctx, epochKey(name)).Result()
	if err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	return v
}

// epochOf returns the epoch of stream name ("" for none).
func epochOf(t *testing.T, c *redis.Client, name string) string {
	t.Helper()
	ep, _, _ := strings.Cut(headOf(t, c, name), " ")
	return ep
}

// seqs returns the positions of stream name's entries, newest first.
func seqs(t *testing.T, c *redis.Client, name string) []uint64 {
	t.Helper()
	msgs, err := c.XRevRange(bctx, name, "+", "-").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		if out[i], err = position(m.ID); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// epochConfig is the config of these tests' brokers. Their outages break
// connections (found at once); a probe that is lenient keeps a loaded
// machine from replacing links that work.
var epochConfig = Config{ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 5 * time.Second}

// TestEpochRestartEmptyWithoutLastID is the fault that made epochs
// necessary: a node watches a stream never appended to (its last id is
// empty) and loses its link; meanwhile an event is appended, Redis
// restarts empty, and an event starts the stream again (prev empty).
// Without epochs that entry looked like the continuation of nothing and
// the first event was missed silently: the node must report a Gap.
func TestEpochRestartEmptyWithoutLastID(t *testing.T) {
	srv := startRedisServer(t)
	p := newProxy(t, srv.addr())
	a, b := newBroker(t, shortClient(t, p.addr()), epochConfig), newBroker(t, srv.client(t), epochConfig)
	ra, rb := startBroker(t, a), startBroker(t, b)
	key := recKey("never")
	watchAll(t, []*Broker{a, b}, key)

	p.cut()
	ra.waitHealth(t, 0, false)
	appendNow(t, b, key, bufEvent(key, "missed", time.Now()))
	rb.waitDeliveries(t, key, 1)
	srv.restartEmpty()
	appendRetry(t, b, key, bufEvent(key, "restarted", time.Now())) // the stream's first entry again
	health := len(ra.healthReports())
	p.restore()
	ra.waitHealth(t, health, true)
	// The catch-up after the reconnection found another epoch: a Gap,
	// and the node goes on from the stream's end.
	wantCalls(t, ra, key, "gap")
	after := bufEvent(key, "after", time.Now())
	seq := appendRetry(t, b, key, after)
	wantCalls(t, ra, key, "gap", delivered(after, seq))
}

// TestEpochRestartEmptyWithLastID: Redis restarts empty under a node that
// had seen an event: a Gap once the link is back, then the new stream's
// events.
func TestEpochRestartEmptyWithLastID(t *testing.T) {
	srv := startRedisServer(t)
	a, b := newBroker(t, srv.client(t), epochConfig), newBroker(t, srv.client(t), epochConfig)
	ra := startBroker(t, a)
	startBroker(t, b)
	key := recKey("seen")
	watchAll(t, []*Broker{a, b}, key)
	first := bufEvent(key, "first", time.Now())
	seq1 := appendNow(t, b, key, first)
	wantCalls(t, ra, key, delivered(first, seq1))

	srv.restartEmpty()
	ra.waitHealth(t, 0, false)
	ra.waitHealth(t, 1, true)
	wantCalls(t, ra, key, delivered(first, seq1), "gap")
	next := bufEvent(key, "next", time.Now())
	seq2 := appendRetry(t, b, key, next)
	wantCalls(t, ra, key, delivered(first, seq1), "gap", delivered(next, seq2))
}

// TestEpochFlushedLive: the stream is created again while the node's link
// stays up (FLUSHALL): the first message of the new epoch brings a Gap,
// then is delivered.
func TestEpochFlushedLive(t *testing.T) {
	srv := startRedisServer(t)
	c := srv.client(t)
	a, b := newBroker(t, c, epochConfig), newBroker(t, srv.client(t), epochConfig)
	ra := startBroker(t, a)
	startBroker(t, b)
	key := recKey("flushed")
	watchAll(t, []*Broker{a}, key)
	first := bufEvent(key, "first", time.Now())
	seq1 := appendNow(t, b, key, first)
	wantCalls(t, ra, key, delivered(first, seq1))
	if err := c.FlushAll(bctx).Err(); err != nil {
		t.Fatal(err)
	}
	// A stream created again in the same millisecond would start at the
	// same position: the node would take it for one it has (a Gap, and
	// no delivery). Redis's clock moves on first.
	eventually(t, "Redis's clock past the first event", func() bool {
		now, err := c.Time(bctx).Result()
		return err == nil && uint64(now.UnixMilli()) > seq1>>seqBits
	})
	next := bufEvent(key, "next", time.Now())
	seq2 := appendNow(t, b, key, next)
	wantCalls(t, ra, key, delivered(first, seq1), "gap", delivered(next, seq2))
	if h := ra.healthReports(); len(h) != 0 {
		t.Fatalf("health reports %v: the link was never down", h)
	}
}

// TestEpochPositionsNeverGoBack: a stream created again below the
// positions the node was handed (Redis came back with a clock behind) is
// a Gap; its entries at or below them are not delivered (positions never
// go back), the later ones are.
func TestEpochPositionsNeverGoBack(t *testing.T) {
	srv := startRedisServer(t)
	c := srv.client(t)
	a, b := newBroker(t, c, epochConfig), newBroker(t, srv.client(t), epochConfig)
	ra := startBroker(t, a)
	startBroker(t, b)
	key := recKey("clock")
	watchAll(t, []*Broker{a}, key)
	first := bufEvent(key, "first", time.Now())
	seq1 := appendNow(t, b, key, first)
	wantCalls(t, ra, key, delivered(first, seq1))
	if err := c.FlushAll(bctx).Err(); err != nil {
		t.Fatal(err)
	}
	// The new stream's first entry, written as the append script would
	// with a clock 5 ms behind.
	name := a.keys.stream(key)
	back := entryID(seq1 - 5<<seqBits)
	data, err := realtime.MarshalEvent(bufEvent(key, "back", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.TxPipelined(bctx, func(p redis.Pipeliner) error {
		p.XAdd(bctx, &redis.XAddArgs{Stream: name, ID: back, Values: []any{"etag", `"back"`, "prev", "", "ev", data}})
		p.Set(bctx, epochKey(name), "behind "+back, time.Hour)
		p.Publish(bctx, name, "behind\n"+back+"\n\n"+string(data))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	next := bufEvent(key, "next", time.Now())
	seq2 := appendNow(t, b, key, next)
	wantCalls(t, ra, key, delivered(first, seq1), "gap", delivered(next, seq2))
}

// TestEpochHeadLost: a stream whose head (epoch and last id) is gone
// while its entries stay (evicted, or written by an older version of this
// package) gets a new epoch, a Gap for its watchers, and its entries'
// links from the stream itself.
func TestEpochHeadLost(t *testing.T) {
	c := newClient(t)
	cfg := epochConfig
	cfg.Prefix = testPrefix(t, c)
	a, b := newBroker(t, c, cfg), newBroker(t, newClient(t), cfg)
	ra := startBroker(t, a)
	startBroker(t, b)
	key := recKey("headless")
	watchAll(t, []*Broker{a}, key)
	first := bufEvent(key, "first", time.Now())
	seq1 := appendNow(t, b, key, first)
	wantCalls(t, ra, key, delivered(first, seq1))
	name := a.keys.stream(key)
	old := epochOf(t, c, name)
	if err := c.Del(bctx, epochKey(name)).Err(); err != nil {
		t.Fatal(err)
	}
	next := bufEvent(key, "next", time.Now())
	seq2 := appendNow(t, b, key, next)
	wantCalls(t, ra, key, delivered(first, seq1), "gap", delivered(next, seq2))
	if ep := epochOf(t, c, name); ep == "" || ep == old {
		t.Fatalf("epoch %q after the head was lost, %q before", ep, old)
	}
	msgs, err := c.XRevRangeN(bctx, name, "+", "-", 1).Result()
	if err != nil || len(msgs) != 1 || msgs[0].Values["prev"] != entryID(seq1) {
		t.Fatalf("newest entry %v (%v): want its prev %s", msgs, err, entryID(seq1))
	}
}

// TestEpochExpired: the stream's keys expire (StreamTTL without an
// append) under a watching node: the next event, of a new epoch, comes
// after a Gap.
func TestEpochExpired(t *testing.T) {
	c := newClient(t)
	cfg := epochConfig
	cfg.Prefix = testPrefix(t, c)
	cfg.StreamTTL, cfg.MaxAge = time.Second, time.Second
	a, b := newBroker(t, c, cfg), newBroker(t, newClient(t), cfg)
	ra := startBroker(t, a)
	startBroker(t, b)
	key := recKey("expiring")
	watchAll(t, []*Broker{a}, key)
	first := bufEvent(key, "first", time.Now())
	seq1 := appendNow(t, b, key, first)
	wantCalls(t, ra, key, delivered(first, seq1))
	name := a.keys.stream(key)
	eventually(t, "the stream's keys to expire", func() bool {
		n, err := c.Exists(bctx, name, epochKey(name)).Result()
		return err == nil && n == 0
	})
	next := bufEvent(key, "next", time.Now())
	seq2 := appendNow(t, b, key, next)
	wantCalls(t, ra, key, delivered(first, seq1), "gap", delivered(next, seq2))
}

// TestEpochReconnectNoGap: with Redis intact, a node whose connections
// were cut (through a proxy), or whose Pub/Sub connection Redis killed
// (CLIENT KILL), gets every event it missed, in order, and no Gap: on a
// stream never appended to before (its last id empty) as on one it had
// seen.
func TestEpochReconnectNoGap(t *testing.T) {
	srv := startRedisServer(t)
	dc := srv.client(t)
	p := newProxy(t, srv.addr())
	a, b := newBroker(t, shortClient(t, p.addr()), epochConfig), newBroker(t, dc, epochConfig)
	ra, rb := startBroker(t, a), startBroker(t, b)
	empty, seen := recKey("empty"), recKey("seen")
	watchAll(t, []*Broker{a, b}, empty, seen)
	first := bufEvent(seen, "first", time.Now())
	want := map[realtime.StreamKey][]string{seen: {delivered(first, appendNow(t, b, seen, first))}}
	wantCalls(t, ra, seen, want[seen]...)

	p.cut()
	ra.waitHealth(t, 0, false)
	for _, k := range []realtime.StreamKey{empty, seen} {
		for i := range 2 {
			ev := bufEvent(k, fmt.Sprint("cut", i), time.Now())
			want[k] = append(want[k], delivered(ev, appendNow(t, b, k, ev)))
		}
	}
	health := len(ra.healthReports())
	p.restore()
	ra.waitHealth(t, health, true)
	for _, k := range []realtime.StreamKey{empty, seen} {
		wantCalls(t, ra, k, want[k]...)
	}

	// Redis kills the Pub/Sub connections (both nodes'); events appended
	// meanwhile come live or through the catch-up, never with a Gap.
	health = len(ra.healthReports())
	if err := dc.ClientKillByFilter(bctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []realtime.StreamKey{empty, seen} {
		for i := range 2 {
			ev := bufEvent(k, fmt.Sprint("killed", i), time.Now())
			want[k] = append(want[k], delivered(ev, appendRetry(t, b, k, ev)))
		}
	}
	ra.waitHealth(t, health, true)
	for _, k := range []realtime.StreamKey{empty, seen} {
		wantCalls(t, ra, k, want[k]...)
		wantCalls(t, rb, k, want[k]...)
	}
}

// TestEpochInvalidateNoFalseGap: Invalidate empties streams but keeps
// their epochs and last ids: nodes watching them, live or reconnecting,
// get the later events without a Gap.
func TestEpochInvalidateNoFalseGap(t *testing.T) {
	pc, p := proxied(t)
	dc := newClient(t)
	cfg := epochConfig
	cfg.Prefix = testPrefix(t, dc)
	a, b := newBroker(t, pc, cfg), newBroker(t, dc, cfg)
	ra := startBroker(t, a)
	startBroker(t, b)
	rec := recKey("inv")
	coll := collOf(rec)
	watchAll(t, []*Broker{a}, rec, coll)
	epochs := func() string {
		return epochOf(t, dc, a.keys.stream(rec)) + " " + epochOf(t, dc, a.keys.stream(coll))
	}
	before := epochs()
	var want []*realtime.Event
	publish := func(tag string) {
		t.Helper()
		ev := bufEvent(rec, tag, time.Now())
		if dup, err := b.AppendRecord(bctx, ev, realtime.AppendInOrder); err != nil || dup {
			t.Fatalf("AppendRecord %s: %v %v", tag, dup, err)
		}
		want = append(want, ev)
		for _, k := range []realtime.StreamKey{rec, coll} {
			got := ra.waitDeliveries(t, k, len(want))
			wantEntries(t, got, want, seqsOf(got))
		}
	}
	invalidate := func() {
		t.Helper()
		if err := b.Invalidate(bctx, rec.Tenant, rec.Collection); err != nil {
			t.Fatal(err)
		}
	}
	publish("e1")
	invalidate() // live
	publish("e2")
	p.cut()
	ra.waitHealth(t, 0, false)
	invalidate() // during a cut, with nothing appended: nothing missed
	health := len(ra.healthReports())
	p.restore()
	ra.waitHealth(t, health, true)
	publish("e3")
	if after := epochs(); after != before {
		t.Fatalf("epochs %s before Invalidate, %s after", before, after)
	}
	if n := ra.gapsOf(rec) + ra.gapsOf(coll); n != 0 {
		t.Fatalf("%d gaps: Invalidate taken for a stream created again", n)
	}
}

// TestVersionKeys: the record's last version and the streams' heads (epoch
// and last id) live as long as the streams (one expiry, set by one
// script); Invalidate forgets the version and keeps the heads.
func TestVersionKeys(t *testing.T) {
	c := newClient(t)
	cfg := Config{Prefix: testPrefix(t, c), StreamTTL: time.Hour}
	a := newBroker(t, c, cfg) // appends need no Start
	rec := recKey("keys")
	ev := bufEvent(rec, "v7", time.Now())
	ev.Version = 7
	if dup, err := a.AppendRecord(bctx, ev, realtime.AppendInOrder); err != nil || dup {
		t.Fatalf("AppendRecord: %v %v", dup, err)
	}
	vk := a.keys.version(rec)
	streams := []string{a.keys.stream(rec), a.keys.stream(collOf(rec))}
	expiry := func(k string) int64 {
		t.Helper()
		ms, err := c.Do(bctx, "PEXPIRETIME", k).Int64()
		if err != nil {
			t.Fatal(err)
		}
		return ms
	}
	if v, err := c.Get(bctx, vk).Result(); err != nil || v != "7" {
		t.Fatalf("version key %q: %v", v, err)
	}
	for _, k := range append(streams, vk, epochKey(streams[0]), epochKey(streams[1])) {
		if e := expiry(k); e <= 0 || e != expiry(streams[0]) {
			t.Fatalf("%s expires at %d, the record's stream at %d", k, e, expiry(streams[0]))
		}
	}
	// The heads: each stream's epoch and last id.
	for i, k := range streams {
		if got, want := headOf(t, c, k), epochOf(t, c, k)+" "+entryID(seqs(t, c, k)[0]); got != want {
			t.Fatalf("head of stream %d: %q, want %q", i, got, want)
		}
	}
	heads := headOf(t, c, streams[0]) + headOf(t, c, streams[1])
	if err := a.Invalidate(bctx, rec.Tenant, rec.Collection); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Exists(bctx, vk).Result(); err != nil || n != 0 {
		t.Fatalf("version key after Invalidate: exists=%d %v", n, err)
	}
	if after := headOf(t, c, streams[0]) + headOf(t, c, streams[1]); after != heads {
		t.Fatalf("heads %q before Invalidate, %q after", heads, after)
	}
}

// TestAppendRecordRetry: the script run twice with one dedupe id (a retry
// after a broken connection) appends a versioned event once, and the
// retry is not reported a duplicate; another publish of the version is.
func TestAppendRecordRetry(t *testing.T) {
	c := newClient(t)
	a := newBroker(t, c, Config{Prefix: testPrefix(t, c)})
	rec := recKey("retry")
	ev := bufEvent(rec, "v1", time.Now())
	ev.Version = 1
	streams := []realtime.StreamKey{rec, collOf(rec)}
	s1, dup1, err1 := a.appendOnce(bctx, streams, ev, "retry-id", true, realtime.AppendInOrder)
	s2, dup2, err2 := a.appendOnce(bctx, streams, ev, "retry-id", true, realtime.AppendInOrder)
	if err1 != nil || err2 != nil || dup1 || dup2 || fmt.Sprint(s1) != fmt.Sprint(s2) {
		t.Fatalf("first run %v %v %v, retry %v %v %v", s1, dup1, err1, s2, dup2, err2)
	}
	if n, _ := c.XLen(bctx, a.keys.stream(rec)).Result(); n != 1 {
		t.Fatalf("%d entries stored, want 1", n)
	}
	if dup, err := a.AppendRecord(bctx, ev, realtime.AppendInOrder); err != nil || !dup {
		t.Fatalf("publishing version 1 again: dup=%v %v", dup, err)
	}
}
