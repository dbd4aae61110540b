package redisbroker

// Since against Redis, mirroring the MemoryBuffer cases of the root's
// buffer_test.go (count bound, age bound, head kept, invalidate,
// ambiguous ETags, plain lookups). The memory cap has no counterpart:
// Redis streams are bounded by count, age and StreamTTL.

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
)

var bctx = context.Background()

func recKey(id string) realtime.StreamKey {
	return realtime.StreamKey{Tenant: realtime.DefaultTenant, Collection: "posts", ID: id}
}

func collOf(k realtime.StreamKey) realtime.StreamKey {
	return realtime.StreamKey{Tenant: k.Tenant, Collection: k.Collection}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
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

func bufEvent(key realtime.StreamKey, tag string, at time.Time) *realtime.Event {
	ref := key
	if ref.ID == "" {
		ref.ID = "r-" + tag
	}
	return &realtime.Event{Type: realtime.EventChanged, Ref: ref, ETag: `"` + tag + `"`,
		Data: json.RawMessage(`{"v":"` + tag + `","s":"<&> é 🚀"}`), Time: at}
}

func appendAll(t testing.TB, b realtime.Buffer, key realtime.StreamKey, prefix string, n int, at func() time.Time) ([]*realtime.Event, []uint64) {
	t.Helper()
	evs := make([]*realtime.Event, n)
	seqs := make([]uint64, n)
	for i := range n {
		evs[i] = bufEvent(key, fmt.Sprintf("%s%03d", prefix, i), at())
		seq, err := b.Append(bctx, key, evs[i])
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && seq <= seqs[i-1] {
			t.Fatalf("position %d after %d", seq, seqs[i-1])
		}
		seqs[i] = seq
	}
	return evs, seqs
}

func since(t testing.TB, b realtime.Buffer, key realtime.StreamKey, lastID string) realtime.Lookup {
	t.Helper()
	lk, err := b.Since(bctx, key, lastID)
	if err != nil {
		t.Fatal(err)
	}
	return lk
}

// sameEvent tells whether got is want after a trip through Redis.
func sameEvent(got, want *realtime.Event) bool {
	return got != nil && got.Type == want.Type && got.Ref == want.Ref && got.ETag == want.ETag &&
		string(got.Data) == string(want.Data) && string(got.Prior) == string(want.Prior) && got.Time.Equal(want.Time) &&
		string(got.SSEFrame()) == string(want.SSEFrame())
}

func wantEntries(t testing.TB, got []realtime.Entry, want []*realtime.Event, wantSeqs []uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d", len(got), len(want))
	}
	for i, e := range got {
		if e.Seq != wantSeqs[i] || !sameEvent(e.Event, want[i]) {
			t.Fatalf("event %d = %+v at %d, want %s at %d", i, e.Event, e.Seq, want[i].ETag, wantSeqs[i])
		}
	}
}

func wantFound(t testing.TB, lk realtime.Lookup, seq uint64, want []*realtime.Event, wantSeqs []uint64) {
	t.Helper()
	if lk.Status != realtime.LookupFound || lk.Seq != seq {
		t.Fatalf("lookup %v at %d, want found at %d", lk.Status, lk.Seq, seq)
	}
	wantEntries(t, lk.Events, want, wantSeqs)
}

func wantStatus(t testing.TB, lk realtime.Lookup, st realtime.LookupStatus) {
	t.Helper()
	if lk.Status != st {
		t.Fatalf("lookup %v, want %v", lk.Status, st)
	}
}

// bufferOn returns an unstarted broker (a Buffer) with a fresh prefix.
func bufferOn(t testing.TB, cfg Config) *Broker {
	t.Helper()
	c := newClient(t)
	cfg.Prefix = testPrefix(t, c)
	return newBroker(t, c, cfg)
}

func TestSinceCountBound(t *testing.T) {
	cases := []struct {
		name string
		size int // 0: the default
		keep int
	}{
		{"default keeps 100", 0, 100},
		{"Size 5", 5, 5},
		{"Size 1", 1, 1},
	}
	for _, tc := range cases {
		for _, key := range []realtime.StreamKey{recKey("42"), collOf(recKey("42"))} {
			t.Run(fmt.Sprintf("%s/record=%v", tc.name, key.ID != ""), func(t *testing.T) {
				b := bufferOn(t, Config{Size: tc.size})
				n := tc.keep + 50
				evs, seqs := appendAll(t, b, key, "e", n, time.Now)
				oldest := n - tc.keep
				for i := range oldest {
					wantStatus(t, since(t, b, key, evs[i].ETag), realtime.LookupUnknown)
				}
				if oldest < n-1 {
					wantFound(t, since(t, b, key, evs[oldest].ETag), seqs[oldest], evs[oldest+1:], seqs[oldest+1:])
					wantFound(t, since(t, b, key, evs[n-2].ETag), seqs[n-2], evs[n-1:], seqs[n-1:])
				}
				lk := since(t, b, key, evs[n-1].ETag)
				if lk.Status != realtime.LookupUpToDate || lk.Seq != seqs[n-1] || len(lk.Events) != 0 {
					t.Fatalf("newest: %v at %d, want up to date at %d", lk.Status, lk.Seq, seqs[n-1])
				}
				if lk := since(t, b, key, ""); lk.Status != realtime.LookupUnknown || lk.Seq != seqs[n-1] {
					t.Fatalf("no resume point: %v at %d, want unknown at the head %d", lk.Status, lk.Seq, seqs[n-1])
				}
			})
		}
	}
}

func TestSinceAgeBound(t *testing.T) {
	clock := &fakeClock{now: time.Now().Add(-time.Hour)}
	b := bufferOn(t, Config{MaxAge: time.Minute})
	b.now = clock.Now
	key := recKey("42")
	var evs []*realtime.Event
	var seqs []uint64
	for _, step := range []time.Duration{0, 30 * time.Second, 20 * time.Second} {
		clock.advance(step)
		e, s := appendAll(t, b, key, fmt.Sprint("t", len(evs), "-"), 1, clock.Now)
		evs, seqs = append(evs, e...), append(seqs, s...)
	}
	wantFound(t, since(t, b, key, evs[0].ETag), seqs[0], evs[1:], seqs[1:])

	clock.advance(20 * time.Second)
	wantStatus(t, since(t, b, key, evs[0].ETag), realtime.LookupUnknown)
	wantFound(t, since(t, b, key, evs[1].ETag), seqs[1], evs[2:], seqs[2:])

	clock.advance(10 * time.Minute)
	wantStatus(t, since(t, b, key, evs[1].ETag), realtime.LookupUnknown)
	lk := since(t, b, key, evs[2].ETag)
	if lk.Status != realtime.LookupUpToDate || lk.Seq != seqs[2] {
		t.Fatalf("head after ageing out: %v at %d, want up to date at %d", lk.Status, lk.Seq, seqs[2])
	}
	// A collection stream has no such head rule.
	ck := collOf(key)
	cevs, _ := appendAll(t, b, ck, "c", 1, clock.Now)
	clock.advance(10 * time.Minute)
	wantStatus(t, since(t, b, ck, cevs[0].ETag), realtime.LookupUnknown)
}

func TestSinceAgeBoundHeadThenNext(t *testing.T) {
	clock := &fakeClock{now: time.Now().Add(-2 * time.Hour)}
	b := bufferOn(t, Config{MaxAge: time.Minute})
	b.now = clock.Now
	key := recKey("42")
	old, _ := appendAll(t, b, key, "old", 1, clock.Now)
	clock.advance(time.Hour)
	newer, newSeqs := appendAll(t, b, key, "new", 1, clock.Now)
	lk := since(t, b, key, old[0].ETag)
	if lk.Status == realtime.LookupUpToDate {
		t.Fatal("an old version is reported up to date after a newer event")
	}
	if lk.Status == realtime.LookupFound {
		wantFound(t, lk, lk.Seq, newer, newSeqs)
	}
	up := since(t, b, key, newer[0].ETag)
	if up.Status != realtime.LookupUpToDate || up.Seq != newSeqs[0] {
		t.Fatalf("newest: %v at %d", up.Status, up.Seq)
	}
}

func TestSinceInvalidate(t *testing.T) {
	b := bufferOn(t, Config{})
	posts := recKey("1")
	other := realtime.StreamKey{Tenant: realtime.DefaultTenant, Collection: "pages", ID: "1"}
	otherTenant := realtime.StreamKey{Tenant: "t2", Collection: "posts", ID: "1"}
	keys := []realtime.StreamKey{posts, collOf(posts), recKey("2"), other, collOf(other), otherTenant, collOf(otherTenant)}
	first := map[realtime.StreamKey]*realtime.Event{}
	lastSeq := map[realtime.StreamKey]uint64{}
	for _, k := range keys {
		evs, seqs := appendAll(t, b, k, k.Tenant+k.Collection+k.ID, 2, time.Now)
		first[k] = evs[0]
		lastSeq[k] = seqs[1]
	}
	if err := b.Invalidate(bctx, realtime.DefaultTenant, "posts"); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		lk := since(t, b, k, first[k].ETag)
		gone := k.Tenant == realtime.DefaultTenant && k.Collection == "posts"
		if gone && lk.Status != realtime.LookupUnknown {
			t.Errorf("%+v after Invalidate: %v, want unknown", k, lk.Status)
		}
		if !gone && lk.Status != realtime.LookupFound {
			t.Errorf("%+v of another collection or tenant: %v, want found", k, lk.Status)
		}
	}
	if lk := since(t, b, posts, ""); lk.Status != realtime.LookupUnknown {
		t.Errorf("empty lastID after Invalidate: %v", lk.Status)
	}
	// A stream started again never reuses a position.
	_, seqs := appendAll(t, b, posts, "again", 1, time.Now)
	if seqs[0] <= lastSeq[posts] {
		t.Errorf("position %d after Invalidate, not above %d", seqs[0], lastSeq[posts])
	}
}

func TestSinceAmbiguous(t *testing.T) {
	for _, key := range []realtime.StreamKey{recKey("42"), collOf(recKey("42"))} {
		t.Run(fmt.Sprintf("record=%v", key.ID != ""), func(t *testing.T) {
			b := bufferOn(t, Config{})
			var evs []*realtime.Event
			var seqs []uint64
			for _, tag := range []string{"A", "B", "A", "C"} {
				ev := bufEvent(key, tag, time.Now())
				ev.Ref = key // same record for the collection stream too: the ETags repeat
				seq, err := b.Append(bctx, key, ev)
				if err != nil {
					t.Fatal(err)
				}
				evs, seqs = append(evs, ev), append(seqs, seq)
			}
			wantStatus(t, since(t, b, key, `"A"`), realtime.LookupUnknown)
			wantFound(t, since(t, b, key, `"B"`), seqs[1], evs[2:], seqs[2:])
			wantStatus(t, since(t, b, key, `"C"`), realtime.LookupUpToDate)
			wantStatus(t, since(t, b, key, `"Z"`), realtime.LookupUnknown)
			wantStatus(t, since(t, b, key, ""), realtime.LookupUnknown)
			if _, err := b.Append(bctx, key, bufEvent(key, "A", time.Now())); err != nil {
				t.Fatal(err)
			}
			if key.ID != "" {
				wantStatus(t, since(t, b, key, `"A"`), realtime.LookupUpToDate)
			} else {
				wantStatus(t, since(t, b, key, `"A"`), realtime.LookupUnknown)
			}
		})
	}
}

func TestSinceLookups(t *testing.T) {
	b := bufferOn(t, Config{})
	key := recKey("42")
	wantStatus(t, since(t, b, key, `"x"`), realtime.LookupUnknown)
	if lk := since(t, b, key, ""); lk.Status != realtime.LookupUnknown || lk.Seq != 0 {
		t.Fatalf("never seen, no lastID: %v at %d", lk.Status, lk.Seq)
	}
	evs, seqs := appendAll(t, b, key, "e", 3, time.Now)
	wantFound(t, since(t, b, key, evs[0].ETag), seqs[0], evs[1:], seqs[1:])
	wantStatus(t, since(t, b, recKey("43"), evs[0].ETag), realtime.LookupUnknown)
	// Names that look like the key syntax stay apart.
	tricky := []realtime.StreamKey{
		{Tenant: "a:b", Collection: "c", ID: "1"}, {Tenant: "a", Collection: "b:c", ID: "1"},
		{Tenant: "a}{", Collection: "c", ID: "1"}, {Tenant: "a", Collection: "}{c", ID: "1"},
		{Tenant: "a", Collection: "c", ID: "1:r:x"}, {Tenant: "a", Collection: "c", ID: "%7B"}, {Tenant: "a", Collection: "c", ID: "{"},
	}
	for i, k := range tricky {
		appendAll(t, b, k, fmt.Sprint("k", i, "-"), 1, time.Now)
	}
	for i, k := range tricky {
		lk := since(t, b, k, fmt.Sprintf(`"k%d-000"`, i))
		if lk.Status != realtime.LookupUpToDate {
			t.Errorf("%+v: %v: streams mixed up", k, lk.Status)
		}
	}
}
