package gormhook_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	closeAdminDBs()
	if code == 0 {
		// GORM's prepared-statement cache (PrepareStmt) starts an expiry
		// goroutine that it never stops ("done channel is never closed",
		// gorm.io/gorm/internal/lru); the hook starts none but the outbox
		// drainer, which Close stops.
		if err := goleak.Find(goleak.IgnoreTopFunction("gorm.io/gorm/internal/lru.NewLRU[...].func1")); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
