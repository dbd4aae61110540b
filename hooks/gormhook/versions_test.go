package gormhook_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/hooks/gormhook"
	"gorm.io/gorm"
)

// noDrain keeps the drainer out of a test: only commits publish.
var noDrain = gormhook.OutboxConfig{Interval: time.Hour}

// storedVersion reads the last version of a record from the versions table.
func storedVersion(t *testing.T, db *gorm.DB, collection, id string) uint64 {
	t.Helper()
	var vs []uint64
	mustNoErr(t, db.Table(gormhook.DefaultVersionTable).
		Where("collection = ? AND record_id = ?", collection, id).Pluck("version", &vs).Error)
	if len(vs) == 0 {
		return 0
	}
	return vs[0]
}

// TestVersions: every committed write of a watched record takes the
// record's next version in its transaction, whatever the way it is
// written; a rolled back transaction or savepoint takes none (no hole); a
// record written several times in one transaction has one version; a
// deleted record created again continues its numbering. Each event carries
// the record exactly as committed (what GET read right after the commit)
// and its ETag.
func TestVersions(t *testing.T) {
	forEachDialect(t, func(t *testing.T, tdb *testDB) {
		db := tdb.open(t)
		rec := &recorder{}
		useOutbox(t, db, rec, noDrain)
		noTx := db.Session(&gorm.Session{SkipDefaultTransaction: true})
		type want struct {
			event   string
			version uint64
			json    string // "" for a deleted without prior
		}
		var wants []want
		step := func(name string, f func() error, w ...want) {
			t.Helper()
			if err := f(); err != nil && !errors.Is(err, errRollback) {
				t.Fatalf("%s: %v", name, err)
			}
			wants = append(wants, w...)
		}
		get := func(id uint) string { return getJSON(t, db, id) }
		p := Post{Title: "a"}

		step("create", func() error { return db.Create(&p).Error })
		wants = append(wants, want{"snapshot posts/1@default", 1, get(1)})
		step("two updates in one transaction", func() error {
			return db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Model(&p).Update("title", "b").Error; err != nil {
					return err
				}
				return tx.Model(&p).Update("views", gorm.Expr("views + 1")).Error
			})
		})
		wants = append(wants, want{"changed posts/1@default", 2, get(1)})
		step("rolled back", func() error {
			return db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Model(&p).Update("title", "never").Error; err != nil {
					return err
				}
				return errRollback
			})
		})
		step("after the rollback: no hole", func() error { return db.Model(&p).Update("title", "c").Error })
		wants = append(wants, want{"changed posts/1@default", 3, get(1)})
		step("savepoints rolled back", func() error {
			return db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Model(&p).Update("title", "d").Error; err != nil {
					return err
				}
				_ = tx.Transaction(func(tx2 *gorm.DB) error {
					if err := tx2.Model(&p).Update("views", 100).Error; err != nil {
						return err
					}
					return errRollback
				})
				_ = tx.Transaction(func(tx2 *gorm.DB) error {
					if err := tx2.Create(&Post{ID: 10, Title: "never"}).Error; err != nil {
						return err
					}
					return errRollback
				})
				return nil
			})
		})
		wants = append(wants, want{"changed posts/1@default", 4, get(1)})
		step("outside a transaction", func() error { return noTx.Model(&p).Update("title", "e").Error })
		wants = append(wants, want{"changed posts/1@default", 5, get(1)})
		prior := get(1)
		step("soft delete", func() error { return db.Delete(&p).Error }, want{"deleted posts/1@default", 6, prior})

		tag := Tag{Name: "go", Lang: "en", Label: "Go"}
		step("create a tag", func() error { return db.Create(&tag).Error },
			want{"snapshot tags/go,en@default", 1, `{"name":"go","lang":"en","label":"Go"}`})
		step("delete it", func() error { return db.Delete(&tag).Error },
			want{"deleted tags/go,en@default", 2, `{"name":"go","lang":"en","label":"Go"}`})
		step("create it again", func() error { return db.Create(&Tag{Name: "go", Lang: "en", Label: "Go 2"}).Error },
			want{"snapshot tags/go,en@default", 3, `{"name":"go","lang":"en","label":"Go 2"}`})
		step("update it", func() error { return db.Model(&Tag{Name: "go", Lang: "en"}).Update("label", "Go 3").Error },
			want{"changed tags/go,en@default", 4, `{"name":"go","lang":"en","label":"Go 3"}`})
		step("create and delete in one transaction", func() error {
			return db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Create(&Tag{Name: "tmp", Lang: "en"}).Error; err != nil {
					return err
				}
				return tx.Delete(&Tag{Name: "tmp", Lang: "en"}).Error
			})
		}, want{"deleted tags/tmp,en@default", 1, `{"name":"tmp","lang":"en","label":""}`})

		evs := rec.take()
		if len(evs) != len(wants) {
			t.Fatalf("%d events %v, want %d", len(evs), evs, len(wants))
		}
		for i, e := range evs {
			w := wants[i]
			if e.String() != w.event || e.Version != w.version || e.JSON != w.json {
				t.Errorf("event %d: %s v%d %s\n want %s v%d %s", i, e, e.Version, e.JSON, w.event, w.version, w.json)
			}
			etag := realtime.TombstoneETag(e.Collection, e.ID)
			if e.Event != realtime.EventDeleted {
				etag = realtime.DefaultETag(e.Collection, e.ID, []byte(e.JSON))
			}
			if e.ETag != etag {
				t.Errorf("event %d: etag %s, want %s", i, e.ETag, etag)
			}
		}
		for _, c := range []struct {
			collection, id string
			version        uint64
		}{{"posts", "1", 6}, {"posts", "10", 0}, {"tags", "go,en", 4}, {"tags", "tmp,en", 1}} {
			if v := storedVersion(t, db, c.collection, c.id); v != c.version {
				t.Errorf("%s/%s: stored version %d, want %d", c.collection, c.id, v, c.version)
			}
		}
		if n := outboxRows(t, db); n != 0 {
			t.Errorf("%d outbox rows left", n)
		}
	})
}

// loadPost is the app's load: the post by ID, read through tx as a GET
// handler reads it.
func loadPost(_ context.Context, tx *gorm.DB, ref realtime.Ref) (any, error) {
	var p Post
	if err := tx.Where("id = ?", ref.ID).Take(&p).Error; err != nil {
		return nil, err
	}
	return &p, nil
}

// TestLoader: the loader returns the record with its version, an absent
// record's version, the bare record when it has none, and ErrNotFound when
// there is neither.
func TestLoader(t *testing.T) {
	forEachDialect(t, func(t *testing.T, tdb *testDB) {
		db := tdb.open(t)
		h := useOutbox(t, db, &recorder{}, noDrain)
		load := h.Loader(loadPost)
		ctx := context.Background()
		ref := func(id string) realtime.Ref { return realtime.Ref{Tenant: "default", Collection: "posts", ID: id} }

		p := Post{Title: "a"}
		mustNoErr(t, db.Create(&p).Error)
		mustNoErr(t, db.Model(&p).Update("title", "b").Error)
		got, err := load(ctx, ref("1"))
		mustNoErr(t, err)
		vr, ok := got.(realtime.VersionedRecord)
		if !ok || vr.Version != 2 || vr.Record.(*Post).Title != "b" {
			t.Fatalf("loaded %#v, want post 1 at version 2", got)
		}

		mustNoErr(t, db.Delete(&p).Error)
		got, err = load(ctx, ref("1"))
		mustNoErr(t, err)
		if vr, ok := got.(realtime.VersionedRecord); !ok || vr.Version != 3 || vr.Record != nil {
			t.Fatalf("loaded %#v after the delete, want absent at version 3", got)
		}

		if got, err := load(ctx, ref("99")); !errors.Is(err, realtime.ErrNotFound) || got != nil {
			t.Fatalf("never written: %#v, %v; want ErrNotFound", got, err)
		}

		// Written without the hook: no version.
		mustExec(t, tdb.open(t), "INSERT INTO posts (id, title, body, views, tenant) VALUES (50, 'raw', '', 1, '')")
		got, err = load(ctx, ref("50"))
		mustNoErr(t, err)
		if p, ok := got.(*Post); !ok || p.Title != "raw" {
			t.Fatalf("loaded %#v, want the bare record", got)
		}

		boom := errors.New("boom")
		_, err = h.Loader(func(context.Context, *gorm.DB, realtime.Ref) (any, error) { return nil, boom })(ctx, ref("1"))
		if !errors.Is(err, boom) || errors.Is(err, realtime.ErrNotFound) {
			t.Fatalf("err = %v, want boom", err)
		}
		if _, err := gormhook.New(&recorder{}).Loader(loadPost)(ctx, ref("1")); !errors.Is(err, realtime.ErrInvalidConfig) {
			t.Fatalf("uninstalled hook: err = %v", err)
		}
	})
}

// TestLoaderSnapshot: the record and its version are read in one snapshot:
// a write committed between the two reads changes neither.
func TestLoaderSnapshot(t *testing.T) {
	forEachDialect(t, func(t *testing.T, tdb *testDB) {
		db, other := tdb.open(t), tdb.open(t)
		h := useOutbox(t, db, &recorder{}, noDrain)
		useOutbox(t, other, &recorder{}, noDrain)
		p := Post{Title: "v1"}
		mustNoErr(t, db.Create(&p).Error)
		ctx := context.Background()
		ref := realtime.Ref{Tenant: "default", Collection: "posts", ID: fmt.Sprint(p.ID)}

		var wrote bool
		load := h.Loader(func(ctx context.Context, tx *gorm.DB, ref realtime.Ref) (any, error) {
			rec, err := loadPost(ctx, tx, ref)
			if err == nil && !wrote {
				wrote = true
				// Another process commits version 2 between the reads.
				if err := other.Model(&Post{ID: p.ID}).Update("title", "v2").Error; err != nil {
					return nil, err
				}
			}
			return rec, err
		})
		got, err := load(ctx, ref)
		mustNoErr(t, err)
		if vr, ok := got.(realtime.VersionedRecord); !ok || vr.Version != 1 || vr.Record.(*Post).Title != "v1" {
			t.Fatalf("loaded %#v, want v1 at version 1", got)
		}
		got, err = load(ctx, ref)
		mustNoErr(t, err)
		if vr, ok := got.(realtime.VersionedRecord); !ok || vr.Version != 2 || vr.Record.(*Post).Title != "v2" {
			t.Fatalf("loaded %#v, want v2 at version 2", got)
		}
	})
}

// TestCommitReadsLatest: a record a transaction names without changing it
// (an update by condition whose new value it already had) gets the next
// version with its latest state, not the one of the transaction's snapshot
// (MySQL's REPEATABLE READ began it before another process committed a
// newer version). SQLite has one writer at a time: no such interleaving.
func TestCommitReadsLatest(t *testing.T) {
	for _, d := range []string{"postgres", "mysql"} {
		t.Run(d, func(t *testing.T) {
			tdb := newTestDB(t, d)
			db, other := tdb.open(t), tdb.open(t)
			rec := &recorder{}
			useOutbox(t, db, rec, noDrain)
			useOutbox(t, other, &recorder{}, noDrain)
			mustNoErr(t, db.Create(&[]Post{{Title: "a", Body: "same"}, {Title: "b", Body: "old"}}).Error)
			rec.take()
			mustNoErr(t, db.Transaction(func(tx *gorm.DB) error {
				var n int64
				if err := tx.Model(&Post{}).Count(&n).Error; err != nil { // MySQL takes the snapshot here
					return err
				}
				if err := other.Model(&Post{ID: 1}).Update("title", "a2").Error; err != nil { // version 2 of post 1
					return err
				}
				return tx.Model(&Post{}).Where("id IN ?", []uint{1, 2}).UpdateColumn("body", "same").Error
			}))
			evs := rec.take()
			if len(evs) != 2 {
				t.Fatalf("events %v", evs)
			}
			for _, e := range evs {
				if e.ID == "1" && (e.Version != 3 || e.Record.(*Post).Title != "a2" || e.JSON != getJSON(t, db, 1)) {
					t.Fatalf("post 1: version %d %s, want version 3 with title a2", e.Version, e.JSON)
				}
			}
		})
	}
}
