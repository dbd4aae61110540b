package brokertest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
)

// testSince re-expresses the Buffer cases of the root package's
// buffer_test.go through a Broker: events appended through both nodes,
// looked up through either.
func testSince(t *testing.T, newNodes factory) {
	noCfg := realtime.MemoryBufferConfig{}

	t.Run("UnknownStream", func(t *testing.T) {
		n := start(t, newNodes, noCfg)
		wantStatus(t, since(t, n.a, recKey("1"), `"x"`), realtime.LookupUnknown)
		wantStatus(t, since(t, n.b, collKey(recKey("1")), `"x"`), realtime.LookupUnknown)
	})

	for _, key := range bothKinds {
		t.Run("Found/"+kind(key), func(t *testing.T) {
			n := start(t, newNodes, noCfg)
			evs, seqs := appendAll(t, []realtime.Broker{n.a, n.b}, key, "e", 4, time.Now)
			wantFound(t, since(t, n.b, key, evs[0].ETag), seqs[0], evs[1:], seqs[1:])
			wantFound(t, since(t, n.a, key, evs[2].ETag), seqs[2], evs[3:], seqs[3:])
		})
		t.Run("UpToDate/"+kind(key), func(t *testing.T) {
			n := start(t, newNodes, noCfg)
			evs, seqs := appendAll(t, []realtime.Broker{n.a, n.b}, key, "e", 3, time.Now)
			wantUpToDate(t, since(t, n.a, key, evs[2].ETag), seqs[2])
			wantUpToDate(t, since(t, n.b, key, evs[2].ETag), seqs[2])
		})
		t.Run("UnknownETag/"+kind(key), func(t *testing.T) {
			n := start(t, newNodes, noCfg)
			appendAll(t, []realtime.Broker{n.a, n.b}, key, "e", 3, time.Now)
			wantStatus(t, since(t, n.b, key, `"Z"`), realtime.LookupUnknown)
			wantStatus(t, since(t, n.b, key, `W/"e000"`), realtime.LookupUnknown)
		})
		t.Run("AnswerIsTheCallers/"+kind(key), func(t *testing.T) {
			n := start(t, newNodes, noCfg)
			evs, seqs := appendAll(t, []realtime.Broker{n.a}, key, "e", 3, time.Now)
			lk := since(t, n.b, key, evs[0].ETag)
			wantFound(t, lk, seqs[0], evs[1:], seqs[1:])
			lk.Events[0] = realtime.Entry{}
			wantFound(t, since(t, n.b, key, evs[0].ETag), seqs[0], evs[1:], seqs[1:])
		})
		t.Run("EmptyLastID/"+kind(key), func(t *testing.T) {
			// A subscriber without a resume point starts at the head.
			n := start(t, newNodes, noCfg)
			lk := since(t, n.a, key, "")
			wantStatus(t, lk, realtime.LookupUnknown)
			_, seqs := appendAll(t, []realtime.Broker{n.a, n.b}, key, "e", 3, time.Now)
			if seqs[0] <= lk.Seq {
				t.Fatalf("never-seen stream: Since(\"\") at %d, first position %d not above it", lk.Seq, seqs[0])
			}
			for _, br := range []realtime.Broker{n.a, n.b} {
				lk := since(t, br, key, "")
				if lk.Status != realtime.LookupUnknown || lk.Seq != seqs[2] {
					t.Fatalf("Since(\"\"): %v at %d, want unknown at the head %d", lk.Status, lk.Seq, seqs[2])
				}
			}
		})
		t.Run("Ambiguous/"+kind(key), func(t *testing.T) {
			n := start(t, newNodes, noCfg)
			var evs []*realtime.Event
			var seqs []uint64
			for i, tag := range []string{"A", "B", "A", "C"} { // back to A, then on
				ev := event(key, tag, time.Now())
				evs, seqs = append(evs, ev), append(seqs, appendOne(t, []realtime.Broker{n.a, n.b}[i%2], key, ev))
			}
			wantStatus(t, since(t, n.a, key, `"A"`), realtime.LookupUnknown) // which A?
			wantFound(t, since(t, n.a, key, `"B"`), seqs[1], evs[2:], seqs[2:])
			wantUpToDate(t, since(t, n.b, key, `"C"`), seqs[3])
			wantStatus(t, since(t, n.b, key, `"Z"`), realtime.LookupUnknown)

			// Back to A as the newest: a record at its current version is up
			// to date; on a collection stream the client may hold the earlier
			// A and have missed C, another record's event.
			seq := appendOne(t, n.b, key, event(key, "A", time.Now()))
			lk := since(t, n.a, key, `"A"`)
			if key.ID != "" {
				wantUpToDate(t, lk, seq)
			} else {
				wantStatus(t, lk, realtime.LookupUnknown)
			}
		})
	}

	t.Run("StreamsAreSeparate", func(t *testing.T) {
		n := start(t, newNodes, noCfg)
		key := recKey("42")
		evs, _ := appendAll(t, []realtime.Broker{n.a, n.b}, key, "e", 2, time.Now)
		others := []realtime.StreamKey{
			recKey("43"),
			collKey(key), // appended to the record's stream only
			{Tenant: "t2", Collection: key.Collection, ID: key.ID},
			{Tenant: key.Tenant, Collection: "pages", ID: key.ID},
		}
		for _, o := range others {
			if lk := since(t, n.b, o, evs[0].ETag); lk.Status != realtime.LookupUnknown {
				t.Errorf("%v holds another stream's event: %v", o, lk.Status)
			}
		}
	})

	for _, tc := range []struct {
		name string
		size int // 0: the default
		keep int
	}{
		{"Size=default100", 0, 100},
		{"Size=5", 5, 5},
		{"Size=1", 1, 1},
	} {
		for _, key := range bothKinds {
			t.Run("OverSize/"+tc.name+"/"+kind(key), func(t *testing.T) {
				n := start(t, newNodes, realtime.MemoryBufferConfig{Size: tc.size})
				total := tc.keep + 10
				evs, seqs := appendAll(t, []realtime.Broker{n.a, n.b}, key, "e", total, time.Now)
				oldest := total - tc.keep // index of the oldest kept event
				for i := range oldest {
					if lk := since(t, n.a, key, evs[i].ETag); lk.Status != realtime.LookupUnknown {
						t.Fatalf("event %d of %d with Size %d: %v, want unknown", i, total, tc.keep, lk.Status)
					}
				}
				if oldest < total-1 {
					wantFound(t, since(t, n.b, key, evs[oldest].ETag), seqs[oldest], evs[oldest+1:], seqs[oldest+1:])
					wantFound(t, since(t, n.a, key, evs[total-2].ETag), seqs[total-2], evs[total-1:], seqs[total-1:])
				}
				wantUpToDate(t, since(t, n.b, key, evs[total-1].ETag), seqs[total-1])
			})
		}
	}

	for _, key := range bothKinds {
		// Needs a settable clock.
		t.Run("AgedOut/"+kind(key), func(t *testing.T) {
			clock := newClock()
			n := start(t, newNodes, realtime.MemoryBufferConfig{MaxAge: time.Minute, Now: clock.Now})
			var evs []*realtime.Event
			var seqs []uint64
			for i, step := range []time.Duration{0, 30 * time.Second, 20 * time.Second} { // at 0 s, 30 s, 50 s
				clock.advance(step)
				ev := event(key, fmt.Sprint("t", i), clock.Now())
				evs, seqs = append(evs, ev), append(seqs, appendOne(t, []realtime.Broker{n.a, n.b}[i%2], key, ev))
			}
			wantFound(t, since(t, n.a, key, evs[0].ETag), seqs[0], evs[1:], seqs[1:])

			clock.advance(20 * time.Second) // 70 s: the first is over a minute old
			wantStatus(t, since(t, n.b, key, evs[0].ETag), realtime.LookupUnknown)
			wantFound(t, since(t, n.b, key, evs[1].ETag), seqs[1], evs[2:], seqs[2:])

			clock.advance(10 * time.Minute) // every entry aged out
			wantStatus(t, since(t, n.a, key, evs[1].ETag), realtime.LookupUnknown)
			lk := since(t, n.a, key, evs[2].ETag)
			if key.ID != "" {
				// The newest version of a record is still known: a subscriber
				// at it is up to date.
				wantUpToDate(t, lk, seqs[2])
			} else {
				// A collection stream has no such rule: the client may have
				// missed events of other records since.
				wantStatus(t, lk, realtime.LookupUnknown)
			}
		})

		// Needs a settable clock.
		t.Run("AgedOutHeadThenNext/"+kind(key), func(t *testing.T) {
			// A resume point that aged out, but was the head, followed by a
			// new event: the answer must not claim up to date.
			clock := newClock()
			n := start(t, newNodes, realtime.MemoryBufferConfig{MaxAge: time.Minute, Now: clock.Now})
			old := event(key, "old", clock.Now())
			appendOne(t, n.a, key, old)
			clock.advance(time.Hour)
			newer := event(key, "new", clock.Now())
			newSeq := appendOne(t, n.b, key, newer)
			lk := since(t, n.a, key, old.ETag)
			switch lk.Status {
			case realtime.LookupUpToDate:
				t.Fatal("an old version is reported up to date after a newer event")
			case realtime.LookupFound:
				wantEntries(t, "events after the aged-out head", lk.Events, []*realtime.Event{newer}, []uint64{newSeq})
			}
			wantUpToDate(t, since(t, n.b, key, newer.ETag), newSeq)
		})
	}
}

// testPositions checks that positions strictly increase per stream and are
// never reused, even after Invalidate.
func testPositions(t *testing.T, newNodes factory) {
	t.Run("StrictlyIncreasePerStream", func(t *testing.T) {
		// Four appenders (two per node) on three streams at once: each sees
		// its own appends of a stream at increasing positions, and no
		// position of a stream is handed out twice.
		n := start(t, newNodes, realtime.MemoryBufferConfig{})
		keys := []realtime.StreamKey{recKey("1"), recKey("2"), collKey(recKey("1"))}
		const workers, per = 4, 25
		got := make([]map[realtime.StreamKey][]uint64, workers)
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			br := []realtime.Broker{n.a, n.b}[w%2]
			got[w] = make(map[realtime.StreamKey][]uint64)
			wg.Go(func() {
				for i := range per {
					for _, k := range keys {
						seq, err := br.Append(t.Context(), k, event(k, fmt.Sprintf("w%d-%03d", w, i), time.Now()))
						if err != nil {
							errs <- err
							return
						}
						got[w][k] = append(got[w][k], seq)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("Append: %v", err)
		}
		for _, k := range keys {
			var all []uint64
			for w := range workers {
				s := got[w][k]
				for i := 1; i < len(s); i++ {
					if s[i] <= s[i-1] {
						t.Fatalf("%v: appender %d got position %d after %d", k, w, s[i], s[i-1])
					}
				}
				all = append(all, s...)
			}
			slices.Sort(all)
			if c := slices.Compact(slices.Clone(all)); len(c) != len(all) {
				t.Fatalf("%v: %d positions handed out for %d appends", k, len(c), len(all))
			}
		}
	})

	t.Run("NotReusedAfterInvalidate", func(t *testing.T) {
		n := start(t, newNodes, realtime.MemoryBufferConfig{})
		rec := recKey("1")
		keys := []realtime.StreamKey{rec, collKey(rec)}
		watch(t, n.a, rec) // positions delivered across the Invalidate strictly increase too (Recorder)
		before := map[realtime.StreamKey][]*realtime.Event{}
		high := map[realtime.StreamKey]uint64{}
		for _, k := range keys {
			evs, seqs := appendAll(t, []realtime.Broker{n.a, n.b}, k, "before", 3, time.Now)
			before[k], high[k] = evs, seqs[2]
		}
		if err := n.b.Invalidate(t.Context(), rec.Tenant, rec.Collection); err != nil {
			t.Fatalf("Invalidate: %v", err)
		}
		for _, k := range keys {
			for _, ev := range before[k] {
				if lk := since(t, n.a, k, ev.ETag); lk.Status != realtime.LookupUnknown {
					t.Fatalf("%v: %s after Invalidate: %v, want unknown", k, ev.ETag, lk.Status)
				}
			}
			for i, br := range []realtime.Broker{n.a, n.b} {
				ev := event(k, fmt.Sprint("after", i), time.Now())
				seq := appendOne(t, br, k, ev)
				if seq <= high[k] {
					t.Fatalf("%v: position %d after Invalidate, not above %d", k, seq, high[k])
				}
				high[k] = seq
				wantUpToDate(t, since(t, n.b, k, ev.ETag), seq)
			}
			wantStatus(t, since(t, n.b, k, before[k][2].ETag), realtime.LookupUnknown)
		}
		n.ra.WaitDeliveries(t, rec, 5)
	})
}

// testInvalidate checks that Invalidate forgets the streams of one
// tenant's collection (the collection's and its records') and only those.
func testInvalidate(t *testing.T, newNodes factory) {
	t.Run("OnlyThatTenantsCollection", func(t *testing.T) {
		n := start(t, newNodes, realtime.MemoryBufferConfig{})
		posts := recKey("1")
		pages := realtime.StreamKey{Tenant: posts.Tenant, Collection: "pages", ID: "1"}
		otherTenant := realtime.StreamKey{Tenant: "t2", Collection: posts.Collection, ID: "1"}
		keys := []realtime.StreamKey{posts, collKey(posts), recKey("2"), pages, collKey(pages), otherTenant, collKey(otherTenant)}
		first := map[realtime.StreamKey]*realtime.Event{}
		for _, k := range keys {
			evs, _ := appendAll(t, []realtime.Broker{n.a, n.b}, k, k.Tenant+k.Collection+k.ID, 2, time.Now)
			first[k] = evs[0]
		}
		if err := n.a.Invalidate(t.Context(), posts.Tenant, posts.Collection); err != nil {
			t.Fatalf("Invalidate: %v", err)
		}
		for _, k := range keys {
			lk := since(t, n.b, k, first[k].ETag)
			gone := k.Tenant == posts.Tenant && k.Collection == posts.Collection
			if gone && lk.Status != realtime.LookupUnknown {
				t.Errorf("%+v after Invalidate: %v, want unknown", k, lk.Status)
			}
			if !gone && lk.Status != realtime.LookupFound {
				t.Errorf("%+v of another collection or tenant: %v, want found", k, lk.Status)
			}
		}
	})
}

// testRecent checks the optional realtime.RecentReader (channel history).
func testRecent(t *testing.T, newNodes factory) {
	n := start(t, newNodes, realtime.MemoryBufferConfig{Size: 5})
	rr, ok := n.a.(realtime.RecentReader)
	if !ok {
		t.Skip("the broker does not implement realtime.RecentReader")
	}
	key := recKey("recent")
	if got, err := rr.Recent(t.Context(), key, 3); err != nil || len(got) != 0 {
		t.Fatalf("Recent of an unknown stream: %v %v", got, err)
	}
	evs, seqs := appendAll(t, []realtime.Broker{n.a, n.b}, key, "r", 7, time.Now)
	for _, c := range []struct{ n, want int }{{3, 3}, {5, 5}, {50, 5}, {0, 0}} {
		got, err := rr.Recent(t.Context(), key, c.n)
		if err != nil {
			t.Fatal(err)
		}
		if c.want == 0 {
			if len(got) != 0 {
				t.Fatalf("Recent(%d): %d entries", c.n, len(got))
			}
			continue
		}
		wantEntries(t, fmt.Sprintf("Recent(%d)", c.n), got, evs[len(evs)-c.want:], seqs[len(seqs)-c.want:])
	}
}
