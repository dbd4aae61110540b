package redisbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/redis/go-redis/v9"
)

// fakeTarget records what a Queue hands it. fail, when set, may refuse a
// call (by event name and call number for that event, from 1).
type fakeTarget struct {
	mu    sync.Mutex
	pubs  []realtime.Publication
	notes []realtime.Notification
	calls map[string]int // by event name, failed ones included
	by    map[string][]string
	fail  func(event string, call int) error
	delay time.Duration
	block chan struct{} // when set, every call waits for it (or ctx)
}

func newFakeTarget() *fakeTarget {
	return &fakeTarget{calls: make(map[string]int), by: make(map[string][]string)}
}

func (f *fakeTarget) call(ctx context.Context, event string) error {
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return fmt.Errorf("fake: %w: %w", realtime.ErrUnavailable, ctx.Err())
		}
	}
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[event]++
	if f.fail != nil {
		return f.fail(event, f.calls[event])
	}
	return nil
}

func (f *fakeTarget) Publish(ctx context.Context, p realtime.Publication) (string, error) {
	if err := f.call(ctx, p.Event); err != nil {
		return "", err
	}
	f.mu.Lock()
	f.pubs = append(f.pubs, p)
	f.mu.Unlock()
	return `"etag"`, nil
}

func (f *fakeTarget) Notify(ctx context.Context, n realtime.Notification) (realtime.NotifyResult, error) {
	if err := f.call(ctx, n.Event); err != nil {
		return realtime.NotifyResult{}, err
	}
	f.mu.Lock()
	f.notes = append(f.notes, n)
	f.mu.Unlock()
	return realtime.NotifyResult{}, nil
}

// delivered is the number of successful calls (publish and notify).
func (f *fakeTarget) delivered() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pubs) + len(f.notes)
}

func (f *fakeTarget) callsOf(event string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[event]
}

// queueCfg is a test QueueConfig: a stream under a fresh prefix, quick
// reads and retries.
func queueCfg(t testing.TB, c redis.UniversalClient) QueueConfig {
	return QueueConfig{
		Stream: testPrefix(t, c) + "queue", Block: 50 * time.Millisecond,
		RetryAfter: 300 * time.Millisecond, Logger: quietLogger,
	}
}

// startQueue starts a Queue and closes it when t ends.
func startQueue(t testing.TB, c redis.UniversalClient, target Target, cfg QueueConfig) *Queue {
	t.Helper()
	q, err := NewQueue(c, target, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := q.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return q
}

// enqueue XADDs request (a JSON string, or a value marshalled) as the
// request field, and returns the entry id.
func enqueue(t testing.TB, c redis.UniversalClient, stream string, request any) string {
	t.Helper()
	s, ok := request.(string)
	if !ok {
		b, err := json.Marshal(request)
		if err != nil {
			t.Fatal(err)
		}
		s = string(b)
	}
	id, err := c.XAdd(bctx, &redis.XAddArgs{Stream: stream, Values: []any{"request", s}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func deadLetters(t testing.TB, c redis.UniversalClient, cfg QueueConfig) []redis.XMessage {
	t.Helper()
	msgs, err := c.XRange(bctx, cfg.Stream+":dead", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// settled waits until the group holds nothing pending and the stream is
// empty (every request processed, acknowledged and deleted).
func settled(t testing.TB, c redis.UniversalClient, cfg QueueConfig) {
	t.Helper()
	eventually(t, "the queue to be empty", func() bool {
		n, err := c.XLen(bctx, cfg.Stream).Result()
		if err != nil || n != 0 {
			return false
		}
		p, err := c.XPending(bctx, cfg.Stream, "realtime").Result()
		return err == nil && p.Count == 0
	})
}

func TestQueueDeliversPublishAndNotify(t *testing.T) {
	c := newClient(t)
	cfg := queueCfg(t, c)
	// Enqueued before any consumer exists: the group reads from the start.
	enqueue(t, c, cfg.Stream, `{"type":"notify","tenant":"t1","users":["u1","u2"],"excludeUsers":["u3"],`+
		`"channel":"orders.new","event":"order_created","data":{"order_id":123}}`)
	f := newFakeTarget()
	startQueue(t, c, f, cfg)
	enqueue(t, c, cfg.Stream, map[string]any{"type": "publish", "tenant": "t1", "collection": "posts", "id": "42",
		"event": "changed", "data": map[string]any{"id": "42", "title": "x"}, "etag": `"v2"`})
	enqueue(t, c, cfg.Stream, `{"type":"publish","collection":"posts","id":"43","event":"deleted"}`)
	enqueue(t, c, cfg.Stream, `{"type":"notify","event":"hello"}`)
	enqueue(t, c, cfg.Stream, `{"type":"notify","users":["u9"]}`) // event optional: the target's default
	eventually(t, "5 deliveries", func() bool { return f.delivered() == 5 })
	settled(t, c, cfg)

	f.mu.Lock()
	defer f.mu.Unlock()
	// Different records and different channels (lanes): no order between
	// them.
	sort.Slice(f.pubs, func(i, j int) bool { return f.pubs[i].ID < f.pubs[j].ID })
	sort.Slice(f.notes, func(i, j int) bool { return f.notes[i].Event > f.notes[j].Event })
	n := f.notes[0]
	if n.Event != "order_created" || n.Tenant != "t1" || n.Channel != "orders.new" ||
		strings.Join(n.Users, ",") != "u1,u2" || strings.Join(n.ExcludeUsers, ",") != "u3" ||
		string(n.Data.(json.RawMessage)) != `{"order_id":123}` || n.AwaitAcks != 0 {
		t.Errorf("notify: %+v", n)
	}
	if n := f.notes[1]; n.Tenant != realtime.DefaultTenant || n.Event != "hello" {
		t.Errorf("notify with defaults: %+v", n)
	}
	if n := f.notes[2]; n.Event != "" || strings.Join(n.Users, ",") != "u9" {
		t.Errorf("notify without event: %+v", n)
	}
	p := f.pubs[0]
	if p.Tenant != "t1" || p.Collection != "posts" || p.ID != "42" || p.Event != "changed" ||
		string(p.Data) != `{"id":"42","title":"x"}` || p.ETag != `"v2"` {
		t.Errorf("publish: %+v", p)
	}
	if p := f.pubs[1]; p.Tenant != realtime.DefaultTenant || p.ID != "43" || p.Event != "deleted" || p.ETag != "" {
		t.Errorf("publish with defaults: %+v", p)
	}
	if d := deadLetters(t, c, cfg); len(d) != 0 {
		t.Errorf("dead letters: %v", d)
	}
}

func TestQueueDeadLettersBadRequests(t *testing.T) {
	c := newClient(t)
	cfg := queueCfg(t, c)
	f := newFakeTarget()
	f.fail = func(event string, _ int) error {
		if event == "refused" {
			return fmt.Errorf("fake: %w: unknown event", realtime.ErrBadRequest)
		}
		return nil
	}
	startQueue(t, c, f, cfg)
	bad := []struct{ request, reason string }{
		{`{"type":"notify",`, "not a JSON object"},
		{`[1,2]`, "not a JSON object"},
		{`{"type":"notify","event":"a"} x`, "data after"},
		{`{"type":"shout","event":"a"}`, `unknown type "shout"`},
		{`{"event":"a"}`, "type is required"},
		{`{"type":"notify","event":"a","awaitAcks":"5s"}`, "awaitAcks is not allowed"},
		{`{"type":"publish","collection":"posts","event":"changed","data":{}}`, "needs collection and id"},
		{`{"type":"publish","collection":"posts","id":"1","channel":"c","event":"changed","data":{}}`, "do not apply"},
		{`{"type":"notify","id":"1","event":"a"}`, "do not apply"},
		{`{"type":"notify","tenant":"a\nb","event":"a"}`, "invalid tenant"},
		{`{"type":"notify","event":"a","exclude_users":["u3"]}`, `request: unknown field "exclude_users"`},
		{`{"type":"notify","event":"a","Users":["u3"]}`, `request: unknown field "Users"`},
		{`{"type":"notify","event":"a","users":"u1"}`, `request: field "users" must be an array of strings`},
		{`{"type":"publish","collection":"posts","id":1,"event":"changed"}`, `request: field "id" must be a string`},
		{`{"type":"publish","collection":"posts","id":"1","event":"refused","data":{}}`, "unknown event"},
	}
	var ids []string
	for _, b := range bad {
		ids = append(ids, enqueue(t, c, cfg.Stream, b.request))
	}
	// No request field at all.
	noField, err := c.XAdd(bctx, &redis.XAddArgs{Stream: cfg.Stream, Values: []any{"body", "{}"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, c, cfg.Stream, `{"type":"notify","event":"after"}`)

	eventually(t, "the request after the bad ones", func() bool { return f.delivered() == 1 })
	settled(t, c, cfg)
	dead := deadLetters(t, c, cfg)
	if len(dead) != len(bad)+1 {
		t.Fatalf("%d dead letters, want %d: %v", len(dead), len(bad)+1, dead)
	}
	byEntry := make(map[string]redis.XMessage)
	for _, d := range dead {
		byEntry[d.Values["entry"].(string)] = d
	}
	for i, b := range bad {
		d, ok := byEntry[ids[i]]
		if !ok {
			t.Errorf("%s: not dead-lettered", b.request)
			continue
		}
		if d.Values["request"] != b.request || d.Values["attempts"] != "1" ||
			!strings.Contains(d.Values["reason"].(string), b.reason) {
			t.Errorf("%s: dead letter %v, want reason with %q", b.request, d.Values, b.reason)
		}
	}
	if d := byEntry[noField]; d.Values["body"] != "{}" || !strings.Contains(fmt.Sprint(d.Values["reason"]), `no "request" field`) {
		t.Errorf("no request field: dead letter %v", d.Values)
	}
	if n := f.callsOf("refused"); n != 1 {
		t.Errorf("a request the target refused as bad was tried %d times, want 1", n)
	}
}

func TestQueueRetriesPassingFailures(t *testing.T) {
	c := newClient(t)
	cfg := queueCfg(t, c)
	f := newFakeTarget()
	f.fail = func(event string, call int) error {
		if event == "flaky" && call < 3 {
			return fmt.Errorf("fake: %w", realtime.ErrUnavailable)
		}
		return nil
	}
	startQueue(t, c, f, cfg)
	enqueue(t, c, cfg.Stream, `{"type":"publish","collection":"posts","id":"1","event":"flaky","data":{"id":"1"}}`)
	enqueue(t, c, cfg.Stream, `{"type":"notify","event":"steady"}`)
	eventually(t, "the steady request", func() bool { return f.callsOf("steady") == 1 })
	eventually(t, "the flaky request, third time", func() bool { return f.delivered() == 2 })
	settled(t, c, cfg)
	if n := f.callsOf("flaky"); n != 3 {
		t.Errorf("flaky tried %d times, want 3", n)
	}
	if d := deadLetters(t, c, cfg); len(d) != 0 {
		t.Errorf("dead letters: %v", d)
	}
}

func TestQueueDeadLettersAfterMaxAttempts(t *testing.T) {
	c := newClient(t)
	cfg := queueCfg(t, c)
	cfg.MaxAttempts = 3
	f := newFakeTarget()
	f.fail = func(event string, _ int) error {
		if event == "down" {
			return fmt.Errorf("fake: %w: broker", realtime.ErrUnavailable)
		}
		return nil
	}
	startQueue(t, c, f, cfg)
	id := enqueue(t, c, cfg.Stream, `{"type":"notify","event":"down"}`)
	enqueue(t, c, cfg.Stream, `{"type":"notify","event":"fine"}`)
	eventually(t, "the dead letter", func() bool { return len(deadLetters(t, c, cfg)) == 1 })
	settled(t, c, cfg)
	d := deadLetters(t, c, cfg)[0].Values
	if d["entry"] != id || d["attempts"] != "3" || !strings.Contains(d["reason"].(string), "failed 3 times") ||
		!strings.Contains(d["reason"].(string), "unavailable") {
		t.Errorf("dead letter %v", d)
	}
	if n := f.callsOf("down"); n != 3 {
		t.Errorf("tried %d times, want 3", n)
	}
	if f.delivered() != 1 {
		t.Errorf("the other request was not delivered")
	}
}

// A consumer that read requests and died: another claims them after
// RetryAfter; one delivered too often is dead-lettered.
func TestQueueClaimsWhatADeadConsumerLeft(t *testing.T) {
	c := newClient(t)
	cfg := queueCfg(t, c)
	cfg.MaxAttempts = 2
	if err := c.XGroupCreateMkStream(bctx, cfg.Stream, "realtime", "0").Err(); err != nil {
		t.Fatal(err)
	}
	enqueue(t, c, cfg.Stream, `{"type":"notify","event":"orphan"}`)
	poison := enqueue(t, c, cfg.Stream, `{"type":"notify","event":"poison"}`)
	read := func(consumer string) {
		if err := c.XReadGroup(bctx, &redis.XReadGroupArgs{Group: "realtime", Consumer: consumer,
			Streams: []string{cfg.Stream, ">"}, Count: 10}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	read("ghost")
	// The poison request has been delivered twice already (killed a node
	// each time, say).
	if err := c.XClaim(bctx, &redis.XClaimArgs{Stream: cfg.Stream, Group: "realtime", Consumer: "ghost2",
		Messages: []string{poison}}).Err(); err != nil {
		t.Fatal(err)
	}
	f := newFakeTarget()
	startQueue(t, c, f, cfg)
	eventually(t, "the orphan", func() bool { return f.delivered() == 1 })
	settled(t, c, cfg)
	if n := f.callsOf("poison"); n != 0 {
		t.Errorf("poison delivered %d times", n)
	}
	d := deadLetters(t, c, cfg)
	if len(d) != 1 || d[0].Values["entry"] != poison || d[0].Values["attempts"] != "3" ||
		!strings.Contains(d[0].Values["reason"].(string), "delivered 2 times without success") {
		t.Errorf("dead letters %v", d)
	}
}

// Requests about one record are processed in stream order, even with
// concurrency.
func TestQueueKeepsOrderPerRecord(t *testing.T) {
	c := newClient(t)
	cfg := queueCfg(t, c)
	cfg.Concurrency = 8
	f := newFakeTarget()
	startQueue(t, c, f, cfg)
	const n = 200
	p := c.Pipeline()
	for i := range n {
		rec := i % 3
		p.XAdd(bctx, &redis.XAddArgs{Stream: cfg.Stream, Values: []any{"request", fmt.Sprintf(
			`{"type":"publish","collection":"posts","id":"%d","event":"changed","data":{"n":%d}}`, rec, i)}})
	}
	if _, err := p.Exec(bctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every request", func() bool { return f.delivered() == n })
	f.mu.Lock()
	defer f.mu.Unlock()
	last := map[string]int{}
	for _, pub := range f.pubs {
		var d struct{ N int }
		_ = json.Unmarshal(pub.Data, &d)
		if prev, ok := last[pub.ID]; ok && d.N <= prev {
			t.Fatalf("record %s: %d after %d", pub.ID, d.N, prev)
		}
		last[pub.ID] = d.N
	}
}

func TestQueueTwoConsumersShareTheWork(t *testing.T) {
	c := newClient(t)
	cfg := queueCfg(t, c)
	cfg.Batch = 10
	cfg.Concurrency = 2
	f1, f2 := newFakeTarget(), newFakeTarget()
	f1.delay, f2.delay = time.Millisecond, time.Millisecond
	startQueue(t, newClient(t), f1, cfg)
	startQueue(t, newClient(t), f2, cfg)
	const n = 300
	p := c.Pipeline()
	for i := range n {
		p.XAdd(bctx, &redis.XAddArgs{Stream: cfg.Stream, Values: []any{"request", fmt.Sprintf(`{"type":"notify","event":"e%d"}`, i)}})
	}
	if _, err := p.Exec(bctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every request", func() bool { return f1.delivered()+f2.delivered() >= n })
	settled(t, c, cfg)
	seen := map[string]int{}
	for _, f := range []*fakeTarget{f1, f2} {
		f.mu.Lock()
		for _, note := range f.notes {
			seen[note.Event]++
		}
		f.mu.Unlock()
	}
	if len(seen) != n {
		t.Errorf("%d distinct requests delivered, want %d", len(seen), n)
	}
	for e, k := range seen {
		if k != 1 {
			t.Errorf("%s delivered %d times", e, k)
		}
	}
	if f1.delivered() == 0 || f2.delivered() == 0 {
		t.Errorf("one consumer did everything: %d and %d", f1.delivered(), f2.delivered())
	}
	t.Logf("split: %d / %d", f1.delivered(), f2.delivered())
}

// Redis unreachable for a while: the queue backs off and resumes. Delivery
// is at least once: a cut that loses the XACK of "before" has it delivered
// again (so the count of deliveries is no test: that "during" came, and
// nothing is left pending, are).
func TestQueueSurvivesAnOutage(t *testing.T) {
	direct := newClient(t)
	px := newProxy(t, redisOptions(t).Addr)
	c := newClient(t, func(o *redis.Options) { o.Addr = px.addr(); o.MaxRetries = -1 })
	cfg := queueCfg(t, direct)
	f := newFakeTarget()
	startQueue(t, c, f, cfg)
	enqueue(t, direct, cfg.Stream, `{"type":"notify","event":"before"}`)
	eventually(t, "before", func() bool { return f.delivered() == 1 })
	px.cut()
	enqueue(t, direct, cfg.Stream, `{"type":"notify","event":"during"}`)
	time.Sleep(200 * time.Millisecond)
	px.restore()
	eventually(t, "during, once Redis is back", func() bool { return f.callsOf("during") > 0 })
	settled(t, direct, cfg)
}

// Close waits for the request under way; a Close whose context ends first
// leaves it pending for another node, and the goroutine still ends
// (goleak checks it).
func TestQueueClose(t *testing.T) {
	c := newClient(t)
	cfg := queueCfg(t, c)
	f := newFakeTarget()
	f.block = make(chan struct{})
	q, err := NewQueue(c, f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	if err := q.Start(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Start: %v", err)
	}
	enqueue(t, c, cfg.Stream, `{"type":"notify","event":"slow"}`)
	eventually(t, "the request to be taken", func() bool {
		p, err := c.XPending(bctx, cfg.Stream, "realtime").Result()
		return err == nil && p.Count == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := q.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a request blocked: %v", err)
	}
	if err := q.Close(context.Background()); err != nil { // waits for the loop's end
		t.Fatal(err)
	}
	if p, err := c.XPending(bctx, cfg.Stream, "realtime").Result(); err != nil || p.Count != 1 {
		t.Errorf("pending after an interrupted Close: %+v, %v", p, err)
	}
	if err := q.Start(); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
	if d := deadLetters(t, c, cfg); len(d) != 0 {
		t.Errorf("dead letters: %v", d)
	}

	// Another node takes it over.
	f2 := newFakeTarget()
	q2 := startQueue(t, c, f2, cfg)
	eventually(t, "the takeover", func() bool { return f2.delivered() == 1 })
	settled(t, c, cfg)

	// A clean Close with nothing pending leaves the group.
	start := time.Now()
	if err := q2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > cfg.Block+time.Second {
		t.Errorf("Close took %v", d)
	}
	consumers, err := c.XInfoConsumers(bctx, cfg.Stream, "realtime").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, ci := range consumers {
		if ci.Name == q2.Consumer() {
			t.Errorf("consumer %s still in the group", ci.Name)
		}
	}
}

func TestQueueConfig(t *testing.T) {
	c := newClient(t)
	q, err := NewQueue(c, newFakeTarget(), QueueConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := q.cfg
	if got.Stream != "rt:queue" || got.Group != "realtime" || got.DeadLetter != "rt:queue:dead" ||
		got.Batch != 100 || got.Concurrency != 8 || got.Block != 2*time.Second || got.MaxAttempts != 5 ||
		got.RetryAfter != 30*time.Second || got.MaxRequestBytes != 1<<20 || got.DeadLetterMaxLen != 10000 ||
		got.Consumer == "" || got.Logger == nil {
		t.Errorf("defaults: %+v", got)
	}
	q2, _ := NewQueue(c, newFakeTarget(), QueueConfig{})
	if q2.Consumer() == q.Consumer() {
		t.Errorf("two queues named %s", q.Consumer())
	}
	_ = q.Close(bctx)
	_ = q2.Close(bctx)
	for _, bad := range []QueueConfig{
		{Stream: "s", DeadLetter: "s"}, {Batch: -1}, {Batch: maxQueueBatch + 1}, {Concurrency: -1},
		{Block: time.Microsecond}, {MaxAttempts: -1}, {RetryAfter: -time.Second}, {MaxRequestBytes: -1},
		{DeadLetterMaxLen: -1},
	} {
		if _, err := NewQueue(c, newFakeTarget(), bad); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if _, err := NewQueue(nil, newFakeTarget(), QueueConfig{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil client: %v", err)
	}
	if _, err := NewQueue(c, nil, QueueConfig{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil target: %v", err)
	}
}

func TestQueueRequestTooLarge(t *testing.T) {
	_, err := parseRequest(map[string]any{"request": `{"type":"notify","event":"e","data":"` + strings.Repeat("x", 100) + `"}`}, 64)
	if !errors.Is(err, realtime.ErrBadRequest) || !strings.Contains(err.Error(), "over 64 bytes") {
		t.Errorf("%v", err)
	}
}
