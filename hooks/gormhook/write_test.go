package gormhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/hooks/gormhook"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// TestBatchCreate: a batch of N records gives N snapshots, however GORM
// splits or wraps it, and nothing when its transaction rolls back.
func TestBatchCreate(t *testing.T) {
	const n = 10
	cases := []struct {
		name string
		run  func(db *gorm.DB) error
		want []string
	}{
		{"slice", func(db *gorm.DB) error {
			ps := posts(make([]string, n)...)
			return db.Create(&ps).Error
		}, ids("snapshot posts/", 1, n)},
		{"slice of pointers", func(db *gorm.DB) error {
			ps := []*Post{{Title: "a"}, {Title: "b"}, nil, {Title: "c"}}
			return db.Omit(clause.Associations).Create(ps[:2]).Error
		}, ids("snapshot posts/", 1, 2)},
		{"array", func(db *gorm.DB) error {
			ps := [3]Post{{Title: "a"}, {Title: "b"}, {Title: "c"}}
			return db.Create(&ps).Error
		}, ids("snapshot posts/", 1, 3)},
		{"CreateInBatches over the batch size (GORM's own transaction)", func(db *gorm.DB) error {
			ps := posts(make([]string, n)...)
			return db.CreateInBatches(&ps, 3).Error
		}, ids("snapshot posts/", 1, n)},
		{"CreateInBatches within the batch size", func(db *gorm.DB) error {
			ps := posts(make([]string, 3)...)
			return db.CreateInBatches(&ps, 5).Error
		}, ids("snapshot posts/", 1, 3)},
		{"CreateBatchSize session inside a transaction", func(db *gorm.DB) error {
			return db.Session(&gorm.Session{CreateBatchSize: 4}).Transaction(func(tx *gorm.DB) error {
				ps := posts(make([]string, n)...)
				return tx.Create(&ps).Error
			})
		}, ids("snapshot posts/", 1, n)},
		{"CreateInBatches in a rolled back transaction", func(db *gorm.DB) error {
			err := db.Transaction(func(tx *gorm.DB) error {
				ps := posts(make([]string, n)...)
				if err := tx.CreateInBatches(&ps, 3).Error; err != nil {
					return err
				}
				return errRollback
			})
			if errors.Is(err, errRollback) {
				return nil
			}
			return err
		}, nil},
		{"Save of a struct with a new key: a create, no changed", func(db *gorm.DB) error {
			return db.Save(&Post{ID: 5, Title: "s"}).Error
		}, []string{"snapshot posts/5@default"}},
		{"Save of new records (upsert of a slice)", func(db *gorm.DB) error {
			ps := posts("a", "b")
			return db.Save(&ps).Error
		}, ids("snapshot posts/", 1, 2)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, rec := openDB(t)
			mustNoErr(t, tc.run(db))
			evs := rec.take()
			var got []string
			for _, e := range evs {
				got = append(got, e.String())
				var id uint
				_, _ = fmt.Sscan(e.ID, &id)
				if want := getJSON(t, db, id); e.JSON != want {
					t.Errorf("%s: data %s, want the stored record %s", e, e.JSON, want)
				}
			}
			equal(t, "events", got, tc.want)
		})
	}
}

// TestWholeRecord: creates and updates publish the whole stored record, byte
// for byte what a GET handler marshals after reading the row, even when the
// write only had part of it.
func TestWholeRecord(t *testing.T) {
	cases := []struct {
		name  string
		write func(db *gorm.DB, id uint) error
		event string
		title string
	}{
		{"Create (database default, timestamps)", nil, realtime.EventSnapshot, "t"},
		{"Save", func(db *gorm.DB, id uint) error {
			var p Post
			if err := db.First(&p, id).Error; err != nil {
				return err
			}
			p.Title = "saved"
			return db.Save(&p).Error
		}, realtime.EventChanged, "saved"},
		{"Model(&partial).Updates(map)", func(db *gorm.DB, id uint) error {
			return db.Model(&Post{ID: id}).Updates(map[string]any{"title": "mapped"}).Error
		}, realtime.EventChanged, "mapped"},
		{"Model(&partial).Updates(struct)", func(db *gorm.DB, id uint) error {
			return db.Model(&Post{ID: id}).Updates(Post{Title: "structed"}).Error
		}, realtime.EventChanged, "structed"},
		{"Updates(&partial)", func(db *gorm.DB, id uint) error {
			return db.Updates(&Post{ID: id, Title: "self"}).Error
		}, realtime.EventChanged, "self"},
		{"Model(&partial).Update", func(db *gorm.DB, id uint) error {
			return db.Model(&Post{ID: id}).Update("title", "one").Error
		}, realtime.EventChanged, "one"},
		{"UpdateColumn", func(db *gorm.DB, id uint) error {
			return db.Model(&Post{ID: id}).UpdateColumn("title", "column").Error
		}, realtime.EventChanged, "column"},
		{"Update by expression", func(db *gorm.DB, id uint) error {
			return db.Model(&Post{ID: id}).Update("views", gorm.Expr("views + ?", 5)).Error
		}, realtime.EventChanged, "t"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, rec := openDB(t)
			p := Post{Title: "t", Body: "untouched body"}
			mustNoErr(t, db.Create(&p).Error)
			if tc.write != nil {
				rec.take()
				mustNoErr(t, tc.write(db, p.ID))
			}
			evs := rec.take()
			if len(evs) != 1 {
				t.Fatalf("events %v, want one", evs)
			}
			e := evs[0]
			if e.Event != tc.event || e.ID != fmt.Sprint(p.ID) || e.Collection != "posts" {
				t.Errorf("event %s", e)
			}
			if want := getJSON(t, db, p.ID); e.JSON != want {
				t.Errorf("data\n %s\nwant what GET marshals\n %s", e.JSON, want)
			}
			var got Post
			mustNoErr(t, json.Unmarshal([]byte(e.JSON), &got))
			if got.Title != tc.title || got.Body != "untouched body" || got.Views < 7 {
				t.Errorf("record %+v: want title %q, the untouched body and the default views", got, tc.title)
			}
		})
	}
}

// TestNoReload: WithReload(false) publishes the in-memory struct, partial
// when the write was.
func TestNoReload(t *testing.T) {
	db, rec := openDB(t, gormhook.WithReload(false))
	p := Post{Title: "t", Body: "b"}
	mustNoErr(t, db.Create(&p).Error)
	mustNoErr(t, db.Model(&Post{ID: p.ID}).Updates(map[string]any{"title": "new"}).Error)
	evs := rec.take()
	if len(evs) != 2 {
		t.Fatalf("events %v", evs)
	}
	created, updated := evs[0].Record.(*Post), evs[1].Record.(*Post)
	if created.Title != "t" || created.Body != "b" || created == &p {
		t.Errorf("snapshot record %+v: want a copy of the created struct", created)
	}
	if updated.Title != "new" || updated.Body != "" {
		t.Errorf("changed record %+v: want the partial in-memory struct", updated)
	}
	// Records written by condition have no struct: they are always reloaded.
	mustNoErr(t, db.Model(&Post{}).Where("title = ?", "new").Update("body", "bb").Error)
	evs = rec.take()
	if len(evs) != 1 || evs[0].JSON != getJSON(t, db, p.ID) {
		t.Errorf("conditional update with reload off: %v", evs)
	}
}

// TestDelete: deletes, soft and hard, publish deleted.
func TestDelete(t *testing.T) {
	cases := []struct {
		name string
		del  func(db *gorm.DB) *gorm.DB
		want []string
	}{
		{"soft delete of a struct", func(db *gorm.DB) *gorm.DB { return db.Delete(&Post{ID: 1}) },
			[]string{"deleted posts/1@default"}},
		{"soft delete by primary key", func(db *gorm.DB) *gorm.DB { return db.Delete(&Post{}, 2) },
			[]string{"deleted posts/2@default"}},
		{"soft delete of a slice", func(db *gorm.DB) *gorm.DB { return db.Delete(&[]Post{{ID: 1}, {ID: 3}}) },
			[]string{"deleted posts/1@default", "deleted posts/3@default"}},
		{"soft delete by keys", func(db *gorm.DB) *gorm.DB { return db.Delete(&Post{}, []uint{2, 3}) },
			[]string{"deleted posts/2@default", "deleted posts/3@default"}},
		{"hard delete", func(db *gorm.DB) *gorm.DB { return db.Unscoped().Delete(&Post{ID: 1}) },
			[]string{"deleted posts/1@default"}},
		{"Model(&p).Delete", func(db *gorm.DB) *gorm.DB { return db.Model(&Post{ID: 3}).Delete(&Post{}) },
			[]string{"deleted posts/3@default"}},
		{"absent record: nothing", func(db *gorm.DB) *gorm.DB { return db.Delete(&Post{ID: 99}) }, nil},
		{"already soft-deleted: nothing", func(db *gorm.DB) *gorm.DB {
			db.Delete(&Post{ID: 1})
			return db.Delete(&Post{ID: 1})
		}, []string{"deleted posts/1@default"}},
		{"hard delete of a soft-deleted record", func(db *gorm.DB) *gorm.DB {
			db.Delete(&Post{ID: 1})
			return db.Unscoped().Delete(&Post{ID: 1})
		}, []string{"deleted posts/1@default", "deleted posts/1@default"}},
		{"delete in a rolled back transaction", func(db *gorm.DB) *gorm.DB {
			_ = db.Transaction(func(tx *gorm.DB) error {
				tx.Delete(&Post{ID: 1})
				return errRollback
			})
			return db
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, rec := openDB(t)
			ps := posts("a", "b", "c")
			mustNoErr(t, db.Create(&ps).Error)
			rec.take()
			mustNoErr(t, tc.del(db).Error)
			got, resyncs := rec.got()
			equal(t, "events", got, tc.want)
			equal(t, "resyncs", resyncs, nil)
		})
	}
}

// TestWritesByCondition: updates and deletes without primary keys publish
// the affected records' events (selected beforehand, in the same scope),
// or a resync of the collection above the cap; never nothing.
func TestWritesByCondition(t *testing.T) {
	cases := []struct {
		name    string
		opts    []gormhook.Option
		write   func(db *gorm.DB) *gorm.DB
		want    []string
		resyncs []string
	}{
		{"Where(…).Updates(map)", nil, func(db *gorm.DB) *gorm.DB {
			return db.Model(&Post{}).Where("title = ?", "x").Updates(map[string]any{"body": "bulk"})
		}, []string{"changed posts/1@default", "changed posts/3@default"}, nil},
		{"Model(&Post{}).Where(…).Update", nil, func(db *gorm.DB) *gorm.DB {
			return db.Model(&Post{}).Where("views > ?", 0).Where("title <> ?", "x").Update("body", "bulk")
		}, []string{"changed posts/2@default"}, nil},
		{"Where(…).Updates(&struct)", nil, func(db *gorm.DB) *gorm.DB {
			return db.Where("title = ?", "x").Updates(&Post{Body: "bulk"})
		}, []string{"changed posts/1@default", "changed posts/3@default"}, nil},
		{"struct conditions", nil, func(db *gorm.DB) *gorm.DB {
			return db.Model(&Post{}).Where(&Post{Title: "x"}).Update("body", "bulk")
		}, []string{"changed posts/1@default", "changed posts/3@default"}, nil},
		{"model key and a condition", nil, func(db *gorm.DB) *gorm.DB {
			return db.Model(&Post{ID: 1}).Where("title = ?", "y").Update("body", "bulk")
		}, nil, nil},
		{"subquery condition", nil, func(db *gorm.DB) *gorm.DB {
			return db.Model(&Post{}).Where("id IN (?)", db.Model(&Post{}).Select("id").Where("title = ?", "y")).
				Update("body", "bulk")
		}, []string{"changed posts/2@default"}, nil},
		{"Model(&slice).Update: by the slice's keys", nil, func(db *gorm.DB) *gorm.DB {
			return db.Model(&[]Post{{ID: 1}, {ID: 3}}).Update("body", "bulk")
		}, []string{"changed posts/1@default", "changed posts/3@default"}, nil},
		{"Delete(&Post{}, cond)", nil, func(db *gorm.DB) *gorm.DB {
			return db.Delete(&Post{}, "title = ?", "x")
		}, []string{"deleted posts/1@default", "deleted posts/3@default"}, nil},
		{"Where(…).Delete", nil, func(db *gorm.DB) *gorm.DB {
			return db.Where("title = ?", "x").Delete(&Post{})
		}, []string{"deleted posts/1@default", "deleted posts/3@default"}, nil},
		{"soft-deleted rows are not affected", nil, func(db *gorm.DB) *gorm.DB {
			db.Delete(&Post{ID: 1})
			return db.Model(&Post{}).Where("title = ?", "x").Update("body", "bulk")
		}, []string{"deleted posts/1@default", "changed posts/3@default"}, nil},
		{"Unscoped writes soft-deleted rows too", nil, func(db *gorm.DB) *gorm.DB {
			db.Delete(&Post{ID: 1})
			return db.Unscoped().Where("title = ?", "x").Delete(&Post{})
		}, []string{"deleted posts/1@default", "deleted posts/1@default", "deleted posts/3@default"}, nil},
		{"global update", nil, func(db *gorm.DB) *gorm.DB {
			return db.Session(&gorm.Session{AllowGlobalUpdate: true}).Model(&Post{}).Update("body", "all")
		}, []string{"changed posts/1@default", "changed posts/2@default", "changed posts/3@default"}, nil},
		{"global update refused by GORM: nothing", nil, func(db *gorm.DB) *gorm.DB {
			tx := db.Model(&Post{}).Update("body", "all")
			if errors.Is(tx.Error, gorm.ErrMissingWhereClause) {
				tx.Error = nil
			}
			return tx
		}, nil, nil},
		{"no row matched: nothing", nil, func(db *gorm.DB) *gorm.DB {
			return db.Model(&Post{}).Where("title = ?", "none").Update("body", "bulk")
		}, nil, nil},
		{"by condition in a transaction, then rolled back", nil, func(db *gorm.DB) *gorm.DB {
			_ = db.Transaction(func(tx *gorm.DB) error {
				tx.Model(&Post{}).Where("title = ?", "x").Update("body", "bulk")
				return errRollback
			})
			return db
		}, nil, nil},
		{"above the cap: resync", []gormhook.Option{gormhook.WithMaxAffected(1)}, func(db *gorm.DB) *gorm.DB {
			return db.Model(&Post{}).Where("title = ?", "x").Update("body", "bulk")
		}, nil, []string{"default/posts"}},
		{"at the cap: events", []gormhook.Option{gormhook.WithMaxAffected(2)}, func(db *gorm.DB) *gorm.DB {
			return db.Delete(&Post{}, "title = ?", "x")
		}, []string{"deleted posts/1@default", "deleted posts/3@default"}, nil},
		{"negative cap: always resync", []gormhook.Option{gormhook.WithMaxAffected(-1)}, func(db *gorm.DB) *gorm.DB {
			return db.Delete(&Post{}, "title = ?", "x")
		}, nil, []string{"default/posts"}},
		{"resync for the tenant of the context", []gormhook.Option{gormhook.WithMaxAffected(-1)}, func(db *gorm.DB) *gorm.DB {
			return db.WithContext(realtime.WithTenant(context.Background(), "acme")).
				Model(&Post{}).Where("title = ?", "x").Update("body", "bulk")
		}, nil, []string{"acme/posts"}},
		{"a watched table written without its model: resync", nil, func(db *gorm.DB) *gorm.DB {
			return db.Table("posts").Where("title = ?", "x").Updates(map[string]any{"body": "bulk"})
		}, nil, []string{"default/posts"}},
		{"a primary key changed by map: resync", nil, func(db *gorm.DB) *gorm.DB {
			return db.Model(&Post{ID: 1}).Update("id", 10)
		}, nil, []string{"default/posts"}},
		{"a primary key changed by struct: resync", nil, func(db *gorm.DB) *gorm.DB {
			return db.Model(&Post{ID: 2}).Updates(Post{ID: 20, Title: "moved"})
		}, nil, []string{"default/posts"}},
		{"the same primary key in the struct: changed", nil, func(db *gorm.DB) *gorm.DB {
			return db.Model(&Post{ID: 2}).Updates(Post{ID: 2, Title: "same"})
		}, []string{"changed posts/2@default"}, nil},
		{"LIMIT: resync", nil, func(db *gorm.DB) *gorm.DB {
			return db.Model(&Post{}).Where("title = ?", "x").Limit(1).Update("body", "bulk")
		}, nil, []string{"default/posts"}},
		{"one resync per transaction and collection", []gormhook.Option{gormhook.WithMaxAffected(-1)}, func(db *gorm.DB) *gorm.DB {
			_ = db.Transaction(func(tx *gorm.DB) error {
				tx.Model(&Post{}).Where("title = ?", "x").Update("body", "1")
				tx.Model(&Post{}).Where("title = ?", "x").Update("body", "2")
				return nil
			})
			return db
		}, nil, []string{"default/posts"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, rec := openDB(t, tc.opts...)
			ps := posts("x", "y", "x")
			mustNoErr(t, db.Create(&ps).Error)
			rec.take()
			mustNoErr(t, tc.write(db).Error)
			evs := rec.take()
			var got []string
			for _, e := range evs {
				got = append(got, e.String())
				if e.Event == realtime.EventChanged {
					var id uint
					_, _ = fmt.Sscan(e.ID, &id)
					if want := getJSON(t, db, id); e.JSON != want {
						t.Errorf("%s: data %s, want %s", e, e.JSON, want)
					}
					if !strings.Contains(e.JSON, `"title":`) {
						t.Errorf("%s: not the whole record: %s", e, e.JSON)
					}
				}
			}
			equal(t, "events", got, tc.want)
			equal(t, "resyncs", resyncsOf(rec), tc.resyncs)
		})
	}
}

// resyncsOf returns and forgets the recorder's resyncs.
func resyncsOf(r *recorder) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.resyncs
	r.resyncs = nil
	return out
}

// TestUnwatched: models not registered with Watch produce nothing.
func TestUnwatched(t *testing.T) {
	db, rec := openDB(t)
	n := Note{Text: "a"}
	mustNoErr(t, db.Create(&n).Error)
	mustNoErr(t, db.Model(&n).Update("text", "b").Error)
	mustNoErr(t, db.Where("text = ?", "b").Updates(&Note{Text: "c"}).Error)
	mustNoErr(t, db.Delete(&n).Error)
	mustNoErr(t, db.Table("notes").Create(map[string]any{"text": "d"}).Error)
	mustNoErr(t, db.Transaction(func(tx *gorm.DB) error { return tx.Create(&Note{Text: "e"}).Error }))
	// A watched model written into another table is not the watched table.
	mustNoErr(t, db.Exec("CREATE TABLE archived_posts AS SELECT * FROM posts WHERE 0").Error)
	mustNoErr(t, db.Table("archived_posts").Create(&Post{Title: "old"}).Error)
	got, resyncs := rec.got()
	equal(t, "events", got, nil)
	equal(t, "resyncs", resyncs, nil)
}

// TestDryRun: a dry run writes nothing and publishes nothing.
func TestDryRun(t *testing.T) {
	db, rec := openDB(t)
	dry := db.Session(&gorm.Session{DryRun: true})
	mustNoErr(t, dry.Create(&Post{Title: "a"}).Error)
	mustNoErr(t, dry.Model(&Post{ID: 1}).Update("title", "b").Error)
	mustNoErr(t, dry.Where("title = ?", "b").Delete(&Post{}).Error)
	got, resyncs := rec.got()
	equal(t, "events", got, nil)
	equal(t, "resyncs", resyncs, nil)
}

// TestWatchForms: Watch takes a pointer to the model, the model value or a
// slice of it.
func TestWatchForms(t *testing.T) {
	for _, model := range []any{&Post{}, Post{}, &[]Post{}, []*Post{}} {
		t.Run(fmt.Sprintf("%T", model), func(t *testing.T) {
			db := openRaw(t, nil)
			rec := &recorder{}
			use(t, db, gormhook.New(rec, gormhook.Watch(model, "posts")))
			mustNoErr(t, db.Create(&Post{Title: "a"}).Error)
			got, _ := rec.got()
			equal(t, "events", got, []string{"snapshot posts/1@default"})
		})
	}
}

// TestTenant: the tenant comes from the statement's context, or from the
// record with the WithTenant option.
func TestTenant(t *testing.T) {
	ctx := realtime.WithTenant(context.Background(), "acme")
	t.Run("from the context", func(t *testing.T) {
		db, rec := openDB(t)
		mustNoErr(t, db.WithContext(ctx).Create(&Post{Title: "a"}).Error)
		mustNoErr(t, db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			return tx.Model(&Post{ID: 1}).Update("title", "b").Error
		}))
		mustNoErr(t, db.Create(&Post{Title: "c"}).Error)
		mustNoErr(t, db.WithContext(ctx).Delete(&Post{}, "title = ?", "b").Error)
		got, _ := rec.got()
		equal(t, "events", got, []string{"snapshot posts/1@acme", "changed posts/1@acme",
			"snapshot posts/2@default", "deleted posts/1@acme"})
	})
	t.Run("from the record", func(t *testing.T) {
		db, rec := openDB(t, gormhook.WithTenant(func(_ context.Context, record any) string {
			if p, ok := record.(*Post); ok {
				return p.Tenant
			}
			return ""
		}))
		mustNoErr(t, db.Create(&Post{Title: "a", Tenant: "t1"}).Error)
		mustNoErr(t, db.Create(&Post{Title: "b", Tenant: "t2"}).Error)
		mustNoErr(t, db.Create(&Post{Title: "c"}).Error)                                 // no tenant: the context's
		mustNoErr(t, db.Model(&Post{ID: 1}).Update("title", "a2").Error)                 // reloaded record: t1
		mustNoErr(t, db.Delete(&Post{ID: 2}).Error)                                      // the row before the delete: t2
		mustNoErr(t, db.WithContext(ctx).Where("title = ?", "a2").Delete(&Post{}).Error) // by condition: t1
		got, _ := rec.got()
		equal(t, "events", got, []string{"snapshot posts/1@t1", "snapshot posts/2@t2", "snapshot posts/3@default",
			"changed posts/1@t1", "deleted posts/2@t2", "deleted posts/1@t1"})
	})
}

// TestCompositeKey: a composite primary key is the ID "name,lang".
func TestCompositeKey(t *testing.T) {
	db, rec := openDB(t)
	mustNoErr(t, db.Create(&[]Tag{{Name: "go", Lang: "en", Label: "Go"}, {Name: "go", Lang: "fr", Label: "Go"}}).Error)
	mustNoErr(t, db.Model(&Tag{Name: "go", Lang: "fr"}).Update("label", "Le Go").Error)
	mustNoErr(t, db.Model(&Tag{}).Where("lang = ?", "en").Update("label", "Golang").Error)
	mustNoErr(t, db.Delete(&Tag{Name: "go", Lang: "en"}).Error)
	evs := rec.take()
	var got []string
	for _, e := range evs {
		got = append(got, e.String())
	}
	equal(t, "events", got, []string{"snapshot tags/go,en@default", "snapshot tags/go,fr@default",
		"changed tags/go,fr@default", "changed tags/go,en@default", "deleted tags/go,en@default"})
	if len(evs) == 5 {
		if evs[2].JSON != `{"name":"go","lang":"fr","label":"Le Go"}` || evs[3].JSON != `{"name":"go","lang":"en","label":"Golang"}` {
			t.Errorf("records: %s, %s", evs[2].JSON, evs[3].JSON)
		}
	}
}

// TestCreateFromMap: a create from a map is published when its key is
// known, else the collection is resynced; never nothing.
func TestCreateFromMap(t *testing.T) {
	db, rec := openDB(t)
	mustNoErr(t, db.Model(&Post{}).Create(map[string]any{"title": "m", "body": "b"}).Error)
	mustNoErr(t, db.Table("posts").Create(map[string]any{"title": "n"}).Error)
	evs := rec.take()
	resyncs := rec.resynced()
	switch {
	case len(evs) == 1 && len(resyncs) == 1:
		t.Log("the map create was published by key")
		if evs[0].String() != "snapshot posts/1@default" || evs[0].JSON != getJSON(t, db, 1) {
			t.Errorf("event %s %s", evs[0], evs[0].JSON)
		}
	case len(evs) == 0 && len(resyncs) == 2:
		t.Log("the map create was resynced: its key was not given back")
	default:
		t.Errorf("events %v, resyncs %v", evs, resyncs)
	}
}

// TestPublishFailuresAreLogged: a failing publisher cannot fail the
// committed write; an outage is logged once, another failure per event,
// with the event's collection, ID and type.
func TestPublishFailuresAreLogged(t *testing.T) {
	var logs logBuffer
	db, rec := openDB(t, gormhook.WithLogger(newLogger(&logs)))
	rec.fail = fmt.Errorf("broker down: %w", realtime.ErrUnavailable)
	mustNoErr(t, db.Transaction(func(tx *gorm.DB) error { return tx.Create(&Post{Title: "a"}).Error }))
	mustNoErr(t, db.Session(&gorm.Session{AllowGlobalUpdate: true}).Model(&Post{}).Where("1 = 1").Limit(1).Update("title", "b").Error)
	rec.fail = errors.New("publisher bug")
	mustNoErr(t, db.Create(&Post{Title: "c"}).Error)
	out := logs.String()
	for _, want := range []string{"publisher unavailable", "broker down",
		`msg="gormhook: publish failed; kept in the outbox" collection=posts id=2 event=snapshot version=1`, "publisher bug"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "publisher unavailable"); n != 1 {
		t.Errorf("the outage logged %d times, want once:\n%s", n, out)
	}
	var n int64
	mustNoErr(t, db.Model(&Post{}).Count(&n).Error)
	if n != 2 {
		t.Errorf("%d posts stored, want 2", n)
	}
}

// TestInitializeErrors: bad options are refused at db.Use, wrapping
// realtime.ErrInvalidConfig.
func TestInitializeErrors(t *testing.T) {
	type noKey struct{ Name string }
	cases := []struct {
		name string
		hook *gormhook.Hook
	}{
		{"nil publisher", gormhook.New(nil, gormhook.Watch(&Post{}, "posts"))},
		{"typed nil publisher", gormhook.New((*realtime.Plugin)(nil), gormhook.Watch(&Post{}, "posts"))},
		{"empty collection", gormhook.New(&recorder{}, gormhook.Watch(&Post{}, ""))},
		{"collection with a newline", gormhook.New(&recorder{}, gormhook.Watch(&Post{}, "po\nsts"))},
		{"nil model", gormhook.New(&recorder{}, gormhook.Watch(nil, "posts"))},
		{"not a struct", gormhook.New(&recorder{}, gormhook.Watch(42, "posts"))},
		{"no primary key", gormhook.New(&recorder{}, gormhook.Watch(&noKey{}, "things"))},
		{"model watched twice", gormhook.New(&recorder{}, gormhook.Watch(&Post{}, "posts"), gormhook.Watch(&Post{}, "others"))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := openRaw(t, nil)
			err := db.Use(tc.hook)
			if !errors.Is(err, realtime.ErrInvalidConfig) || !strings.HasPrefix(err.Error(), "gormhook: ") {
				t.Fatalf("err = %v, want a gormhook: error wrapping ErrInvalidConfig", err)
			}
			// The database still works, unwrapped.
			mustNoErr(t, db.Create(&Post{Title: "a"}).Error)
		})
	}
	t.Run("one hook on two databases", func(t *testing.T) {
		h := gormhook.New(&recorder{}, gormhook.Watch(&Post{}, "posts"))
		use(t, openRaw(t, nil), h)
		if err := openRaw(t, nil).Use(h); !errors.Is(err, realtime.ErrInvalidConfig) {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestDBStillWorks: the wrapped pool still gives the *sql.DB and pings.
func TestDBStillWorks(t *testing.T) {
	db, _ := openDB(t)
	sqlDB, err := db.DB()
	mustNoErr(t, err)
	mustNoErr(t, sqlDB.Ping())
	mustNoErr(t, db.Transaction(func(tx *gorm.DB) error {
		d, err := tx.DB()
		if err == nil && d != sqlDB {
			err = errors.New("tx.DB() is another *sql.DB")
		}
		return err
	}))
	ps := openRaw(t, &gorm.Config{PrepareStmt: true})
	use(t, ps, gormhook.New(&recorder{}, gormhook.Watch(&Post{}, "posts")))
	_, err = ps.DB()
	mustNoErr(t, err)
	mustNoErr(t, ps.Transaction(func(tx *gorm.DB) error { return tx.Create(&Post{Title: "p"}).Error }))
}

// TestConcurrentWriters: transactions updating one record from many
// goroutines each publish their own version exactly once: versions 1 to N,
// each with the record as that transaction committed it (views counts the
// updates), however the publishes interleave.
func TestConcurrentWriters(t *testing.T) {
	db, rec := openDB(t)
	sqlDB, err := db.DB()
	mustNoErr(t, err)
	sqlDB.SetMaxOpenConns(4)
	p := Post{Title: "p"}
	mustNoErr(t, db.Create(&p).Error)
	const writers, each = 6, 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				err := db.Transaction(func(tx *gorm.DB) error {
					return tx.Model(&Post{ID: p.ID}).Updates(map[string]any{
						"views": gorm.Expr("views + 1"), "body": fmt.Sprintf("w%d-%d", w, i),
					}).Error
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	evs := rec.take()
	if len(evs) != 1+writers*each {
		t.Fatalf("%d events, want %d", len(evs), 1+writers*each)
	}
	byVersion := map[uint64]*Post{}
	for _, e := range evs {
		if byVersion[e.Version] != nil {
			t.Fatalf("version %d published twice", e.Version)
		}
		byVersion[e.Version] = e.Record.(*Post)
	}
	for v := uint64(1); v <= 1+writers*each; v++ {
		if r := byVersion[v]; r == nil || r.Views != 7+int(v)-1 {
			t.Fatalf("version %d: %+v, want views %d", v, r, 7+int(v)-1)
		}
	}
	if last := byVersion[1+writers*each]; last.Views != 7+writers*each {
		t.Fatalf("last version %+v", last)
	}
}

// TestReadInTransaction: the record an event carries is read inside the
// write's transaction, before its COMMIT (and after its version is taken):
// never a later state merged in.
func TestReadInTransaction(t *testing.T) {
	db, rec := openDB(t)
	p := Post{Title: "p"}
	mustNoErr(t, db.Create(&p).Error)
	rec.take()
	var reads, inTx atomic.Int32
	mustNoErr(t, db.Callback().Query().Before("gorm:query").Register("test:in_tx", func(db *gorm.DB) {
		if db.Statement.Table == "posts" {
			reads.Add(1)
			if _, ok := db.Statement.ConnPool.(gorm.TxCommitter); ok {
				inTx.Add(1)
			}
		}
	}))
	mustNoErr(t, db.Model(&Post{ID: p.ID}).Update("title", "A").Error)
	mustNoErr(t, db.Transaction(func(tx *gorm.DB) error { return tx.Model(&Post{ID: p.ID}).Update("title", "B").Error }))
	if reads.Load() != 2 || inTx.Load() != 2 {
		t.Fatalf("%d reads of posts, %d in a transaction; want 2 and 2", reads.Load(), inTx.Load())
	}
	evs := rec.take()
	if len(evs) != 2 || evs[0].Record.(*Post).Title != "A" || evs[0].Version != 2 ||
		evs[1].Record.(*Post).Title != "B" || evs[1].Version != 3 {
		t.Fatalf("events %v", evs)
	}
}

// TestDeletedCarriesPriorRecord: every form of delete publishes the row as
// it was before the delete, so the app's Authorizer can decide on it.
func TestDeletedCarriesPriorRecord(t *testing.T) {
	cases := []struct {
		name string
		del  func(db *gorm.DB) *gorm.DB
	}{
		{"by struct", func(db *gorm.DB) *gorm.DB { return db.Delete(&Post{ID: 2}) }},
		{"by primary key", func(db *gorm.DB) *gorm.DB { return db.Delete(&Post{}, 2) }},
		{"by condition", func(db *gorm.DB) *gorm.DB { return db.Where("title = ?", "b").Delete(&Post{}) }},
		{"hard delete", func(db *gorm.DB) *gorm.DB { return db.Unscoped().Delete(&Post{ID: 2}) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, rec := openDB(t)
			ps := posts("a", "b", "c")
			mustNoErr(t, db.Create(&ps).Error)
			rec.take()
			before := getJSON(t, db, 2)
			mustNoErr(t, tc.del(db).Error)
			got := rec.take()
			if len(got) != 1 || got[0].Event != realtime.EventDeleted || got[0].ID != "2" {
				t.Fatalf("published %v, want one deleted posts/2", got)
			}
			if got[0].JSON != before {
				t.Fatalf("prior record\n got %s\nwant %s", got[0].JSON, before)
			}
		})
	}
}
