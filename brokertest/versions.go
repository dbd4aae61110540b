package brokertest

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
)

// SeedEnv names the environment variable that fixes the seed of the
// suite's randomized subtests (Versions/Concurrent); without it the seed
// is the clock's. A failure message gives the seed that reproduces it.
const SeedEnv = "BROKERTEST_SEED"

// versionEvent is a changed event of rec at version v, ETag "<tag>".
func versionEvent(rec realtime.StreamKey, v uint64, tag string) *realtime.Event {
	ev := event(rec, tag, time.Now())
	ev.Version = v
	return ev
}

// versioned is a node that publishes record events through AppendRecord
// and checks what it answers.
type versioned struct {
	t  *testing.T
	br realtime.Broker
}

// appended publishes ev with mode and fails t unless it was appended.
func (p versioned) appended(ev *realtime.Event, mode realtime.AppendMode) {
	p.t.Helper()
	dup, err := p.br.AppendRecord(p.t.Context(), ev, mode)
	if err != nil || dup {
		p.t.Fatalf("AppendRecord %s version %d mode %v: dup=%v, %v; want appended", ev.ETag, ev.Version, mode, dup, err)
	}
}

// duplicate publishes ev with mode and fails t unless it was reported a
// duplicate.
func (p versioned) duplicate(ev *realtime.Event, mode realtime.AppendMode) {
	p.t.Helper()
	dup, err := p.br.AppendRecord(p.t.Context(), ev, mode)
	if err != nil || !dup {
		p.t.Fatalf("AppendRecord %s version %d mode %v: dup=%v, %v; want a duplicate", ev.ETag, ev.Version, mode, dup, err)
	}
}

// ahead publishes ev without gap and fails t unless it was refused as out
// of order (and not as an outage).
func (p versioned) ahead(ev *realtime.Event) {
	p.t.Helper()
	dup, err := p.br.AppendRecord(p.t.Context(), ev, realtime.AppendInOrder)
	if !errors.Is(err, realtime.ErrOutOfOrder) || errors.Is(err, realtime.ErrUnavailable) || dup {
		p.t.Fatalf("AppendRecord %s version %d: dup=%v, %v; want an error wrapping ErrOutOfOrder (not ErrUnavailable)", ev.ETag, ev.Version, dup, err)
	}
}

// lastUnknown publishes ev with AppendIfLastKnown and fails t unless it
// was refused with an error wrapping ErrLastUnknown (and neither
// ErrOutOfOrder nor ErrUnavailable).
func (p versioned) lastUnknown(ev *realtime.Event) {
	p.t.Helper()
	dup, err := p.br.AppendRecord(p.t.Context(), ev, realtime.AppendIfLastKnown)
	if !errors.Is(err, realtime.ErrLastUnknown) || errors.Is(err, realtime.ErrOutOfOrder) || errors.Is(err, realtime.ErrUnavailable) || dup {
		p.t.Fatalf("AppendRecord %s version %d if-last-known: dup=%v, %v; want an error wrapping ErrLastUnknown (not ErrOutOfOrder nor ErrUnavailable)", ev.ETag, ev.Version, dup, err)
	}
}

// heads returns Since(key, "")'s position of each key: the head, which an
// event not appended leaves where it is.
func heads(t *testing.T, br realtime.Broker, keys ...realtime.StreamKey) []uint64 {
	t.Helper()
	out := make([]uint64, len(keys))
	for i, k := range keys {
		out[i] = since(t, br, k, "").Seq
	}
	return out
}

// wantDelivered appends a sentinel (the next version of rec, next)
// through via and checks that r's deliveries of rec's stream and of its
// collection's are exactly those of appended (the events appended, in
// order, of rec and of other records of its collection), then the
// sentinel: anything else appended before it would have been delivered
// before it.
func wantDelivered(t *testing.T, r *Recorder, via realtime.Broker, rec realtime.StreamKey, next uint64, appended ...*realtime.Event) {
	t.Helper()
	sentinel := versionEvent(rec, next, fmt.Sprint("sentinel-", next))
	versioned{t, via}.appended(sentinel, realtime.AppendInOrder)
	appended = append(appended, sentinel)
	for _, key := range []realtime.StreamKey{rec, collKey(rec)} {
		var want []*realtime.Event
		for _, ev := range appended {
			if ev.Ref == key || key.ID == "" && collKey(ev.Ref) == key {
				want = append(want, ev)
			}
		}
		var got []realtime.Entry
		r.WaitFor(t, fmt.Sprintf("the sentinel of %v", key), func() bool {
			got = r.deliveriesOfLocked(key)
			return len(got) > 0 && got[len(got)-1].Event.ETag == sentinel.ETag || len(got) > len(want)
		})
		if err := sameVersions(got, want); err != "" {
			t.Fatalf("deliveries of the %s stream: %s", kind(key), err)
		}
	}
}

// sameVersions describes how the events of got differ from want ("" when
// they are the same events, ETags and versions, in that order).
func sameVersions(got []realtime.Entry, want []*realtime.Event) string {
	desc := func(es []realtime.Entry) string {
		s := ""
		for _, e := range es {
			s += fmt.Sprintf(" %s@v%d", e.Event.ETag, e.Event.Version)
		}
		return s
	}
	if len(got) != len(want) {
		return fmt.Sprintf("%d events (%s), want %d", len(got), desc(got), len(want))
	}
	for i, e := range got {
		if e.Event.ETag != want[i].ETag || e.Event.Version != want[i].Version {
			return fmt.Sprintf("event %d is %s@v%d, want %s@v%d (all:%s)", i, e.Event.ETag, e.Event.Version, want[i].ETag, want[i].Version, desc(got))
		}
		if d := diffEvent(e.Event, want[i]); d != "" {
			return fmt.Sprintf("event %d: %s", i, d)
		}
	}
	return ""
}

// testVersions checks AppendRecord's version rule (realtime.Broker): per
// record, a version at or below the last one appended is a duplicate, one
// beyond the next is refused unless the mode is AppendGap, an unknown
// record takes any but a version above 1 with AppendIfLastKnown, and
// events without a version are always appended.
func testVersions(t *testing.T, newNodes factory) {
	cfg := realtime.MemoryBufferConfig{Size: 1000}

	// setup starts two nodes, a watching the record's and the collection's
	// streams of rec.
	setup := func(t *testing.T) (*nodes, realtime.StreamKey, versioned, versioned) {
		n := start(t, newNodes, cfg)
		rec := recKey("v1")
		watch(t, n.a, rec)
		watch(t, n.a, collKey(rec))
		return n, rec, versioned{t, n.a}, versioned{t, n.b}
	}

	t.Run("DuplicateAndStaleDropped", func(t *testing.T) {
		n, rec, a, b := setup(t)
		v1, v2 := versionEvent(rec, 1, "one"), versionEvent(rec, 2, "two")
		a.appended(v1, realtime.AppendInOrder)
		b.appended(v2, realtime.AppendInOrder)
		before := heads(t, n.b, rec, collKey(rec))
		a.duplicate(v2, realtime.AppendInOrder)                              // the same event again
		b.duplicate(versionEvent(rec, 2, "two-bis"), realtime.AppendInOrder) // another event at the same version
		a.duplicate(versionEvent(rec, 1, "stale"), realtime.AppendInOrder)   // an older version
		b.duplicate(versionEvent(rec, 1, "stale-gap"), realtime.AppendGap)   // gap allows jumps, not going back
		if after := heads(t, n.a, rec, collKey(rec)); after[0] != before[0] || after[1] != before[1] {
			t.Fatalf("heads (record, collection) moved from %v to %v: a duplicate was stored", before, after)
		}
		wantUpToDate(t, since(t, n.a, rec, v2.ETag), before[0])
		wantDelivered(t, n.ra, n.b, rec, 3, v1, v2)
	})

	t.Run("AheadRefused", func(t *testing.T) {
		n, rec, a, b := setup(t)
		v1 := versionEvent(rec, 1, "one")
		a.appended(v1, realtime.AppendInOrder)
		before := heads(t, n.a, rec, collKey(rec))
		b.ahead(versionEvent(rec, 3, "three-early"))
		a.ahead(versionEvent(rec, 1000, "far"))
		if after := heads(t, n.b, rec, collKey(rec)); after[0] != before[0] || after[1] != before[1] {
			t.Fatalf("heads (record, collection) moved from %v to %v: a refused version was stored", before, after)
		}
		// Once the version it follows is in, it is taken.
		v2, v3 := versionEvent(rec, 2, "two"), versionEvent(rec, 3, "three")
		b.appended(v2, realtime.AppendInOrder)
		a.appended(v3, realtime.AppendInOrder)
		wantDelivered(t, n.ra, n.b, rec, 4, v1, v2, v3)
	})

	t.Run("GapAppendsTheJump", func(t *testing.T) {
		n, rec, a, b := setup(t)
		v1, v4, v5 := versionEvent(rec, 1, "one"), versionEvent(rec, 4, "four"), versionEvent(rec, 5, "five")
		a.appended(v1, realtime.AppendInOrder)
		b.appended(v4, realtime.AppendGap) // 2 and 3 will never be published
		a.appended(v5, realtime.AppendInOrder)
		b.duplicate(versionEvent(rec, 3, "three-late"), realtime.AppendGap)
		a.duplicate(versionEvent(rec, 4, "four-again"), realtime.AppendGap)
		b.ahead(versionEvent(rec, 7, "seven")) // gap is per call
		v6 := versionEvent(rec, 6, "six")
		b.appended(v6, realtime.AppendGap) // gap with no jump: the next one
		wantDelivered(t, n.ra, n.a, rec, 7, v1, v4, v5, v6)
	})

	t.Run("UnknownRecordTakesAnyVersion", func(t *testing.T) {
		n, rec, a, b := setup(t)
		v7, v8 := versionEvent(rec, 7, "seven"), versionEvent(rec, 8, "eight")
		a.appended(v7, realtime.AppendInOrder) // never appended before: taken
		b.appended(v8, realtime.AppendInOrder)
		a.duplicate(versionEvent(rec, 7, "seven-again"), realtime.AppendInOrder)
		// Versions are per record: another record of the collection starts anew.
		other := recKey("v2")
		o3, o4 := versionEvent(other, 3, "other-three"), versionEvent(other, 4, "other-four")
		b.appended(o3, realtime.AppendInOrder)
		b.appended(o4, realtime.AppendInOrder)
		a.duplicate(versionEvent(other, 3, "other-three-again"), realtime.AppendInOrder)
		a.ahead(versionEvent(rec, 10, "ten"))
		wantDelivered(t, n.ra, n.b, rec, 9, v7, v8, o3, o4)
	})

	t.Run("IfLastKnown", func(t *testing.T) {
		// AppendIfLastKnown refuses a version above 1 of a record whose
		// last version is unknown (its predecessor may be published
		// later), and is AppendInOrder otherwise.
		n, rec, a, b := setup(t)
		before := heads(t, n.a, rec, collKey(rec))
		a.lastUnknown(versionEvent(rec, 3, "three-unknown")) // never appended
		b.lastUnknown(versionEvent(rec, 2, "two-unknown"))
		if after := heads(t, n.b, rec, collKey(rec)); after[0] != before[0] || after[1] != before[1] {
			t.Fatalf("heads (record, collection) moved from %v to %v: a refused version was stored", before, after)
		}
		v1, v2 := versionEvent(rec, 1, "one"), versionEvent(rec, 2, "two")
		a.appended(v1, realtime.AppendIfLastKnown) // version 1 follows none
		b.appended(v2, realtime.AppendIfLastKnown) // the last is known: in order
		a.duplicate(versionEvent(rec, 2, "two-again"), realtime.AppendIfLastKnown)
		a.duplicate(versionEvent(rec, 1, "one-again"), realtime.AppendIfLastKnown)
		if dup, err := b.br.AppendRecord(t.Context(), versionEvent(rec, 4, "four-early"), realtime.AppendIfLastKnown); !errors.Is(err, realtime.ErrOutOfOrder) || dup {
			t.Fatalf("AppendRecord version 4 after 2, if-last-known: dup=%v, %v; want an error wrapping ErrOutOfOrder", dup, err)
		}
		u := versionEvent(rec, 0, "plain")
		a.appended(u, realtime.AppendIfLastKnown) // without a version: always appended
		// Another record of the collection, its last unknown: refused
		// until published without the mode.
		other := recKey("v2")
		b.lastUnknown(versionEvent(other, 5, "other-five-unknown"))
		o5, o6 := versionEvent(other, 5, "other-five"), versionEvent(other, 6, "other-six")
		b.appended(o5, realtime.AppendInOrder)
		a.appended(o6, realtime.AppendIfLastKnown)
		wantDelivered(t, n.ra, n.b, rec, 3, v1, v2, u, o5, o6)
	})

	t.Run("IfLastKnownForgotten", func(t *testing.T) {
		// A last version forgotten (Invalidate) is unknown again.
		n, rec, a, b := setup(t)
		v1, v2 := versionEvent(rec, 1, "one"), versionEvent(rec, 2, "two")
		a.appended(v1, realtime.AppendIfLastKnown)
		b.appended(v2, realtime.AppendIfLastKnown)
		n.ra.WaitDeliveries(t, rec, 2)
		if err := n.b.Invalidate(t.Context(), rec.Tenant, rec.Collection); err != nil {
			t.Fatalf("Invalidate: %v", err)
		}
		a.lastUnknown(versionEvent(rec, 4, "four-unknown"))
		v3, v4 := versionEvent(rec, 3, "three"), versionEvent(rec, 4, "four")
		b.appended(v3, realtime.AppendInOrder) // the publisher checked: taken as the first known
		a.appended(v4, realtime.AppendIfLastKnown)
		wantDelivered(t, n.ra, n.b, rec, 5, v1, v2, v3, v4)
	})

	t.Run("UnknownModeRefused", func(t *testing.T) {
		// A mode that is none of the constants is a bad request: nothing
		// appended, the record's order untouched.
		n, rec, a, _ := setup(t)
		v1 := versionEvent(rec, 1, "one")
		for _, ev := range []*realtime.Event{v1, versionEvent(rec, 0, "plain")} {
			dup, err := n.a.AppendRecord(t.Context(), ev, realtime.AppendIfLastKnown+1)
			if !errors.Is(err, realtime.ErrBadRequest) || errors.Is(err, realtime.ErrUnavailable) || dup {
				t.Fatalf("AppendRecord with mode %d: dup=%v, %v; want an error wrapping ErrBadRequest", realtime.AppendIfLastKnown+1, dup, err)
			}
		}
		a.appended(v1, realtime.AppendInOrder)
		wantDelivered(t, n.ra, n.b, rec, 2, v1)
	})

	t.Run("LargeVersions", func(t *testing.T) {
		// Versions beyond 2^53 (where a float64 loses units) and up to the
		// largest uint64 compare exactly.
		n, rec, a, b := setup(t)
		const big = uint64(1) << 53
		e0, e1 := versionEvent(rec, big, "big"), versionEvent(rec, big+1, "big+1")
		a.appended(e0, realtime.AppendInOrder) // unknown record: taken
		b.appended(e1, realtime.AppendInOrder)
		a.duplicate(versionEvent(rec, big+1, "big+1-again"), realtime.AppendInOrder)
		b.ahead(versionEvent(rec, big+3, "big+3"))
		top := recKey("v-top")
		m1, m := versionEvent(top, math.MaxUint64-1, "max-1"), versionEvent(top, math.MaxUint64, "max")
		a.appended(m1, realtime.AppendInOrder)
		b.appended(m, realtime.AppendInOrder)
		a.duplicate(versionEvent(top, math.MaxUint64, "max-again"), realtime.AppendInOrder)
		b.duplicate(versionEvent(top, math.MaxUint64, "max-gap"), realtime.AppendGap)
		wantDelivered(t, n.ra, n.b, rec, big+2, e0, e1, m1, m)
	})

	t.Run("WithoutVersionUnaffected", func(t *testing.T) {
		n, rec, a, b := setup(t)
		v1, v2 := versionEvent(rec, 1, "one"), versionEvent(rec, 2, "two")
		a.appended(v1, realtime.AppendInOrder)
		b.appended(v2, realtime.AppendInOrder)
		// Version 0: always appended, twice the same event included, and
		// the record's last version stays 2.
		u1, u2 := versionEvent(rec, 0, "plain"), versionEvent(rec, 0, "plain")
		a.appended(u1, realtime.AppendInOrder)
		b.appended(u2, realtime.AppendInOrder)
		a.duplicate(versionEvent(rec, 2, "two-again"), realtime.AppendInOrder)
		b.ahead(versionEvent(rec, 4, "four"))
		wantDelivered(t, n.ra, n.a, rec, 3, v1, v2, u1, u2)
	})

	t.Run("ForgottenByInvalidate", func(t *testing.T) {
		// Invalidate forgets the record's stream, its last version with it
		// (a bulk write may have moved the versions): any version is taken
		// next, and the streams flow on without a Gap.
		n, rec, a, b := setup(t)
		v1, v2, v5 := versionEvent(rec, 1, "one"), versionEvent(rec, 2, "two"), versionEvent(rec, 5, "five")
		a.appended(v1, realtime.AppendInOrder)
		b.appended(v2, realtime.AppendInOrder)
		n.ra.WaitDeliveries(t, rec, 2)
		if err := n.b.Invalidate(t.Context(), rec.Tenant, rec.Collection); err != nil {
			t.Fatalf("Invalidate: %v", err)
		}
		a.appended(v5, realtime.AppendInOrder)
		b.duplicate(versionEvent(rec, 5, "five-again"), realtime.AppendInOrder)
		wantDelivered(t, n.ra, n.b, rec, 6, v1, v2, v5)
	})

	t.Run("SinceReportsVersion", func(t *testing.T) {
		// A resume point's record version comes with Since: the replay
		// must go on from the next version.
		n, rec, a, _ := setup(t)
		v1, v2, v3 := versionEvent(rec, 1, "one"), versionEvent(rec, 2, "two"), versionEvent(rec, 3, "three")
		for _, ev := range []*realtime.Event{v1, v2, v3} {
			a.appended(ev, realtime.AppendInOrder)
		}
		if lk := since(t, n.b, rec, v1.ETag); lk.Status != realtime.LookupFound || lk.Version != 1 {
			t.Fatalf("Since(version 1) = %v, version %d; want found, version 1", lk.Status, lk.Version)
		}
		if lk := since(t, n.b, rec, v3.ETag); lk.Status != realtime.LookupUpToDate || lk.Version != 3 {
			t.Fatalf("Since(version 3, the head) = %v, version %d; want up to date, version 3", lk.Status, lk.Version)
		}
	})
	t.Run("SinceFindsPrevETag", func(t *testing.T) {
		// A subscriber holding a version from a snapshot (its ETag is no
		// entry's) resumes from the entry whose PrevETag it is, on a
		// record's stream: exactly, on any node. On the collection's
		// stream the same ETag is unknown (other records' events may be
		// missing before it).
		n, rec, a, _ := setup(t)
		v4, v5, v6 := versionEvent(rec, 4, "four"), versionEvent(rec, 5, "five"), versionEvent(rec, 6, "six")
		v4.PrevETag, v5.PrevETag, v6.PrevETag = `"three"`, v4.ETag, v5.ETag
		for _, ev := range []*realtime.Event{v4, v5, v6} {
			a.appended(ev, realtime.AppendInOrder)
		}
		for _, br := range []realtime.Broker{n.a, n.b} {
			lk := since(t, br, rec, `"three"`)
			if lk.Status != realtime.LookupFound || lk.Version != 3 {
				t.Fatalf("Since(the snapshot before version 4) = %v, version %d; want found, version 3", lk.Status, lk.Version)
			}
			if d := sameVersions(lk.Events, []*realtime.Event{v4, v5, v6}); d != "" {
				t.Fatalf("Since(the snapshot before version 4): %s", d)
			}
			if lk := since(t, br, rec, v4.ETag); lk.Status != realtime.LookupFound || lk.Version != 4 || len(lk.Events) != 2 {
				t.Fatalf("Since(version 4) = %v, version %d, %d events; want found, version 4, 2 events", lk.Status, lk.Version, len(lk.Events))
			}
			if lk := since(t, br, collKey(rec), `"three"`); lk.Status != realtime.LookupUnknown {
				t.Fatalf("Since(the snapshot) on the collection's stream = %v; want unknown", lk.Status)
			}
		}
	})
	t.Run("Concurrent", func(t *testing.T) { testVersionsConcurrent(t, newNodes) })
}

// seed returns the seed of a randomized subtest (SeedEnv, else the clock)
// and logs it when t fails.
func seed(t *testing.T) uint64 {
	t.Helper()
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv(SeedEnv); v != "" {
		var err error
		if s, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("%s=%q: %v", SeedEnv, v, err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d: %s=%d reruns it", s, SeedEnv, s)
		}
	})
	return s
}

// testVersionsConcurrent: once version 1 of a record is in (before it, any
// version would be taken), several goroutines on both nodes publish its
// versions 1..N, in shuffled order, some versions twice; a version refused
// as out of order is retried after the worker's others. Each version is
// appended exactly once, and both nodes get every version once, in order,
// on the record's and on the collection's stream.
func testVersionsConcurrent(t *testing.T, newNodes factory) {
	s := seed(t)
	rng := rand.New(rand.NewPCG(s, s>>32|1))
	failf := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d (%s=%d reruns it): "+format, append([]any{s, SeedEnv, s}, args...)...)
	}
	n := start(t, newNodes, realtime.MemoryBufferConfig{Size: 1000})
	rec := recKey("concurrent")
	keys := []realtime.StreamKey{rec, collKey(rec)}
	for _, br := range []realtime.Broker{n.a, n.b} {
		for _, k := range keys {
			watch(t, br, k)
		}
	}
	const versions, workers = 60, 6
	queues := make([][]uint64, workers)
	for v := uint64(1); v <= versions; v++ {
		w := rng.IntN(workers)
		queues[w] = append(queues[w], v)
		if rng.IntN(3) == 0 { // published twice: one is a duplicate
			w2 := rng.IntN(workers)
			queues[w2] = append(queues[w2], v)
		}
	}
	for _, q := range queues {
		rng.Shuffle(len(q), func(i, j int) { q[i], q[j] = q[j], q[i] })
	}
	evs := make([]*realtime.Event, versions+2)
	for v := range evs {
		evs[v] = versionEvent(rec, uint64(v), fmt.Sprint("c", v))
	}
	var appended [versions + 1]atomic.Int32
	versioned{t, n.a}.appended(evs[1], realtime.AppendInOrder)
	appended[1].Add(1)
	errs := make(chan error, workers)
	deadline := time.Now().Add(WaitTimeout)
	var wg sync.WaitGroup
	for w, q := range queues {
		br := []realtime.Broker{n.a, n.b}[w%2]
		wg.Go(func() {
			for len(q) > 0 {
				var retry []uint64
				for _, v := range q {
					dup, err := br.AppendRecord(t.Context(), evs[v], realtime.AppendInOrder)
					switch {
					case errors.Is(err, realtime.ErrOutOfOrder):
						retry = append(retry, v)
					case err != nil:
						errs <- fmt.Errorf("worker %d, version %d: %w", w, v, err)
						return
					case !dup:
						appended[v].Add(1)
					}
				}
				if len(retry) == len(q) { // none taken: the others first
					if time.Now().After(deadline) {
						errs <- fmt.Errorf("worker %d: versions %v never taken", w, retry)
						return
					}
					time.Sleep(time.Millisecond)
				}
				q = retry
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		failf("AppendRecord: %v", err)
	}
	for v := 1; v <= versions; v++ {
		if c := appended[v].Load(); c != 1 {
			failf("version %d appended %d times, want once", v, c)
		}
	}
	// The sentinel, next version: every delivery before it is checked.
	versioned{t, n.b}.appended(evs[versions+1], realtime.AppendInOrder)
	for name, r := range map[string]*Recorder{"a": n.ra, "b": n.rb} {
		for _, key := range keys {
			var got []realtime.Entry
			r.WaitFor(t, fmt.Sprintf("version %d on %v at node %s", versions+1, key, name), func() bool {
				got = r.deliveriesOfLocked(key)
				return len(got) > versions || len(got) > 0 && got[len(got)-1].Event.Version == versions+1
			})
			if d := sameVersions(got, evs[1:]); d != "" {
				failf("node %s, %s stream: %s", name, kind(key), d)
			}
		}
	}
}
