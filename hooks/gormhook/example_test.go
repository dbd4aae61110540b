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
	rt, err := realtime.New(realtime.Config{JWTSecret: []byte("change me")})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(context.Background())

	db, err := gorm.Open(sqlite.Open("app.db"), &gorm.Config{})
	if err != nil {
		log.Fatal(err)
	}
	// Right after Open, before deriving sessions from db.
	if err := db.Use(gormhook.New(rt, gormhook.Watch(&Post{}, "posts"))); err != nil {
		log.Fatal(err)
	}

	// In a handler: the write's tenant comes from the context; the event is
	// published when the transaction commits.
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
