package gormhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
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

// lostCommit is a gorm.Tx whose COMMIT reports a failure after committing
// (commit true) or after rolling back: a connection lost during COMMIT,
// outcome unknown to the client.
type lostCommit struct {
	gorm.Tx
	commit bool
}

func (l lostCommit) Commit() error {
	if l.commit {
		_ = l.Tx.Commit()
	} else {
		_ = l.Tx.Rollback()
	}
	return errors.New("connection reset during COMMIT")
}

type countingPub struct {
	mu       sync.Mutex
	events   []string
	resyncs  int
	versions []uint64
}

func (c *countingPub) Publish(_ context.Context, p realtime.Publication) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, p.Event+" "+p.Collection+"/"+p.ID)
	c.versions = append(c.versions, p.Version)
	return `"x"`, nil
}

func (c *countingPub) Resync(context.Context, string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resyncs++
	return nil
}

type post struct {
	ID    uint `gorm:"primaryKey"`
	Title string
}

// TestCommitFailure: a COMMIT that fails publishes nothing at commit time
// and resyncs nothing. If it did commit, its rows are in the outbox and
// the drainer publishes them exactly (the version taken in it); if it did
// not, nothing is left and no version was taken.
func TestCommitFailure(t *testing.T) {
	for _, committed := range []bool{false, true} {
		t.Run(fmt.Sprint("committed=", committed), func(t *testing.T) {
			db, err := gorm.Open(sqlite.Open(filepath.Join(t.TempDir(), "t.db")+"?_pragma=busy_timeout(5000)"),
				&gorm.Config{Logger: logger.Discard})
			if err != nil {
				t.Fatal(err)
			}
			sqlDB, _ := db.DB()
			t.Cleanup(func() { _ = sqlDB.Close() })
			if err := db.AutoMigrate(&post{}); err != nil {
				t.Fatal(err)
			}
			pub := &countingPub{}
			h := New(pub, Watch(&post{}, "posts"), WithLogger(slog.New(slog.DiscardHandler)),
				WithOutbox(OutboxConfig{Interval: 5 * time.Millisecond, Grace: 10 * time.Millisecond}))
			if err := db.Use(h); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = h.Close(context.Background()) })

			tx := db.Begin()
			ht, _ := txOf(tx.Statement.ConnPool)
			if ht == nil {
				t.Fatal("not a hook transaction")
			}
			ht.Tx = lostCommit{Tx: ht.Tx, commit: committed}
			if err := tx.Create(&post{Title: "a"}).Error; err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit().Error; err == nil {
				t.Fatal("the failed COMMIT returned no error")
			}
			pub.mu.Lock()
			n, r := len(pub.events), pub.resyncs
			pub.mu.Unlock()
			if n != 0 || r != 0 {
				t.Fatalf("%d events, %d resyncs at commit; want none", n, r)
			}
			if !committed {
				time.Sleep(50 * time.Millisecond)
				var rows, versions int64
				db.Table(DefaultOutboxTable).Count(&rows)
				db.Table(DefaultVersionTable).Count(&versions)
				if rows != 0 || versions != 0 || len(pub.events) != 0 {
					t.Fatalf("rolled back: %d rows, %d versions, events %v", rows, versions, pub.events)
				}
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				pub.mu.Lock()
				n := len(pub.events)
				pub.mu.Unlock()
				if n > 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			pub.mu.Lock()
			defer pub.mu.Unlock()
			if !slices.Equal(pub.events, []string{"snapshot posts/1"}) || !slices.Equal(pub.versions, []uint64{1}) {
				t.Fatalf("drained %v versions %v; want snapshot posts/1 at version 1", pub.events, pub.versions)
			}
		})
	}
}
