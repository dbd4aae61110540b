package brokertest

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
)

// wantNoneBefore checks that r got no event of key appended before it
// watches key again: it Watches key through br, appends a sentinel
// through via, waits for the sentinel and checks that the deliveries of
// key are exactly want (positions wantSeqs) followed by the sentinel. A
// stream's deliveries come in its order, so anything appended before the
// sentinel would have been delivered before it.
func wantNoneBefore(t *testing.T, r *Recorder, br, via realtime.Broker, key realtime.StreamKey, want []*realtime.Event, wantSeqs []uint64) {
	t.Helper()
	watch(t, br, key)
	sentinel := event(key, "sentinel", time.Now())
	seq := appendOne(t, via, key, sentinel)
	got := waitSeq(t, r, key, seq)
	wantEntries(t, fmt.Sprintf("deliveries of %v", key), got, append(slices.Clone(want), sentinel), append(slices.Clone(wantSeqs), seq))
}

// waitSeq waits until key's deliveries hold position seq and returns them.
func waitSeq(t *testing.T, r *Recorder, key realtime.StreamKey, seq uint64) []realtime.Entry {
	t.Helper()
	var got []realtime.Entry
	r.WaitFor(t, fmt.Sprintf("the delivery of %v at %d", key, seq), func() bool {
		got = r.deliveriesOfLocked(key)
		return slices.ContainsFunc(got, func(e realtime.Entry) bool { return e.Seq >= seq })
	})
	return got
}

// testDelivery checks Append's delivery through Node.Deliver.
func testDelivery(t *testing.T, newNodes factory) {
	cfg := realtime.MemoryBufferConfig{Size: 1000}

	for _, key := range bothKinds {
		t.Run("EveryAppendOnceInOrder/"+kind(key), func(t *testing.T) {
			// a watches key; both nodes append. a gets every event once, at
			// the position Append returned, byte-identical; its own appends
			// come back through Deliver too.
			n := start(t, newNodes, cfg)
			watch(t, n.a, key)
			const total = 40
			evs := make([]*realtime.Event, total)
			seqs := make([]uint64, total)
			for i := range total {
				evs[i] = variedEvent(key, fmt.Sprintf("e%03d", i), i)
				seqs[i] = appendOne(t, []realtime.Broker{n.a, n.b}[i%2], key, evs[i])
			}
			got := n.ra.WaitDeliveries(t, key, total)
			wantEntries(t, "deliveries", got[:total], evs, seqs)
			// No duplicate: a later event of the stream comes right after.
			sentinel := event(key, "last", time.Now())
			seq := appendOne(t, n.b, key, sentinel)
			got = waitSeq(t, n.ra, key, seq)
			wantEntries(t, "deliveries", got, append(evs, sentinel), append(seqs, seq))
		})
	}

	t.Run("SameOrderOnBothNodes", func(t *testing.T) {
		// 2×200 appends from 4 goroutines (two per node) on one stream:
		// both nodes get all 400 in one order, that of the positions.
		n := start(t, newNodes, cfg)
		key := recKey("42")
		watch(t, n.a, key)
		watch(t, n.b, key)
		const workers, per = 4, 100
		type appended struct {
			seq uint64
			ev  *realtime.Event
		}
		got := make([][]appended, workers)
		errs := make(chan error, workers)
		var wg sync.WaitGroup
		for w := range workers {
			br := []realtime.Broker{n.a, n.b}[w%2]
			wg.Go(func() {
				for i := range per {
					ev := variedEvent(key, fmt.Sprintf("w%d-%03d", w, i), i)
					seq, err := br.Append(t.Context(), key, ev)
					if err != nil {
						errs <- err
						return
					}
					got[w] = append(got[w], appended{seq, ev})
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("Append: %v", err)
		}
		var all []appended
		for w := range workers {
			all = append(all, got[w]...)
		}
		slices.SortFunc(all, func(x, y appended) int { return cmp.Compare(x.seq, y.seq) })
		evs := make([]*realtime.Event, len(all))
		seqs := make([]uint64, len(all))
		for i, a := range all {
			if i > 0 && a.seq == all[i-1].seq {
				t.Fatalf("position %d handed out twice", a.seq)
			}
			evs[i], seqs[i] = a.ev, a.seq
		}
		for name, r := range map[string]*Recorder{"a": n.ra, "b": n.rb} {
			d := r.WaitDeliveries(t, key, len(all))
			wantEntries(t, "deliveries to node "+name, d[:len(all)], evs, seqs)
		}
		// No duplicate.
		sentinel := event(key, "last", time.Now())
		seq := appendOne(t, n.a, key, sentinel)
		for name, r := range map[string]*Recorder{"a": n.ra, "b": n.rb} {
			d := waitSeq(t, r, key, seq)
			wantEntries(t, "deliveries to node "+name, d, append(slices.Clone(evs), sentinel), append(slices.Clone(seqs), seq))
		}
	})

	t.Run("OnlyWatchedKeys", func(t *testing.T) {
		// a watches one record's stream; events of streams that differ in
		// any part of the key, or of the collection, do not reach it.
		n := start(t, newNodes, cfg)
		key := recKey("1")
		others := []realtime.StreamKey{
			collKey(key),
			recKey("2"),
			{Tenant: "t2", Collection: key.Collection, ID: key.ID},
			{Tenant: key.Tenant, Collection: "pages", ID: key.ID},
		}
		watch(t, n.a, key)
		for _, o := range others {
			appendOne(t, n.b, o, event(o, "other", time.Now()))
			appendOne(t, n.a, o, event(o, "other2", time.Now()))
		}
		ev := event(key, "mine", time.Now())
		seq := appendOne(t, n.b, key, ev)
		wantEntries(t, "deliveries of the watched key", waitSeq(t, n.ra, key, seq), []*realtime.Event{ev}, []uint64{seq})
		for _, o := range others {
			wantNoneBefore(t, n.ra, n.a, n.b, o, nil, nil)
		}
	})

	t.Run("NotWatchingNodeGetsNone", func(t *testing.T) {
		// Watches are per node: a watches, b does not.
		n := start(t, newNodes, cfg)
		key := recKey("1")
		watch(t, n.a, key)
		evs := []*realtime.Event{event(key, "e0", time.Now()), event(key, "e1", time.Now())}
		seqs := []uint64{appendOne(t, n.a, key, evs[0]), appendOne(t, n.b, key, evs[1])}
		n.ra.WaitDeliveries(t, key, 2)
		wantNoneBefore(t, n.rb, n.b, n.a, key, nil, nil)
		got := n.ra.DeliveriesOf(key)
		wantEntries(t, "deliveries to a", got[:2], evs, seqs)
	})

	t.Run("WatchIsCounted", func(t *testing.T) {
		// Two Watches, one Unwatch: still delivered; the second Unwatch
		// stops the deliveries.
		n := start(t, newNodes, cfg)
		key := recKey("1")
		watch(t, n.a, key)
		watch(t, n.a, key)
		unwatch(t, n.a, key)
		e1 := event(key, "e1", time.Now())
		s1 := appendOne(t, n.b, key, e1)
		wantEntries(t, "deliveries after one of two Unwatches", waitSeq(t, n.ra, key, s1), []*realtime.Event{e1}, []uint64{s1})
		unwatch(t, n.a, key)
		appendOne(t, n.b, key, event(key, "e2", time.Now()))
		appendOne(t, n.a, key, event(key, "e3", time.Now()))
		wantNoneBefore(t, n.ra, n.a, n.b, key, []*realtime.Event{e1}, []uint64{s1})
	})
}

// testTopics checks Listen, Unlisten and Publish.
func testTopics(t *testing.T, newNodes factory) {
	t.Run("NoListener", func(t *testing.T) {
		n := start(t, newNodes, realtime.MemoryBufferConfig{})
		publish(t, n.a, "t", "m", 0)
		publish(t, n.b, "t", "m", 0)
	})

	t.Run("PublishReachesListener", func(t *testing.T) {
		n := start(t, newNodes, realtime.MemoryBufferConfig{})
		listen(t, n.a, "topic")
		msg := "m1 " + tricky + "\x00\xff"
		publish(t, n.b, "topic", msg, 1)
		got := n.ra.WaitMessages(t, "topic", 1)
		if len(got) != 1 || string(got[0]) != msg {
			t.Fatalf("a got %q, want [%q]", got, msg)
		}
		// b was not listening when m1 was published: once it listens, it
		// gets the next message only.
		listen(t, n.b, "topic")
		publish(t, n.a, "topic", "m2", 2)
		got = n.rb.WaitMessages(t, "topic", 1)
		if len(got) != 1 || string(got[0]) != "m2" {
			t.Fatalf("b got %q, want [m2]", got)
		}
		if got := n.ra.WaitMessages(t, "topic", 2); len(got) != 2 || string(got[1]) != "m2" {
			t.Fatalf("a got %q, want [m1 m2]", got)
		}
	})

	t.Run("BothListening", func(t *testing.T) {
		n := start(t, newNodes, realtime.MemoryBufferConfig{})
		listen(t, n.a, "topic")
		listen(t, n.b, "topic")
		publish(t, n.a, "topic", "from a", 2)
		publish(t, n.b, "topic", "from b", 2)
		for name, r := range map[string]*Recorder{"a": n.ra, "b": n.rb} {
			got := r.WaitMessages(t, "topic", 2)
			strs := []string{string(got[0]), string(got[1])}
			slices.Sort(strs)
			if len(got) != 2 || strs[0] != "from a" || strs[1] != "from b" {
				t.Fatalf("%s got %q, want both messages once", name, got)
			}
		}
	})

	t.Run("TopicsAreSeparate", func(t *testing.T) {
		n := start(t, newNodes, realtime.MemoryBufferConfig{})
		listen(t, n.a, "one")
		publish(t, n.b, "two", "x", 0)
		publish(t, n.b, "one", "y", 1)
		n.ra.WaitMessages(t, "one", 1)
		if got := n.ra.Messages(); len(got) != 1 || got[0].Topic != "one" || string(got[0].Msg) != "y" {
			t.Fatalf("a got %+v, want only y on one", got)
		}
	})

	t.Run("ListenIsCounted", func(t *testing.T) {
		n := start(t, newNodes, realtime.MemoryBufferConfig{})
		listen(t, n.a, "topic")
		listen(t, n.a, "topic")
		unlisten(t, n.a, "topic")
		publish(t, n.b, "topic", "m1", 1)
		n.ra.WaitMessages(t, "topic", 1)
		unlisten(t, n.a, "topic")
		publish(t, n.b, "topic", "m2", 0)
		// Listening again, a gets the next message and not m2.
		listen(t, n.a, "topic")
		publish(t, n.b, "topic", "m3", 1)
		got := n.ra.WaitMessages(t, "topic", 2)
		if len(got) != 2 || string(got[0]) != "m1" || string(got[1]) != "m3" {
			t.Fatalf("a got %q, want [m1 m3]", got)
		}
	})

	t.Run("PublisherKeepsMsg", func(t *testing.T) {
		// The slice given to Publish stays the publisher's: reusing it
		// after Publish returned does not change the message received.
		n := start(t, newNodes, realtime.MemoryBufferConfig{})
		listen(t, n.a, "topic")
		buf := []byte("original")
		if c, err := n.b.Publish(t.Context(), "topic", buf); err != nil || c != 1 {
			t.Fatalf("Publish: %d nodes, %v", c, err)
		}
		got := n.ra.WaitMessages(t, "topic", 1)
		copy(buf, "OVERWRIT")
		if string(got[0]) != "original" {
			t.Fatalf("a got %q after the publisher reused its slice, want %q", got[0], "original")
		}
	})
}

// testStop checks that no Node call happens once Stop returned, even with
// appends and publishes under way.
func testStop(t *testing.T, newNodes factory) {
	t.Run("NoCallsAfterStop", func(t *testing.T) {
		n := start(t, newNodes, realtime.MemoryBufferConfig{Size: 1000})
		key := recKey("1")
		for _, br := range []realtime.Broker{n.a, n.b} {
			watch(t, br, key)
			listen(t, br, "topic")
		}
		const before, after = 200, 50
		var wg sync.WaitGroup
		errs := make(chan error, 1)
		startStop := make(chan struct{})
		var once sync.Once
		wg.Go(func() { // appends and publishes through b while a stops
			defer once.Do(func() { close(startStop) })
			for i := range before {
				if i == before/4 {
					once.Do(func() { close(startStop) })
				}
				if _, err := n.b.Append(t.Context(), key, event(key, fmt.Sprint("e", i), time.Now())); err != nil {
					errs <- err
					return
				}
				if _, err := n.b.Publish(t.Context(), "topic", []byte("m")); err != nil {
					errs <- err
					return
				}
			}
		})
		<-startStop
		n.stopA(t)
		calls := n.ra.Calls()
		wg.Wait()
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		var last uint64
		for i := range after {
			last = appendOne(t, n.b, key, event(key, fmt.Sprint("after", i), time.Now()))
		}
		publish(t, n.b, "topic", "last", 1) // a stopped: only b receives
		// b got everything: what would reach a has been sent.
		waitSeq(t, n.rb, key, last)
		n.rb.WaitFor(t, "the last message", func() bool {
			m := n.rb.messagesOfLocked("topic")
			return len(m) > 0 && string(m[len(m)-1]) == "last"
		})
		if got := n.ra.Calls(); got != calls {
			t.Fatalf("%d Node calls after Stop returned", got-calls)
		}
	})
}

// testAppendRecord checks AppendRecord: both streams, one order.
func testAppendRecord(t *testing.T, newNodes factory) {
	cfg := realtime.MemoryBufferConfig{Size: 1000}
	t.Run("BothStreamsOneOrder", func(t *testing.T) {
		// Both nodes append records events of one record concurrently; a
		// watches the record's stream, b the collection's: they get every
		// event, in the same order, and Since finds it in both streams.
		n := start(t, newNodes, cfg)
		rec := recKey("77")
		col := collKey(rec)
		watch(t, n.a, rec)
		watch(t, n.b, col)
		const workers, per = 4, 50
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				br := []realtime.Broker{n.a, n.b}[w%2]
				for i := range per {
					ev := event(rec, fmt.Sprintf("w%d-%03d", w, i), time.Now())
					if _, err := br.AppendRecord(t.Context(), ev, realtime.AppendInOrder); err != nil {
						t.Errorf("AppendRecord: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		const total = workers * per
		recGot := n.ra.WaitDeliveries(t, rec, total)
		colGot := n.rb.WaitDeliveries(t, col, total)
		if len(recGot) != total || len(colGot) != total {
			t.Fatalf("deliveries: %d of the record, %d of the collection, want %d each", len(recGot), len(colGot), total)
		}
		for i := range total {
			if recGot[i].Event.ETag != colGot[i].Event.ETag {
				t.Fatalf("delivery %d: record stream has %s, collection stream %s: not one order", i, recGot[i].Event.ETag, colGot[i].Event.ETag)
			}
		}
		first := recGot[0].Event.ETag
		for _, key := range []realtime.StreamKey{rec, col} {
			if lk := since(t, n.a, key, first); lk.Status != realtime.LookupFound || len(lk.Events) != total-1 {
				t.Fatalf("Since(%v, first) = %v with %d events, want found with %d", key, lk.Status, len(lk.Events), total-1)
			}
		}
	})
}
