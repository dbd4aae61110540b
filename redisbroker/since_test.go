package redisbroker

// Helpers for the Redis buffer's tests, and the lookups that only Redis's
// key syntax makes interesting. The Since semantics themselves (count and
// age bounds, the head kept, Invalidate, ambiguous ETags) are checked by
// the root's conformance suite, brokertest, in TestConformance.

import (
	"context"
	"encoding/json"
	"fmt"
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
