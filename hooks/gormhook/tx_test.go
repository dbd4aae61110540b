package gormhook_test

import (
	"errors"
	"testing"

	"github.com/ginrealtime/realtime/hooks/gormhook"
	"gorm.io/gorm"
)

// TestTransactions shows that events are published only after the outermost
// transaction commits, in order, and never for rolled back work.
func TestTransactions(t *testing.T) {
	create := func(db *gorm.DB, title string) error { return db.Create(&Post{Title: title}).Error }
	cases := []struct {
		name    string
		run     func(db *gorm.DB) error
		wantErr bool
		want    []string
		titles  []string // when set: the titles of the published posts
	}{
		{
			name: "write outside a transaction: its own commit",
			run:  func(db *gorm.DB) error { return create(db, "a") },
			want: []string{"snapshot posts/1@default"},
		},
		{
			name: "commit: one event",
			run: func(db *gorm.DB) error {
				return db.Transaction(func(tx *gorm.DB) error { return create(tx, "a") })
			},
			want: []string{"snapshot posts/1@default"},
		},
		{
			name: "rollback: no event",
			run: func(db *gorm.DB) error {
				return db.Transaction(func(tx *gorm.DB) error {
					if err := create(tx, "a"); err != nil {
						return err
					}
					return errRollback
				})
			},
			wantErr: true,
		},
		{
			name: "outer rollback around an inner success: no event",
			run: func(db *gorm.DB) error {
				return db.Transaction(func(tx *gorm.DB) error {
					if err := tx.Transaction(func(tx2 *gorm.DB) error { return create(tx2, "inner") }); err != nil {
						return err
					}
					return errRollback
				})
			},
			wantErr: true,
		},
		{
			name: "inner rollback inside an outer commit: the outer's events only",
			run: func(db *gorm.DB) error {
				return db.Transaction(func(tx *gorm.DB) error {
					if err := create(tx, "outer1"); err != nil {
						return err
					}
					if err := tx.Transaction(func(tx2 *gorm.DB) error {
						if err := create(tx2, "inner"); err != nil {
							return err
						}
						return errRollback
					}); !errors.Is(err, errRollback) {
						return err
					}
					return create(tx, "outer2")
				})
			},
			// The inner insert's id 2 was rolled back; SQLite reuses it.
			want:   []string{"snapshot posts/1@default", "snapshot posts/2@default"},
			titles: []string{"outer1", "outer2"},
		},
		{
			name: "nested commits: every event, in order",
			run: func(db *gorm.DB) error {
				return db.Transaction(func(tx *gorm.DB) error {
					if err := create(tx, "a"); err != nil {
						return err
					}
					if err := tx.Transaction(func(tx2 *gorm.DB) error {
						if err := create(tx2, "b"); err != nil {
							return err
						}
						return tx2.Transaction(func(tx3 *gorm.DB) error {
							if err := create(tx3, "c"); err != nil {
								return err
							}
							return tx3.Model(&Post{ID: 1}).Update("title", "a2").Error
						})
					}); err != nil {
						return err
					}
					return create(tx, "d")
				})
			},
			// Post 1's changed carries the same committed version as its
			// snapshot: it is published once, at its first event.
			want:   []string{"snapshot posts/1@default", "snapshot posts/2@default", "snapshot posts/3@default", "snapshot posts/4@default"},
			titles: []string{"a2", "b", "c", "d"},
		},
		{
			name: "a rolled back inner level between committed ones",
			run: func(db *gorm.DB) error {
				return db.Transaction(func(tx *gorm.DB) error {
					return tx.Transaction(func(tx2 *gorm.DB) error {
						if err := create(tx2, "kept"); err != nil {
							return err
						}
						_ = tx2.Transaction(func(tx3 *gorm.DB) error {
							_ = create(tx3, "dropped")
							return errRollback
						})
						return tx2.Delete(&Post{ID: 1}).Error
					})
				})
			},
			want: []string{"deleted posts/1@default"},
		},
		{
			name: "manual Begin/Commit",
			run: func(db *gorm.DB) error {
				tx := db.Begin()
				if err := create(tx, "a"); err != nil {
					tx.Rollback()
					return err
				}
				if err := create(tx, "b"); err != nil {
					tx.Rollback()
					return err
				}
				return tx.Commit().Error
			},
			want: []string{"snapshot posts/1@default", "snapshot posts/2@default"},
		},
		{
			name: "manual Begin/Rollback",
			run: func(db *gorm.DB) error {
				tx := db.Begin()
				if err := create(tx, "a"); err != nil {
					return err
				}
				return tx.Rollback().Error
			},
		},
		{
			name: "manual savepoints",
			run: func(db *gorm.DB) error {
				tx := db.Begin()
				_ = create(tx, "a")
				tx.SavePoint("sp1")
				_ = create(tx, "b")
				tx.RollbackTo("sp1")
				_ = create(tx, "c")
				return tx.Commit().Error
			},
			want:   []string{"snapshot posts/1@default", "snapshot posts/2@default"},
			titles: []string{"a", "c"},
		},
		{
			name: "failed write inside a committed transaction: nothing for it",
			run: func(db *gorm.DB) error {
				return db.Transaction(func(tx *gorm.DB) error {
					_ = create(tx, "a")
					if err := tx.Create(&Post{ID: 1, Title: "dup"}).Error; err == nil {
						return errors.New("duplicate key accepted")
					}
					return nil
				})
			},
			want: []string{"snapshot posts/1@default"},
		},
		{
			name: "SkipDefaultTransaction: published when the statement returns",
			run: func(db *gorm.DB) error {
				return create(db.Session(&gorm.Session{SkipDefaultTransaction: true}), "a")
			},
			want: []string{"snapshot posts/1@default"},
		},
		{
			name: "prepared statements, in and out of a transaction",
			run: func(db *gorm.DB) error {
				ps := db.Session(&gorm.Session{PrepareStmt: true})
				if err := create(ps, "a"); err != nil {
					return err
				}
				if err := ps.Transaction(func(tx *gorm.DB) error {
					if err := create(tx, "b"); err != nil {
						return err
					}
					return tx.Transaction(func(tx2 *gorm.DB) error {
						_ = create(tx2, "c")
						return errRollback
					})
				}); !errors.Is(err, errRollback) {
					return err
				}
				return ps.Transaction(func(tx *gorm.DB) error {
					if err := create(tx, "d"); err != nil {
						return err
					}
					_ = tx.Transaction(func(tx2 *gorm.DB) error {
						_ = create(tx2, "e")
						return errRollback
					})
					return nil
				})
			},
			// b's transaction rolled back (the inner error was returned); e's
			// savepoint rolled back inside a committed transaction.
			want:   []string{"snapshot posts/1@default", "snapshot posts/2@default"},
			titles: []string{"a", "d"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, rec := openDB(t)
			err := tc.run(db)
			if (err != nil) != tc.wantErr {
				t.Fatalf("run: err = %v, want error %v", err, tc.wantErr)
			}
			equal(t, "resyncs", rec.resynced(), nil)
			evs := rec.take()
			var got, titles []string
			for _, e := range evs {
				got = append(got, e.String())
				if p, ok := e.Record.(*Post); ok {
					titles = append(titles, p.Title)
				}
			}
			equal(t, "events", got, tc.want)
			if tc.titles != nil {
				equal(t, "titles", titles, tc.titles)
			}
		})
	}
}

// TestNothingBeforeCommit shows that a callback placed after GORM's commit
// step (which fires inside a caller's transaction) is not what publishes:
// nothing is published until the caller's transaction commits.
func TestNothingBeforeCommit(t *testing.T) {
	db, rec := openDB(t)
	err := db.Transaction(func(tx *gorm.DB) error {
		for _, p := range posts("a", "b") {
			if err := tx.Create(&p).Error; err != nil {
				return err
			}
		}
		if err := tx.Model(&Post{ID: 1}).Update("title", "a2").Error; err != nil {
			return err
		}
		if err := tx.Delete(&Post{ID: 2}).Error; err != nil {
			return err
		}
		if got, _ := rec.got(); len(got) != 0 {
			t.Errorf("published before commit: %q", got)
		}
		return nil
	})
	mustNoErr(t, err)
	got, _ := rec.got()
	equal(t, "events", got, []string{"snapshot posts/1@default", "deleted posts/2@default"})
}

// TestUnmanagedTransaction: a transaction the hook cannot follow refuses the
// write; single writes through such sessions are followed.
func TestUnmanagedTransaction(t *testing.T) {
	db := openRaw(t, nil)
	early := db.WithContext(t.Context()) // derived before db.Use: the raw pool
	rec := &recorder{}
	use(t, db, gormhook.New(rec, gormhook.Watch(&Post{}, "posts")))

	err := early.Transaction(func(tx *gorm.DB) error { return tx.Create(&Post{Title: "a"}).Error })
	if !errors.Is(err, gormhook.ErrUnmanagedTx) {
		t.Fatalf("write in an unmanaged transaction: err = %v, want ErrUnmanagedTx", err)
	}
	// Unwatched models are not concerned.
	mustNoErr(t, early.Transaction(func(tx *gorm.DB) error { return tx.Create(&Note{Text: "n"}).Error }))

	mustNoErr(t, early.Create(&Post{Title: "b"}).Error)
	mustNoErr(t, db.Connection(func(c *gorm.DB) error { return c.Create(&Post{Title: "c"}).Error }))
	got, _ := rec.got()
	equal(t, "events", got, []string{"snapshot posts/1@default", "snapshot posts/2@default"})

	var n int64
	mustNoErr(t, db.Model(&Post{}).Count(&n).Error)
	if n != 2 {
		t.Errorf("%d posts stored, want 2 (the refused write must not be committed)", n)
	}
}
