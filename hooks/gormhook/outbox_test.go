package gormhook_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/hooks/gormhook"
	"github.com/glebarez/sqlite"
	"go.uber.org/goleak"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// flaky is a Publisher that fails with realtime.ErrUnavailable while down,
// like the plugin while Redis is unreachable, and records what it publishes
// while up.
type flaky struct {
	recorder
	down  atomic.Bool
	tries atomic.Int64
}

func (f *flaky) Publish(ctx context.Context, p realtime.Publication) (string, error) {
	f.tries.Add(1)
	if f.down.Load() {
		return "", fmt.Errorf("realtime: publish %s/%s: %w: redis: connection refused", p.Collection, p.ID, realtime.ErrUnavailable)
	}
	return f.recorder.Publish(ctx, p)
}

func (f *flaky) Resync(ctx context.Context, collection string) error {
	f.tries.Add(1)
	if f.down.Load() {
		return fmt.Errorf("realtime: resync %s: %w", collection, realtime.ErrUnavailable)
	}
	return f.recorder.Resync(ctx, collection)
}

func downPub() *flaky {
	f := &flaky{}
	f.down.Store(true)
	return f
}

// fastOutbox drains every few milliseconds.
var fastOutbox = gormhook.OutboxConfig{Interval: 5 * time.Millisecond, Grace: 20 * time.Millisecond}

// openFile opens (another connection pool on) a SQLite file and migrates it:
// several *gorm.DB on one file are several processes sharing a database.
// The drainer writes concurrently with the test's transactions: they take
// the write lock when they begin (_txlock=immediate), or one that reads
// before it writes can fail with SQLITE_BUSY instead of waiting.
func openFile(t *testing.T, path string) *gorm.DB {
	t.Helper()
	dsn := path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate"
	db, err := gorm.Open(sqlite.Open(dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	mustNoErr(t, db.AutoMigrate(&Post{}, &Tag{}, &Note{}))
	return db
}

// useOutbox installs a hook with the outbox on db and closes it at the end
// of the test (before the database closes).
func useOutbox(t *testing.T, db *gorm.DB, pub gormhook.Publisher, cfg gormhook.OutboxConfig, opts ...gormhook.Option) *gormhook.Hook {
	t.Helper()
	opts = append([]gormhook.Option{
		gormhook.Watch(&Post{}, "posts"), gormhook.Watch(&Tag{}, "tags"),
		gormhook.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		gormhook.WithOutbox(cfg),
	}, opts...)
	h := gormhook.New(pub, opts...)
	mustNoErr(t, db.Use(h))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return h
}

func outboxRows(t *testing.T, db *gorm.DB) int64 {
	t.Helper()
	var n int64
	mustNoErr(t, db.Table(gormhook.DefaultOutboxTable).Count(&n).Error)
	return n
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func newPath(t *testing.T) string { return filepath.Join(t.TempDir(), "app.db") }

// TestOutboxPublishFailure: writes committed while the publisher is down
// keep their rows; once it is back the drainer publishes each event exactly
// as committed (type, version, record), in order, and deletes the rows.
func TestOutboxPublishFailure(t *testing.T) {
	var logs logBuffer
	db := openFile(t, newPath(t))
	pub := downPub()
	useOutbox(t, db, pub, fastOutbox, gormhook.WithLogger(newLogger(&logs)))

	p := Post{Title: "secret-title-1", Body: "secret-body"}
	mustNoErr(t, db.Create(&p).Error)
	v1 := getJSON(t, db, p.ID)
	mustNoErr(t, db.Transaction(func(tx *gorm.DB) error {
		return tx.Model(&p).Update("title", "secret-title-2").Error
	}))
	v2 := getJSON(t, db, p.ID)
	if n := outboxRows(t, db); n != 2 {
		t.Fatalf("%d outbox rows while down, want 2", n)
	}
	// The drainer keeps trying while down.
	tries := pub.tries.Load()
	waitFor(t, "drain attempts while down", func() bool { return pub.tries.Load() >= tries+3 })
	if evs, rs := pub.got(); len(evs)+len(rs) != 0 {
		t.Fatalf("published while down: %v %v", evs, rs)
	}

	pub.down.Store(false)
	waitFor(t, "the outbox to drain", func() bool { return outboxRows(t, db) == 0 })
	evs := pub.take()
	if len(evs) != 2 ||
		evs[0].String() != "snapshot posts/1@default" || evs[0].Version != 1 || evs[0].JSON != v1 ||
		evs[1].String() != "changed posts/1@default" || evs[1].Version != 2 || evs[1].JSON != v2 {
		t.Fatalf("published %v, want snapshot v1 %s and changed v2 %s", evs, v1, v2)
	}
	if evs[0].ETag != realtime.DefaultETag("posts", "1", []byte(v1)) {
		t.Errorf("etag %s, want the default ETag of the committed record", evs[0].ETag)
	}

	out := logs.String()
	if n := strings.Count(out, "publisher unavailable"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "reachable again") {
		t.Errorf("recovery not logged:\n%s", out)
	}
	if strings.Contains(out, "secret") {
		t.Errorf("the log shows record contents:\n%s", out)
	}
}

// TestOutboxDelete: a delete committed during the outage is published as
// deleted, with the row before the delete as its Prior, once the publisher
// is back.
func TestOutboxDelete(t *testing.T) {
	db := openFile(t, newPath(t))
	pub := &flaky{}
	useOutbox(t, db, pub, fastOutbox)

	p := Post{Title: "a"}
	mustNoErr(t, db.Create(&p).Error)
	mustNoErr(t, db.Create(&Tag{Name: "go", Lang: "en", Label: "Go"}).Error)
	pub.got()
	pub.down.Store(true)
	mustNoErr(t, db.Delete(&p).Error)                             // soft delete
	mustNoErr(t, db.Where("name = ?", "go").Delete(&Tag{}).Error) // by condition, composite key
	if n := outboxRows(t, db); n != 2 {
		t.Fatalf("%d outbox rows, want 2", n)
	}
	pub.down.Store(false)
	waitFor(t, "the outbox to drain", func() bool { return outboxRows(t, db) == 0 })
	evs := pub.take()
	var got []string
	for _, e := range evs {
		got = append(got, e.String())
		switch r := e.Record.(type) {
		case *Post:
			if r.Title != "a" || r.ID != 1 || e.Version != 2 {
				t.Errorf("%v v%d prior %s", e, e.Version, e.JSON)
			}
		case *Tag:
			if r.Label != "Go" || e.Version != 2 {
				t.Errorf("%v v%d prior %s", e, e.Version, e.JSON)
			}
		default:
			t.Errorf("%v carries no prior record", e)
		}
	}
	slices.Sort(got)
	equal(t, "events", got, []string{"deleted posts/1@default", "deleted tags/go,en@default"})
}

// TestOutboxResync: a write that resyncs its collection, committed during
// the outage, is resynced once the publisher is back.
func TestOutboxResync(t *testing.T) {
	db := openFile(t, newPath(t))
	pub := &flaky{}
	useOutbox(t, db, pub, fastOutbox)
	mustNoErr(t, db.Create(posts("a", "b")).Error)
	pub.got()

	pub.down.Store(true)
	ctx := realtime.WithTenant(context.Background(), "acme")
	mustNoErr(t, db.WithContext(ctx).Session(&gorm.Session{AllowGlobalUpdate: true}).
		Model(&Post{}).Where("1 = 1").Limit(1).Update("title", "c").Error)
	if n := outboxRows(t, db); n != 1 {
		t.Fatalf("%d outbox rows, want 1", n)
	}
	pub.down.Store(false)
	waitFor(t, "the outbox to drain", func() bool { return outboxRows(t, db) == 0 })
	evs, rs := pub.got()
	equal(t, "events", evs, nil)
	equal(t, "resyncs", rs, []string{"acme/posts"})
}

// TestOutboxRollback: rolled back work leaves no row and no version, and
// publishes nothing; rows are written at commit only.
func TestOutboxRollback(t *testing.T) {
	db := openFile(t, newPath(t))
	pub := &flaky{}
	useOutbox(t, db, pub, fastOutbox)

	err := db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&Post{Title: "a"}).Error; err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	// An inner rollback inside an outer commit: only the outer's row, and
	// it is deleted once published.
	mustNoErr(t, db.Transaction(func(tx *gorm.DB) error {
		_ = tx.Transaction(func(tx2 *gorm.DB) error {
			if err := tx2.Create(&Post{Title: "inner"}).Error; err != nil {
				return err
			}
			if n := outboxRows(t, tx2); n != 0 {
				t.Errorf("%d outbox rows before the commit, want 0", n)
			}
			return errRollback
		})
		if n := outboxRows(t, tx); n != 0 {
			t.Errorf("%d outbox rows after the inner rollback, want 0", n)
		}
		return tx.Create(&Tag{Name: "x", Lang: "en"}).Error
	}))
	if n := outboxRows(t, db); n != 0 {
		t.Fatalf("%d outbox rows, want 0", n)
	}
	evs, rs := pub.got()
	equal(t, "events", evs, []string{"snapshot tags/x,en@default"})
	equal(t, "resyncs", rs, nil)
	var versions []string
	mustNoErr(t, db.Table(gormhook.DefaultVersionTable).Order("collection, record_id").Pluck("record_id", &versions).Error)
	equal(t, "versioned records", versions, []string{"x,en"})
}

// TestOutboxSuccessLeavesNoRow: published writes delete their rows, inside
// and outside transactions.
func TestOutboxSuccessLeavesNoRow(t *testing.T) {
	db := openFile(t, newPath(t))
	pub := &flaky{}
	useOutbox(t, db, pub, fastOutbox)
	noDefaultTx := db.Session(&gorm.Session{SkipDefaultTransaction: true})

	steps := []struct {
		name string
		run  func() error
	}{
		{"create", func() error { return db.Create(&Post{Title: "a"}).Error }},
		{"batch create", func() error { return db.Create(posts("b", "c", "d")).Error }},
		{"update in a transaction", func() error {
			return db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Model(&Post{ID: 1}).Update("title", "a2").Error; err != nil {
					return err
				}
				return tx.Model(&Post{ID: 1}).Update("body", "x").Error // same record twice
			})
		}},
		{"update by condition", func() error { return db.Model(&Post{}).Where("id > ?", 2).Update("views", 1).Error }},
		{"create without a transaction", func() error { return noDefaultTx.Create(&Post{Title: "e"}).Error }},
		{"delete without a transaction", func() error { return noDefaultTx.Delete(&Post{}, 5).Error }},
		{"create then delete in one transaction", func() error {
			return db.Transaction(func(tx *gorm.DB) error {
				p := Post{Title: "f"}
				if err := tx.Create(&p).Error; err != nil {
					return err
				}
				return tx.Delete(&p).Error
			})
		}},
	}
	for _, s := range steps {
		mustNoErr(t, s.run())
		if n := outboxRows(t, db); n != 0 {
			t.Fatalf("%s: %d outbox rows left, want 0", s.name, n)
		}
	}
	if evs, _ := pub.got(); len(evs) == 0 {
		t.Fatal("nothing published")
	}
}

// TestOutboxCrash: a process that dies between its commit and its publish
// (here: its publisher never succeeds, and it stops) leaves its rows; a
// second process on the same database drains them, exactly and in order.
func TestOutboxCrash(t *testing.T) {
	path := newPath(t)
	dbA := openFile(t, path)
	hA := useOutbox(t, dbA, downPub(), gormhook.OutboxConfig{Interval: time.Hour})
	p := Post{Title: "a"}
	mustNoErr(t, dbA.Create(&p).Error)
	mustNoErr(t, dbA.Model(&p).Update("body", "written before the crash").Error)
	mustNoErr(t, hA.Close(context.Background())) // the process is gone

	dbB := openFile(t, path)
	if n := outboxRows(t, dbB); n != 2 {
		t.Fatalf("%d outbox rows, want 2", n)
	}
	pubB := &flaky{}
	useOutbox(t, dbB, pubB, fastOutbox)
	waitFor(t, "process B to drain", func() bool { return outboxRows(t, dbB) == 0 })
	evs := pubB.take()
	if len(evs) != 2 || evs[0].String() != "snapshot posts/1@default" || evs[0].Version != 1 ||
		evs[1].String() != "changed posts/1@default" || evs[1].Version != 2 || evs[1].JSON != getJSON(t, dbB, p.ID) {
		t.Fatalf("published %v, want the snapshot and the changed in order", evs)
	}
}

// TestOutboxTwoDrainers: two processes draining the same rows publish each
// row once.
func TestOutboxTwoDrainers(t *testing.T) {
	path := newPath(t)
	dbW := openFile(t, path)
	hW := useOutbox(t, dbW, downPub(), gormhook.OutboxConfig{Interval: time.Hour})
	const n = 60
	mustNoErr(t, dbW.Transaction(func(tx *gorm.DB) error {
		for i := range n {
			if err := tx.Create(&Post{Title: fmt.Sprint(i)}).Error; err != nil {
				return err
			}
		}
		return nil
	}))
	mustNoErr(t, hW.Close(context.Background()))
	if got := outboxRows(t, dbW); got != n {
		t.Fatalf("%d outbox rows, want %d", got, n)
	}

	cfg := gormhook.OutboxConfig{Interval: time.Millisecond, Grace: time.Millisecond, Batch: 4}
	dbB, dbC := openFile(t, path), openFile(t, path)
	pubB, pubC := &flaky{}, &flaky{}
	useOutbox(t, dbB, pubB, cfg)
	useOutbox(t, dbC, pubC, cfg)
	waitFor(t, "the outbox to drain", func() bool { return outboxRows(t, dbW) == 0 })

	evB, _ := pubB.got()
	evC, _ := pubC.got()
	all := append(evB, evC...)
	want := ids("snapshot posts/", 1, n)
	slices.Sort(all)
	slices.Sort(want)
	equal(t, "events", all, want)
	t.Logf("drained %d by B, %d by C", len(evB), len(evC))
}

// TestOutboxClose: Close stops the drainer and waits for it; it is
// idempotent, and a no-op without the outbox.
func TestOutboxClose(t *testing.T) {
	db := openFile(t, newPath(t))
	before := goleak.IgnoreCurrent()
	h := gormhook.New(&flaky{}, gormhook.Watch(&Post{}, "posts"), gormhook.WithOutbox(fastOutbox))
	mustNoErr(t, db.Use(h))
	mustNoErr(t, db.Create(&Post{Title: "a"}).Error)
	mustNoErr(t, h.Close(context.Background()))
	mustNoErr(t, h.Close(context.Background()))
	goleak.VerifyNone(t, before)
	// After Close the hook still publishes and cleans up after itself.
	mustNoErr(t, db.Create(&Post{Title: "b"}).Error)
	if n := outboxRows(t, db); n != 0 {
		t.Errorf("%d outbox rows, want 0", n)
	}

	mustNoErr(t, gormhook.New(&flaky{}).Close(context.Background()))
	plain := gormhook.New(&flaky{}, gormhook.Watch(&Post{}, "posts"))
	mustNoErr(t, openFile(t, newPath(t)).Use(plain))
	mustNoErr(t, plain.Close(context.Background()))
}

// TestOutboxConfig: the table is created with the configured name; bad
// settings are refused.
func TestOutboxConfig(t *testing.T) {
	path := newPath(t)
	db := openFile(t, path)
	useOutbox(t, db, &flaky{}, gormhook.OutboxConfig{Table: "events_out", VersionTable: "events_versions"})
	if !db.Migrator().HasTable("events_out") || !db.Migrator().HasTable("events_versions") {
		t.Fatal("no events_out or events_versions table")
	}
	cols, err := db.Migrator().ColumnTypes("events_out")
	mustNoErr(t, err)
	var names []string
	for _, c := range cols {
		names = append(names, c.Name())
	}
	slices.Sort(names)
	equal(t, "columns", names, []string{"claimed_at", "claimed_by", "collection", "created_at", "data", "etag", "event",
		"id", "record_id", "ref", "refused_at", "tenant", "version"})
	// A second process finds the table there.
	useOutbox(t, openFile(t, path), &flaky{}, gormhook.OutboxConfig{Table: "events_out", VersionTable: "events_versions"})

	// A table of the earlier layout (no version column) is refused.
	old := openFile(t, newPath(t))
	mustExec(t, old, "CREATE TABLE realtime_outbox (id integer primary key, record_key text not null)")
	if err := old.Use(gormhook.New(&flaky{}, gormhook.Watch(&Post{}, "posts"))); !errors.Is(err, realtime.ErrInvalidConfig) {
		t.Errorf("an outbox of the earlier layout: err = %v, want ErrInvalidConfig", err)
	}

	for _, cfg := range []gormhook.OutboxConfig{
		{Table: "bad name"}, {Table: "x;drop"}, {VersionTable: "v v"}, {Table: "same", VersionTable: "same"},
		{Interval: -1}, {Grace: -1}, {Batch: -1}, {ClaimTTL: -1}, {GapAfter: -1},
	} {
		err := openFile(t, newPath(t)).Use(gormhook.New(&flaky{}, gormhook.Watch(&Post{}, "posts"), gormhook.WithOutbox(cfg)))
		if !errors.Is(err, realtime.ErrInvalidConfig) {
			t.Errorf("%+v: err = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}

// TestOutboxPreparedStatements: the rows are written through GORM's
// prepared statements inside the transaction too.
func TestOutboxPreparedStatements(t *testing.T) {
	path := newPath(t)
	openFile(t, path) // migrate
	db, err := gorm.Open(sqlite.Open(path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate"),
		&gorm.Config{Logger: logger.Discard, PrepareStmt: true})
	mustNoErr(t, err)
	sqlDB, err := db.DB()
	mustNoErr(t, err)
	t.Cleanup(func() { _ = sqlDB.Close() })
	pub := downPub()
	useOutbox(t, db, pub, fastOutbox)
	mustNoErr(t, db.Transaction(func(tx *gorm.DB) error { return tx.Create(posts("a", "b")).Error }))
	if n := outboxRows(t, db); n != 2 {
		t.Fatalf("%d outbox rows, want 2", n)
	}
	pub.down.Store(false)
	waitFor(t, "the outbox to drain", func() bool { return outboxRows(t, db) == 0 })
	evs, _ := pub.got()
	slices.Sort(evs)
	equal(t, "events", evs, []string{"snapshot posts/1@default", "snapshot posts/2@default"})
}

// TestOutboxTenant: each row keeps the tenant WithTenant read from the
// record in the transaction (for a delete, from the row before it); the
// drainer publishes to it.
func TestOutboxTenant(t *testing.T) {
	db := openFile(t, newPath(t))
	pub := downPub()
	useOutbox(t, db, pub, fastOutbox, gormhook.WithTenant(func(_ context.Context, rec any) string {
		if p, ok := rec.(*Post); ok {
			return p.Tenant
		}
		return ""
	}))
	a, b := Post{Tenant: "acme", Title: "a"}, Post{Tenant: "initech", Title: "b"}
	mustNoErr(t, db.Create(&a).Error)
	mustNoErr(t, db.Create(&b).Error)
	mustNoErr(t, db.Delete(&Post{}, b.ID).Error) // by condition: the row is read before the delete
	pub.down.Store(false)
	waitFor(t, "the outbox to drain", func() bool { return outboxRows(t, db) == 0 })
	evs, _ := pub.got()
	equal(t, "events", evs, []string{"snapshot posts/1@acme", "snapshot posts/2@initech", "deleted posts/2@initech"})
}

// poisoned fails for one record with an error that is not an outage.
type poisoned struct {
	flaky
	id string
}

func (p *poisoned) Publish(ctx context.Context, pub realtime.Publication) (string, error) {
	if !p.down.Load() && pub.ID == p.id {
		return "", errors.New("cannot publish this record")
	}
	return p.flaky.Publish(ctx, pub)
}

// TestOutboxPoisonRow: a row whose publish fails for another reason than
// an outage stays, without holding up the rows after it.
func TestOutboxPoisonRow(t *testing.T) {
	db := openFile(t, newPath(t))
	pub := &poisoned{id: "1"}
	pub.down.Store(true)
	useOutbox(t, db, pub, fastOutbox)
	mustNoErr(t, db.Create(posts("a", "b", "c")).Error)
	pub.down.Store(false)
	waitFor(t, "the other rows to drain", func() bool { return outboxRows(t, db) == 1 })
	evs, _ := pub.got()
	slices.Sort(evs)
	evs = slices.Compact(evs)
	equal(t, "events", evs, []string{"snapshot posts/2@default", "snapshot posts/3@default"})
	var left []string
	mustNoErr(t, db.Table(gormhook.DefaultOutboxTable).Pluck("record_id", &left).Error)
	equal(t, "rows left", left, []string{"1"})
}

// reporting is a flaky publisher that also reports its health, as
// *realtime.Plugin does.
type reporting struct{ flaky }

func (r *reporting) Health() error {
	if r.down.Load() {
		return realtime.ErrUnavailable
	}
	return nil
}

// TestOutboxSkipsAPublisherThatIsDown: while the publisher reports itself
// down, a commit does not even try to publish (it does not wait for the
// failure); the rows stay and are drained once it is back.
func TestOutboxSkipsAPublisherThatIsDown(t *testing.T) {
	path := newPath(t)
	db := openFile(t, path)
	pub := &reporting{}
	pub.down.Store(true)
	h := useOutbox(t, db, pub, gormhook.OutboxConfig{Interval: time.Hour, Grace: time.Millisecond})
	p := Post{Title: "t1"}
	mustNoErr(t, db.Create(&p).Error)
	if n := pub.tries.Load(); n != 0 {
		t.Fatalf("%d publish attempts while the publisher reported itself down, want 0", n)
	}
	if n := outboxRows(t, db); n != 1 {
		t.Fatalf("%d outbox rows, want 1", n)
	}
	pub.down.Store(false)
	mustNoErr(t, h.Close(context.Background())) // no tick within the test: restart the drainer on a new hook
	h2 := gormhook.New(pub, gormhook.Watch(&Post{}, "posts"), gormhook.WithOutbox(fastOutbox),
		gormhook.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	db2 := openFile(t, path) // another process on the same database
	mustNoErr(t, db2.Use(h2))
	t.Cleanup(func() { _ = h2.Close(context.Background()) })
	waitFor(t, "the outbox to drain", func() bool { return outboxRows(t, db) == 0 })
	if evs := pub.take(); len(evs) != 1 || evs[0].String() != "snapshot posts/1@default" || evs[0].Version != 1 {
		t.Fatalf("published %v, want the committed snapshot", evs)
	}
}
