package gormhook_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/hooks/gormhook"
	"gorm.io/gorm"
)

// nopPub publishes nothing, at no cost: the benchmark measures the hook.
type nopPub struct{}

func (nopPub) Publish(context.Context, realtime.Publication) (string, error) { return `"x"`, nil }
func (nopPub) Resync(context.Context, string) error                          { return nil }

// BenchmarkUpdate: one update of one record (its own transaction), through
// the hook and without it, per database. The publisher does nothing: what
// is measured is the hook's work in the database (versions, record read,
// outbox row, its deletion).
//
//	go test -run '^$' -bench Update -benchtime 2000x ./hooks/gormhook/
func BenchmarkUpdate(b *testing.B) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		b.Run(dialect, func(b *testing.B) {
			for _, mode := range []string{"no hook", "hook"} {
				b.Run(mode, func(b *testing.B) {
					db := newTestDB(b, dialect).open(b)
					if mode != "no hook" {
						opts := []gormhook.Option{gormhook.Watch(&Post{}, "posts"),
							gormhook.WithLogger(slog.New(slog.DiscardHandler))}
						h := gormhook.New(nopPub{}, opts...)
						if err := db.Use(h); err != nil {
							b.Fatal(err)
						}
						b.Cleanup(func() { _ = h.Close(context.Background()) })
					}
					p := Post{Title: "p"}
					if err := db.Create(&p).Error; err != nil {
						b.Fatal(err)
					}
					stmts := countStatements(b, db)
					for b.Loop() {
						if err := db.Model(&Post{ID: p.ID}).Update("views", gorm.Expr("views + 1")).Error; err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(stmts.Load())/float64(b.N), "stmts/op")
				})
			}
		})
	}
}

// countStatements counts the SQL statements run through db's callbacks
// from now on (transaction BEGIN and COMMIT aside).
func countStatements(b *testing.B, db *gorm.DB) *atomic.Int64 {
	var n atomic.Int64
	count := func(*gorm.DB) { n.Add(1) }
	cb := db.Callback()
	for _, err := range []error{
		cb.Create().Before("gorm:create").Register("bench:count", count),
		cb.Query().Before("gorm:query").Register("bench:count", count),
		cb.Update().Before("gorm:update").Register("bench:count", count),
		cb.Delete().Before("gorm:delete").Register("bench:count", count),
		cb.Row().Before("gorm:row").Register("bench:count", count),
		cb.Raw().Before("gorm:raw").Register("bench:count", count),
	} {
		if err != nil {
			b.Fatal(err)
		}
	}
	return &n
}
