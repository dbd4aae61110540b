package gormhook_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// GORM's prepared-statement cache (PrepareStmt) starts an expiry
		// goroutine that it never stops ("done channel is never closed",
		// gorm.io/gorm/internal/lru); the hook starts no goroutine.
		goleak.IgnoreTopFunction("gorm.io/gorm/internal/lru.NewLRU[...].func1"),
	)
}
