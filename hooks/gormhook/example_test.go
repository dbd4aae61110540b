package gormhook_test

import (
	"context"
	"log"

	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/hooks/gormhook"
	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
)

func ExampleNew() {
	// The hook publishes through the plugin, and the plugin loads its
	// snapshots through the hook (with their versions): the loader reaches
	// the hook through a variable set below.
	var hook *gormhook.Hook
	rt, err := realtime.New(realtime.Config{
		JWTSecret: []byte("change me"),
		Loader: func(ctx context.Context, ref realtime.Ref) (any, error) {
			return hook.Loader(func(ctx context.Context, tx *gorm.DB, ref realtime.Ref) (any, error) {
				var p Post // read as the app's GET handler reads
				if err := tx.Where("id = ?", ref.ID).Take(&p).Error; err != nil {
					return nil, err
				}
				return &p, nil
			})(ctx, ref)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(context.Background())

	db, err := gorm.Open(sqlite.Open("app.db?_pragma=busy_timeout(5000)&_txlock=immediate"), &gorm.Config{})
	if err != nil {
		log.Fatal(err)
	}
	// Right after Open, before deriving sessions from db. It creates the
	// versions and outbox tables and starts the outbox drainer.
	hook = gormhook.New(rt, gormhook.Watch(&Post{}, "posts"))
	if err := db.Use(hook); err != nil {
		log.Fatal(err)
	}
	defer hook.Close(context.Background()) // before rt.Close

	// In a handler: the write's tenant comes from the context; the event is
	// recorded in the transaction and published when it commits.
	ctx := realtime.WithTenant(context.Background(), "acme")
	_ = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return tx.Create(&Post{Title: "hello"}).Error
	})
}

func ExampleWithTenant() {
	_ = gormhook.New(nil, // the *realtime.Plugin
		gormhook.Watch(&Post{}, "posts"),
		gormhook.WithTenant(func(_ context.Context, record any) string {
			if p, ok := record.(*Post); ok { // a pointer to the model
				return p.Tenant
			}
			return "" // the context's tenant
		}),
	)
}
