package gormhook_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// The servers the tests use besides SQLite: a PostgreSQL with trust
// authentication and a MariaDB (or MySQL) whose root has no password, each
// with a database named test. Every test gets a schema (PostgreSQL) or a
// database (MariaDB) of its own, dropped at its end.
const (
	postgresDSN = "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"
	mysqlServer = "root@tcp(127.0.0.1:3306)/"
	mysqlParams = "?parseTime=true&loc=UTC&charset=utf8mb4"
)

// dialects are the databases the hook is tested on.
var dialects = []string{"sqlite", "postgres", "mysql"}

// testDB is a fresh, migrated database that several connection pools
// ("nodes", each a *gorm.DB with a hook of its own) can open.
type testDB struct {
	dialect string
	dsn     string // the DSN of this database (or schema)
}

// forEachDialect runs f as a subtest per dialect, each on a fresh database.
func forEachDialect(t *testing.T, f func(t *testing.T, tdb *testDB)) {
	t.Helper()
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) { f(t, newTestDB(t, d)) })
	}
}

// newTestDB creates a fresh database of the dialect, with the test models'
// tables, dropped when the test ends. A server that cannot be reached skips
// the test, or fails it when CI=true.
func newTestDB(t testing.TB, dialect string) *testDB {
	t.Helper()
	name := "gh_" + randomHex(6)
	tdb := &testDB{dialect: dialect}
	switch dialect {
	case "sqlite":
		tdb.dsn = filepath.Join(t.TempDir(), "app.db") +
			"?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_txlock=immediate"
	case "postgres":
		admin := adminDB(t, dialect)
		mustExec(t, admin, "CREATE SCHEMA "+name)
		t.Cleanup(func() { _ = admin.Exec("DROP SCHEMA " + name + " CASCADE").Error })
		tdb.dsn = postgresDSN + " search_path=" + name
	case "mysql":
		admin := adminDB(t, dialect)
		mustExec(t, admin, "CREATE DATABASE "+name)
		t.Cleanup(func() { _ = admin.Exec("DROP DATABASE " + name).Error })
		tdb.dsn = mysqlServer + name + mysqlParams
	default:
		t.Fatalf("unknown dialect %q", dialect)
	}
	db := tdb.open(t)
	if err := db.AutoMigrate(&Post{}, &Tag{}, &Note{}); err != nil {
		t.Fatalf("%s: migrate: %v", dialect, err)
	}
	return tdb
}

// open opens a new connection pool on the database, closed when the test
// ends. Each call is another process sharing the database.
func (d *testDB) open(t testing.TB) *gorm.DB {
	t.Helper()
	db, err := gorm.Open(dialector(d.dialect, d.dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatalf("%s: open: %v", d.dialect, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	if d.dialect != "sqlite" {
		sqlDB.SetMaxOpenConns(8)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	return db
}

func dialector(dialect, dsn string) gorm.Dialector {
	switch dialect {
	case "postgres":
		return postgres.Open(dsn)
	case "mysql":
		return mysql.Open(dsn)
	}
	return sqlite.Open(dsn)
}

var (
	adminMu  sync.Mutex
	adminDBs = map[string]*gorm.DB{}
	adminErr = map[string]error{}
)

// adminDB is a connection to the server's test database, opened once per
// package run; it skips (or fails, on CI) a test whose server is missing.
func adminDB(t testing.TB, dialect string) *gorm.DB {
	t.Helper()
	adminMu.Lock()
	defer adminMu.Unlock()
	db, err := adminDBs[dialect], adminErr[dialect]
	if db == nil && err == nil {
		db, err = openAdmin(dialect)
		adminDBs[dialect], adminErr[dialect] = db, err
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s server unreachable (CI needs it): %v", dialect, err)
		}
		t.Skipf("%s server unreachable: %v", dialect, err)
	}
	return db
}

func openAdmin(dialect string) (*gorm.DB, error) {
	dsn := postgresDSN
	if dialect == "mysql" {
		dsn = mysqlServer + "test" + mysqlParams
	}
	db, err := gorm.Open(dialector(dialect, dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return nil, err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	sqlDB.SetMaxOpenConns(2)
	sqlDB.SetConnMaxIdleTime(time.Second) // no idle connection outlives the run for long
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sqlDB.PingContext(ctx); err != nil {
		_ = sqlDB.Close()
		return nil, err
	}
	return db, nil
}

// closeAdminDBs closes the admin connections (TestMain, before goleak).
func closeAdminDBs() {
	adminMu.Lock()
	defer adminMu.Unlock()
	for _, db := range adminDBs {
		if db == nil {
			continue // the server was unreachable
		}
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	}
	clear(adminDBs)
}

func mustExec(t testing.TB, db *gorm.DB, query string, args ...any) {
	t.Helper()
	if err := db.Exec(query, args...).Error; err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
