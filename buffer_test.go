package realtime

// Unit tests of MemoryBuffer: the bounds of PROTOCOL.md §3 (count, age,
// memory cap with the least recently active streams evicted first) and
// the found / up to date / unknown answers.

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

var bctx = context.Background()

func recKey(id string) StreamKey {
	return StreamKey{Tenant: DefaultTenant, Collection: "posts", ID: id}
}

// fakeClock is an injectable MemoryBufferConfig.Now.
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

// bufEvent builds an event of key with ETag "<tag>" and a fixed-size body.
func bufEvent(key StreamKey, tag string, at time.Time) *Event {
	return &Event{Type: EventChanged, Ref: key, ETag: `"` + tag + `"`, Data: json.RawMessage(`{"v":"` + tag + `"}`), Time: at}
}

// appendAll appends events tagged prefix0…prefix(n-1) and returns them
// with their positions, checking that positions strictly increase.
func appendAll(t *testing.T, b Buffer, key StreamKey, prefix string, n int, at func() time.Time) ([]*Event, []uint64) {
	t.Helper()
	evs := make([]*Event, n)
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

func since(t *testing.T, b Buffer, key StreamKey, lastID string) Lookup {
	t.Helper()
	lk, err := b.Since(bctx, key, lastID)
	if err != nil {
		t.Fatal(err)
	}
	return lk
}

// wantFound checks that lastID is found and followed by exactly want.
func wantFound(t *testing.T, lk Lookup, seq uint64, want []*Event, wantSeqs []uint64) {
	t.Helper()
	if lk.Status != LookupFound || lk.Seq != seq {
		t.Fatalf("lookup %v at %d, want found at %d", lk.Status, lk.Seq, seq)
	}
	if len(lk.Events) != len(want) {
		t.Fatalf("%d events after the resume point, want %d", len(lk.Events), len(want))
	}
	for i, e := range lk.Events {
		if e.Event != want[i] || e.Seq != wantSeqs[i] {
			t.Fatalf("event %d = %s at %d, want %s at %d", i, e.Event.ETag, e.Seq, want[i].ETag, wantSeqs[i])
		}
	}
}

func wantStatus(t *testing.T, lk Lookup, st LookupStatus) {
	t.Helper()
	if lk.Status != st {
		t.Fatalf("lookup %v, want %v", lk.Status, st)
	}
}

func TestMemoryBufferCountBound(t *testing.T) {
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
		for _, key := range []StreamKey{recKey("42"), recKey("42").collectionKey()} {
			t.Run(fmt.Sprintf("%s/record=%v", tc.name, key.ID != ""), func(t *testing.T) {
				b := NewMemoryBuffer(MemoryBufferConfig{Size: tc.size})
				n := tc.keep + 50
				evs, seqs := appendAll(t, b, key, "e", n, time.Now)
				oldest := n - tc.keep // index of the oldest kept event
				for i := range oldest {
					wantStatus(t, since(t, b, key, evs[i].ETag), LookupUnknown)
				}
				if oldest < n-1 {
					wantFound(t, since(t, b, key, evs[oldest].ETag), seqs[oldest], evs[oldest+1:], seqs[oldest+1:])
					wantFound(t, since(t, b, key, evs[n-2].ETag), seqs[n-2], evs[n-1:], seqs[n-1:])
				}
				lk := since(t, b, key, evs[n-1].ETag)
				if lk.Status != LookupUpToDate || lk.Seq != seqs[n-1] {
					t.Fatalf("newest: %v at %d, want up to date at %d", lk.Status, lk.Seq, seqs[n-1])
				}
				if streams, _ := b.Stats(); streams != 1 {
					t.Fatalf("%d streams", streams)
				}
			})
		}
	}
}

func TestMemoryBufferAgeBound(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
	b := NewMemoryBuffer(MemoryBufferConfig{MaxAge: time.Minute, Now: clock.Now})
	key := recKey("42")
	var evs []*Event
	var seqs []uint64
	for _, step := range []time.Duration{0, 30 * time.Second, 20 * time.Second} { // at 0 s, 30 s, 50 s
		clock.advance(step)
		e, s := appendAll(t, b, key, fmt.Sprint("t", len(evs), "-"), 1, clock.Now)
		evs, seqs = append(evs, e...), append(seqs, s...)
	}
	wantFound(t, since(t, b, key, evs[0].ETag), seqs[0], evs[1:], seqs[1:])

	clock.advance(20 * time.Second) // 70 s: the first is over a minute old
	wantStatus(t, since(t, b, key, evs[0].ETag), LookupUnknown)
	wantFound(t, since(t, b, key, evs[1].ETag), seqs[1], evs[2:], seqs[2:])

	clock.advance(10 * time.Minute) // every entry aged out
	wantStatus(t, since(t, b, key, evs[1].ETag), LookupUnknown)
	// The newest version is still known: a subscriber at it is up to date.
	lk := since(t, b, key, evs[2].ETag)
	if lk.Status != LookupUpToDate || lk.Seq != seqs[2] {
		t.Fatalf("head after ageing out: %v at %d, want up to date at %d", lk.Status, lk.Seq, seqs[2])
	}
}

func TestMemoryBufferAgeBoundHeadThenNext(t *testing.T) {
	// A resume point that aged out, but is the head, followed by a new
	// event: the head alone is not enough to replay the new one, so the
	// answer must not claim up to date.
	clock := &fakeClock{now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
	b := NewMemoryBuffer(MemoryBufferConfig{MaxAge: time.Minute, Now: clock.Now})
	key := recKey("42")
	old, _ := appendAll(t, b, key, "old", 1, clock.Now)
	clock.advance(time.Hour)
	newer, newSeqs := appendAll(t, b, key, "new", 1, clock.Now)
	lk := since(t, b, key, old[0].ETag)
	if lk.Status == LookupUpToDate {
		t.Fatal("an old version is reported up to date after a newer event")
	}
	if lk.Status == LookupFound {
		wantFound(t, lk, lk.Seq, newer, newSeqs)
	}
	up := since(t, b, key, newer[0].ETag)
	if up.Status != LookupUpToDate || up.Seq != newSeqs[0] {
		t.Fatalf("newest: %v at %d", up.Status, up.Seq)
	}
}

func TestMemoryBufferMemoryCap(t *testing.T) {
	a, bk, c, d := recKey("a"), recKey("b"), recKey("c"), recKey("d")
	sz := bufEvent(a, "a000", time.Now()).size() // every test event has this size
	// Room for exactly six events.
	b := NewMemoryBuffer(MemoryBufferConfig{MaxBytes: 6 * sz})
	as, aSeqs := appendAll(t, b, a, "a", 2, time.Now)
	bs, _ := appendAll(t, b, bk, "b", 2, time.Now)
	cs, cSeqs := appendAll(t, b, c, "c", 2, time.Now)
	if streams, bytes := b.Stats(); streams != 3 || bytes != 6*sz {
		t.Fatalf("stats %d streams, %d bytes; want 3, %d", streams, bytes, 6*sz)
	}
	// a is read (a subscriber resumes on it): b is now the least recently active.
	wantFound(t, since(t, b, a, as[0].ETag), aSeqs[0], as[1:], aSeqs[1:])
	ds, dSeqs := appendAll(t, b, d, "d", 1, time.Now)
	wantStatus(t, since(t, b, bk, bs[0].ETag), LookupUnknown)
	wantStatus(t, since(t, b, bk, bs[1].ETag), LookupUnknown)
	wantFound(t, since(t, b, a, as[0].ETag), aSeqs[0], as[1:], aSeqs[1:])
	wantFound(t, since(t, b, c, cs[0].ETag), cSeqs[0], cs[1:], cSeqs[1:])
	if lk := since(t, b, d, ds[0].ETag); lk.Status != LookupUpToDate || lk.Seq != dSeqs[0] {
		t.Fatalf("d: %v", lk.Status)
	}
	if streams, bytes := b.Stats(); streams != 3 || bytes != 5*sz {
		t.Fatalf("stats %d streams, %d bytes; want 3, %d", streams, bytes, 5*sz)
	}
	// Activity order now: a (most recent), c, d. Writes make a stream
	// active too: d's new events evict c, the least recently active.
	since(t, b, c, cs[0].ETag)
	since(t, b, a, as[0].ETag)
	dd, ddSeqs := appendAll(t, b, d, "x", 2, time.Now) // same size as the others
	if streams, bytes := b.Stats(); streams != 2 || bytes != 5*sz {
		t.Fatalf("stats %d streams, %d bytes; want 2, %d", streams, bytes, 5*sz)
	}
	wantStatus(t, since(t, b, c, cs[0].ETag), LookupUnknown)
	wantFound(t, since(t, b, a, as[0].ETag), aSeqs[0], as[1:], aSeqs[1:])
	wantFound(t, since(t, b, d, ds[0].ETag), dSeqs[0], dd, ddSeqs)
}

func TestMemoryBufferMemoryCapSingleStream(t *testing.T) {
	key := recKey("big")
	sz := bufEvent(key, "e000", time.Now()).size()
	b := NewMemoryBuffer(MemoryBufferConfig{MaxBytes: 2 * sz})
	evs, seqs := appendAll(t, b, key, "e", 5, time.Now)
	// One stream alone over the cap keeps its newest events.
	wantStatus(t, since(t, b, key, evs[2].ETag), LookupUnknown)
	wantFound(t, since(t, b, key, evs[3].ETag), seqs[3], evs[4:], seqs[4:])
	if _, bytes := b.Stats(); bytes > 2*sz {
		t.Fatalf("%d bytes over the cap of %d", bytes, 2*sz)
	}
}

func TestMemoryBufferInvalidate(t *testing.T) {
	b := NewMemoryBuffer(MemoryBufferConfig{})
	posts := recKey("1")
	other := StreamKey{Tenant: DefaultTenant, Collection: "pages", ID: "1"}
	otherTenant := StreamKey{Tenant: "t2", Collection: "posts", ID: "1"}
	keys := []StreamKey{posts, posts.collectionKey(), recKey("2"), other, other.collectionKey(), otherTenant, otherTenant.collectionKey()}
	first := map[StreamKey]*Event{}
	var lastSeq uint64
	for _, k := range keys {
		evs, seqs := appendAll(t, b, k, k.Tenant+k.Collection+k.ID, 2, time.Now)
		first[k] = evs[0]
		lastSeq = max(lastSeq, seqs[1])
	}
	if err := b.Invalidate(bctx, DefaultTenant, "posts"); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		lk := since(t, b, k, first[k].ETag)
		gone := k.Tenant == DefaultTenant && k.Collection == "posts"
		if gone && lk.Status != LookupUnknown {
			t.Errorf("%+v after Invalidate: %v, want unknown", k, lk.Status)
		}
		if !gone && lk.Status != LookupFound {
			t.Errorf("%+v of another collection or tenant: %v, want found", k, lk.Status)
		}
	}
	if streams, _ := b.Stats(); streams != 4 {
		t.Errorf("%d streams left, want 4", streams)
	}
	// A stream started again never reuses a position: subscribers that
	// passed it would drop the new events.
	_, seqs := appendAll(t, b, posts, "again", 1, time.Now)
	if seqs[0] <= lastSeq {
		t.Errorf("position %d after Invalidate, not above %d", seqs[0], lastSeq)
	}
}

func TestMemoryBufferAmbiguous(t *testing.T) {
	for _, key := range []StreamKey{recKey("42"), recKey("42").collectionKey()} {
		t.Run(fmt.Sprintf("record=%v", key.ID != ""), func(t *testing.T) {
			b := NewMemoryBuffer(MemoryBufferConfig{})
			var evs []*Event
			var seqs []uint64
			for _, tag := range []string{"A", "B", "A", "C"} { // back to A, then on
				ev := bufEvent(key, tag, time.Now())
				seq, err := b.Append(bctx, key, ev)
				if err != nil {
					t.Fatal(err)
				}
				evs, seqs = append(evs, ev), append(seqs, seq)
			}
			wantStatus(t, since(t, b, key, `"A"`), LookupUnknown) // which A?
			wantFound(t, since(t, b, key, `"B"`), seqs[1], evs[2:], seqs[2:])
			wantStatus(t, since(t, b, key, `"C"`), LookupUpToDate)
			wantStatus(t, since(t, b, key, `"Z"`), LookupUnknown)
			wantStatus(t, since(t, b, key, ""), LookupUnknown)

			// Back to A as the newest: a record at its current version is
			// up to date; on a collection stream the client may hold the
			// earlier A and have missed C, another record's event.
			if _, err := b.Append(bctx, key, bufEvent(key, "A", time.Now())); err != nil {
				t.Fatal(err)
			}
			if key.ID != "" {
				wantStatus(t, since(t, b, key, `"A"`), LookupUpToDate)
			} else {
				wantStatus(t, since(t, b, key, `"A"`), LookupUnknown)
			}
		})
	}
}

func TestMemoryBufferLookups(t *testing.T) {
	b := NewMemoryBuffer(MemoryBufferConfig{})
	key := recKey("42")
	wantStatus(t, since(t, b, key, `"x"`), LookupUnknown) // a stream never seen
	evs, seqs := appendAll(t, b, key, "e", 3, time.Now)
	lk := since(t, b, key, evs[0].ETag)
	wantFound(t, lk, seqs[0], evs[1:], seqs[1:])
	lk.Events[0] = Entry{} // the answer is the caller's
	wantFound(t, since(t, b, key, evs[0].ETag), seqs[0], evs[1:], seqs[1:])
	// Streams are separate.
	wantStatus(t, since(t, b, recKey("43"), evs[0].ETag), LookupUnknown)
	for st, s := range map[LookupStatus]string{LookupFound: "found", LookupUpToDate: "up-to-date", LookupUnknown: "unknown"} {
		if st.String() != s {
			t.Errorf("%d.String() = %q, want %q", st, st.String(), s)
		}
	}
}
