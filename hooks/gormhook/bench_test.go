package gormhook_test

import (
	"context"
	"log/slog"
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
					for b.Loop() {
						if err := db.Model(&Post{ID: p.ID}).Update("views", gorm.Expr("views + 1")).Error; err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}
