package redisbroker

// Outages through a TCP proxy between one broker and Redis: cut (every
// connection closed, new ones refused) and stall (connections open, nothing
// forwarded).

import (
	"fmt"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/redis/go-redis/v9"
)

// proxied returns a client of the test Redis through a new proxy.
func proxied(t *testing.T) (*redis.Client, *proxy) {
	t.Helper()
	direct := newClient(t) // skips without Redis
	p := newProxy(t, direct.Options().Addr)
	c := newClient(t, func(o *redis.Options) {
		o.Addr = p.addr()
		o.DialTimeout = time.Second
		o.ReadTimeout = time.Second
		o.WriteTimeout = time.Second
		o.MaxRetries = 1
	})
	return c, p
}

var fastProbe = Config{ProbeInterval: 50 * time.Millisecond, ProbeTimeout: 500 * time.Millisecond}

func TestOutageCut(t *testing.T) {
	pc, p := proxied(t)
	dc := newClient(t)
	cfg := fastProbe
	cfg.Prefix = testPrefix(t, dc)
	cfg.Size = 5
	a, b := newBroker(t, pc, cfg), newBroker(t, dc, cfg)
	ra, rb := startBroker(t, a), startBroker(t, b)

	caught := recKey("caught")                                                 // appended during the cut: caught up
	trimmed := recKey("trimmed")                                               // trimmed during the cut: Gap
	invalidated := realtime.StreamKey{Tenant: "t", Collection: "inv", ID: "1"} // emptied during the cut: Gap
	late := recKey("late")                                                     // watched during the cut: Gap
	wiped := recKey("wiped")                                                   // lost with Redis's data during the cut: Gap
	for _, k := range []realtime.StreamKey{caught, trimmed, invalidated, wiped} {
		for _, br := range []*Broker{a, b} {
			if err := br.Watch(bctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := b.Watch(bctx, late); err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(bctx, "topic"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []realtime.StreamKey{caught, trimmed, invalidated, wiped} {
		appendAll(t, b, k, "before", 1, time.Now)
		ra.waitDeliveries(t, k, 1)
	}

	p.cut()
	ra.waitHealth(t, 0, false)
	if _, err := a.Append(bctx, caught, bufEvent(caught, "refused", time.Now())); !isUnavailable(err) {
		t.Fatalf("Append during the cut: %v", err)
	}
	if _, err := a.AppendRecord(bctx, bufEvent(caught, "refused", time.Now()), realtime.AppendInOrder); !isUnavailable(err) {
		t.Fatalf("AppendRecord during the cut: %v", err)
	}
	if _, err := a.Publish(bctx, "topic", []byte("refused")); !isUnavailable(err) {
		t.Fatalf("Publish during the cut: %v", err)
	}
	if _, err := a.Since(bctx, caught, ""); !isUnavailable(err) {
		t.Fatalf("Since during the cut: %v", err)
	}
	if err := a.Watch(bctx, late); !isUnavailable(err) {
		t.Fatalf("Watch during the cut: %v", err)
	}
	if err := a.Listen(bctx, "late-topic"); !isUnavailable(err) {
		t.Fatalf("Listen during the cut: %v", err)
	}
	if _, _, err := a.Presence(bctx, "t"); !isUnavailable(err) {
		t.Fatalf("Presence during the cut: %v", err)
	}
	during, _ := appendAll(t, b, caught, "during", 3, time.Now)
	appendAll(t, b, trimmed, "during", 300, time.Now) // Size 5: the first ones are trimmed
	appendAll(t, b, invalidated, "during", 2, time.Now)
	if err := b.Invalidate(bctx, invalidated.Tenant, invalidated.Collection); err != nil {
		t.Fatal(err)
	}
	appendAll(t, b, late, "during", 1, time.Now)
	// As after a restart of a Redis that keeps nothing on disk.
	if err := dc.Del(bctx, a.keys.stream(wiped)).Err(); err != nil {
		t.Fatal(err)
	}
	healthBefore := len(ra.healthReports())

	p.restore()
	ra.waitHealth(t, healthBefore, true)
	got := ra.waitDeliveries(t, caught, 4)
	wantEntries(t, got[1:], during, seqsOf(rb.of(caught)[1:]))
	if n := ra.gapsOf(caught); n != 0 {
		t.Errorf("%d gaps of a stream caught up", n)
	}
	eventually(t, "gap of the trimmed stream", func() bool { return ra.gapsOf(trimmed) > 0 })
	eventually(t, "gap of the invalidated stream", func() bool { return ra.gapsOf(invalidated) > 0 })
	eventually(t, "gap of the stream watched during the cut", func() bool { return ra.gapsOf(late) > 0 })
	eventually(t, "gap of the stream whose data was lost", func() bool { return ra.gapsOf(wiped) > 0 })
	// Every stream flows again, the late watch and listen included.
	for _, k := range []realtime.StreamKey{caught, trimmed, invalidated, late, wiped} {
		seq, err := a.Append(bctx, k, bufEvent(k, "after", time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, fmt.Sprintf("%v after the cut", k), func() bool { return ra.lastSeq(k) == seq })
		eventually(t, fmt.Sprintf("%v after the cut on b", k), func() bool { return rb.lastSeq(k) == seq })
	}
	if n, err := b.Publish(bctx, "late-topic", []byte("hi")); err != nil || n != 1 {
		t.Fatalf("Publish to the topic listened during the cut: %d %v", n, err)
	}
	eventually(t, "late-topic", func() bool { return len(ra.messagesOf("late-topic")) == 1 })
	if n := rb.gapsOf(trimmed) + rb.gapsOf(caught) + rb.gapsOf(late); n != 0 {
		t.Errorf("node b, always connected, got %d gaps", n)
	}
}

func seqsOf(es []realtime.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func TestOutageStall(t *testing.T) {
	pc, p := proxied(t)
	dc := newClient(t)
	cfg := fastProbe
	cfg.Prefix = testPrefix(t, dc)
	a, b := newBroker(t, pc, cfg), newBroker(t, dc, cfg)
	ra, rb := startBroker(t, a), startBroker(t, b)
	key := recKey("stalled")
	for _, br := range []*Broker{a, b} {
		if err := br.Watch(bctx, key); err != nil {
			t.Fatal(err)
		}
	}
	appendAll(t, b, key, "before", 1, time.Now)
	ra.waitDeliveries(t, key, 1)

	p.stall() // open connections forward nothing; new ones work
	during, _ := appendAll(t, b, key, "during", 3, time.Now)
	ra.waitHealth(t, 0, false) // found by the probe
	ra.waitHealth(t, 1, true)  // healed on a new connection
	t.Logf("health: %v", ra.healthReports())
	got := ra.waitDeliveries(t, key, 4)
	wantEntries(t, got[1:], during, seqsOf(rb.of(key)[1:4]))
	if n := ra.gapsOf(key); n != 0 {
		t.Errorf("%d gaps after a stall whose events were still stored", n)
	}
	seq, err := b.Append(bctx, key, bufEvent(key, "after", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the event after the stall", func() bool { return ra.lastSeq(key) == seq })
}
