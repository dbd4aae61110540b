package gormhook_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// GORM's prepared-statement cache (PrepareStmt) starts an expiry
		// goroutine that it never stops ("done channel is never closed",
		// gorm.io/gorm/internal/lru); the hook starts none but the outbox
		// drainer, which Close stops.
		goleak.IgnoreTopFunction("gorm.io/gorm/internal/lru.NewLRU[...].func1"),
	)
}
