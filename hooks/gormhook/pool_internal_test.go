package gormhook

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/ginrealtime/realtime"
	"gorm.io/gorm"
)

func TestParseSavepoint(t *testing.T) {
	cases := []struct {
		sql  string
		op   spOp
		name string
	}{
		{"SAVEPOINT sp123", spSet, "sp123"},
		{"savepoint sp1;", spSet, "sp1"},
		{`SAVEPOINT "sp1"`, spSet, "sp1"},
		{"SAVE TRANSACTION sp1", spSet, "sp1"},
		{"SAVE TRAN sp1", spSet, "sp1"},
		{"ROLLBACK TO SAVEPOINT sp1", spRollback, "sp1"},
		{"  rollback to sp1 ", spRollback, "sp1"},
		{"ROLLBACK TRANSACTION sp1", spRollback, "sp1"},
		{"RELEASE SAVEPOINT sp1", spRelease, "sp1"},
		{"RELEASE sp1", spRelease, "sp1"},
		{"ROLLBACK", 0, ""},
		{"SELECT 1", 0, ""},
		{"UPDATE savepoint SET x = 1", 0, ""},
		{"INSERT INTO t VALUES (1)", 0, ""},
	}
	for _, tc := range cases {
		op, name, ok := parseSavepoint(tc.sql)
		if ok != (tc.op != 0) || op != tc.op || (ok && name != tc.name) {
			t.Errorf("parseSavepoint(%q) = %v %q %v, want %v %q", tc.sql, op, name, ok, tc.op, tc.name)
		}
	}
}

// TestSavepointBookkeeping: a rollback to a savepoint drops the changes
// queued since, keeps the savepoint (it can be rolled back to again) and
// drops the savepoints set after it; a release keeps the changes.
func TestSavepointBookkeeping(t *testing.T) {
	tx := &hookTx{}
	add := func(ids ...string) {
		for _, id := range ids {
			tx.add(change{id: id})
		}
	}
	pending := func() []string {
		var out []string
		for _, c := range tx.pending {
			out = append(out, c.id)
		}
		return out
	}
	steps := []struct {
		do   func()
		want []string
	}{
		{func() { add("a") }, []string{"a"}},
		{func() { tx.savepoint(spSet, "s1"); add("b") }, []string{"a", "b"}},
		{func() { tx.savepoint(spSet, "s2"); add("c") }, []string{"a", "b", "c"}},
		{func() { tx.savepoint(spRollback, "S1") }, []string{"a"}},
		{func() { add("d"); tx.savepoint(spRollback, "s2") }, []string{"a", "d"}}, // s2 is gone: no effect
		{func() { tx.savepoint(spRollback, "s1") }, []string{"a"}},                // s1 kept: again
		{func() { tx.savepoint(spSet, "s3"); add("e"); tx.savepoint(spRelease, "s3") }, []string{"a", "e"}},
		{func() { tx.savepoint(spRollback, "s3") }, []string{"a", "e"}}, // released
		{func() { tx.savepoint(spRollback, "s1") }, []string{"a"}},
	}
	for i, s := range steps {
		s.do()
		if got := pending(); !slices.Equal(got, s.want) {
			t.Fatalf("step %d: pending %q, want %q", i, got, s.want)
		}
	}
	if got := tx.take(); len(got) != 1 || len(tx.pending) != 0 || len(tx.marks) != 0 {
		t.Fatalf("take: %v, left %v %v", got, tx.pending, tx.marks)
	}
}

// TestSequencer: a record is not published by a flush numbered below one
// that already published it; entries are pruned once no older flush is in
// flight.
func TestSequencer(t *testing.T) {
	s := newSequencer()
	a, b := s.begin(), s.begin()
	var calls []string
	pub := func(name string) func() { return func() { calls = append(calls, name) } }
	if !s.publish("posts\x001", b, pub("b1")) || s.publish("posts\x001", a, pub("a1")) {
		t.Fatal("the older flush published after the newer one")
	}
	if !s.publish("posts\x002", a, pub("a2")) || !s.publish("posts\x002", b, pub("b2")) || !s.publish("posts\x002", b, pub("b2 again")) {
		t.Fatal("in-order publishes refused")
	}
	if want := []string{"b1", "a2", "b2", "b2 again"}; !slices.Equal(calls, want) {
		t.Fatalf("calls %q, want %q", calls, want)
	}
	s.end(a)
	s.end(b)
	if s.low() != b+1 {
		t.Fatalf("low = %d with nothing in flight, want %d", s.low(), b+1)
	}
	c := s.begin()
	for i := range 64 * (minPruneLimit + 1) * 2 {
		s.publish(string(rune(i)), c, func() {})
	}
	s.end(c)
	d := s.begin()
	for i := range 64 * (minPruneLimit + 1) * 2 {
		s.publish("x"+string(rune(i)), d, func() {})
	}
	s.end(d)
	total := 0
	for i := range s.stripes {
		total += len(s.stripes[i].last)
	}
	if total > 64*4*minPruneLimit {
		t.Fatalf("%d entries kept: not pruned", total)
	}
}

// failingTx is a gorm.Tx whose Commit fails.
type failingTx struct {
	gorm.Tx
	err error
}

func (f failingTx) Commit() error   { return f.err }
func (f failingTx) Rollback() error { return nil }

type resyncRecorder struct {
	mu       sync.Mutex
	resyncs  []string
	publishd int
}

func (r *resyncRecorder) Publish(context.Context, realtime.Publication) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.publishd++
	return `"x"`, nil
}

func (r *resyncRecorder) Resync(ctx context.Context, collection string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resyncs = append(r.resyncs, realtime.TenantFrom(ctx)+"/"+collection)
	return nil
}

// TestCommitFailure: a failed commit publishes no event; when its outcome may
// be unknown the collections it wrote are resynced, once each.
func TestCommitFailure(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want []string
	}{
		{errors.New("connection reset during COMMIT"), []string{"default/posts", "acme/posts", "default/tags"}},
		{sql.ErrTxDone, nil},
	} {
		rec := &resyncRecorder{}
		h := &Hook{pub: rec, log: slog.New(slog.DiscardHandler), seq: newSequencer()}
		posts, tags := &watched{collection: "posts"}, &watched{collection: "tags"}
		tx := &hookTx{Tx: failingTx{err: tc.err}, pool: &hookPool{h: h}, h: h}
		acme := realtime.WithTenant(context.Background(), "acme")
		tx.add(change{ctx: context.Background(), w: posts, event: realtime.EventSnapshot, id: "1", reload: true},
			change{ctx: context.Background(), w: posts, event: realtime.EventDeleted, id: "2"},
			change{ctx: acme, w: posts, event: realtime.EventChanged, id: "3", reload: true},
			change{ctx: context.Background(), w: tags, event: realtime.EventDeleted, id: "a,b"})
		if err := tx.Commit(); !errors.Is(err, tc.err) {
			t.Fatalf("Commit() = %v, want %v", err, tc.err)
		}
		if rec.publishd != 0 || !slices.Equal(rec.resyncs, tc.want) {
			t.Errorf("%v: %d events, resyncs %q; want none and %q", tc.err, rec.publishd, rec.resyncs, tc.want)
		}
	}
}
