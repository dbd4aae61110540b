package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"
	gormlogger "gorm.io/gorm/logger"
)

func TestOpenDatabase(t *testing.T) {
	cases := []struct {
		url, path string
		kind      string
		name      string
		dsn       string // mysql: the driver's DSN
		err       string // a part of the error
	}{
		{path: "x.db", kind: "sqlite", name: "x.db"},
		{url: "postgres://u:secret@db.example:5432/app?sslmode=disable", kind: "postgres", name: "postgres://db.example:5432/app"},
		{url: "postgresql://u@db.example/app", kind: "postgres", name: "postgres://db.example/app"},
		{url: "mysql://u:secret@db.example:3307/app", kind: "mysql", name: "mysql://db.example:3307/app",
			dsn: "u:secret@tcp(db.example:3307)/app?parseTime=true"},
		{url: "mysql://u@db.example/app", kind: "mysql", name: "mysql://db.example:3306/app",
			dsn: "u@tcp(db.example:3306)/app?parseTime=true"},
		{url: "mysql://u:p%40ss@127.0.0.1:3306/app?timeout=2s", kind: "mysql", name: "mysql://127.0.0.1:3306/app",
			dsn: "u:p@ss@tcp(127.0.0.1:3306)/app?parseTime=true&timeout=2s"},
		{url: "mysql://u:secret@tcp(127.0.0.1:3306)/app?charset=utf8mb4", kind: "mysql", name: "mysql://127.0.0.1:3306/app",
			dsn: "u:secret@tcp(127.0.0.1:3306)/app?parseTime=true&charset=utf8mb4"},
		{url: "mysql://u:secret@tcp(127.0.0.1:3306)/app?parseTime=false", kind: "mysql", name: "mysql://127.0.0.1:3306/app",
			dsn: "u:secret@tcp(127.0.0.1:3306)/app?parseTime=true"},
		{url: "MYSQL://u@h:1/d", kind: "mysql", name: "mysql://h:1/d", dsn: "u@tcp(h:1)/d?parseTime=true"},
		{url: "mysql://u:secret@db.example:3306/", err: "database name is required"},
		{url: "mysql://u:secret@tcp(127.0.0.1:3306", err: "not a valid MySQL DSN"},
		{url: "mysql://u:secret@db.example:3306/app?timeout=soon", err: "bad MySQL parameters"},
		{url: "sqlserver://u:secret@h/db", err: "unsupported scheme"},
		{url: "u:secret@tcp(h)/db", err: "must start with"},
		{path: "", err: "required"},
	}
	for _, c := range cases {
		db, err := openDatabase(c.url, c.path)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("openDatabase(%q, %q): error %v, want one saying %q", c.url, c.path, err, c.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("openDatabase(%q): the error %q shows the password", c.url, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("openDatabase(%q, %q): %v", c.url, c.path, err)
			continue
		}
		if db.kind != c.kind || db.name != c.name {
			t.Errorf("openDatabase(%q, %q): kind %q name %q, want %q %q", c.url, c.path, db.kind, db.name, c.kind, c.name)
		}
		if c.dsn != "" {
			cfg, err := mysqlConfig(c.url)
			if err != nil {
				t.Errorf("mysqlConfig(%q): %v", c.url, err)
			} else if got := cfg.FormatDSN(); got != c.dsn {
				t.Errorf("mysqlConfig(%q): DSN %q, want %q", c.url, got, c.dsn)
			}
		}
	}
}

// Where the tests find a PostgreSQL and a MySQL (or MariaDB) server to
// create their databases on; .ci/run starts both with these defaults.
const (
	defaultTestPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	defaultTestMySQL    = "mysql://root@127.0.0.1:3306/test"
)

// freshDatabase returns the app configuration of a new, empty database of
// kind ("sqlite", "postgres", "mysql"), dropped when the test ends. A server
// that does not answer skips the test, except on CI, where it fails.
func freshDatabase(t *testing.T, kind string) appConfig {
	t.Helper()
	if kind == "sqlite" {
		return appConfig{DBPath: filepath.Join(t.TempDir(), "cms.db")}
	}
	admin := os.Getenv("TEST_POSTGRES_URL")
	if kind == "mysql" {
		admin = os.Getenv("TEST_MYSQL_URL")
	}
	if admin == "" {
		admin = map[string]string{"postgres": defaultTestPostgres, "mysql": defaultTestMySQL}[kind]
	}
	db, err := openDatabase(admin, "")
	if err != nil {
		t.Fatalf("the %s admin URL: %v", kind, err)
	}
	addr := strings.TrimPrefix(strings.TrimPrefix(db.name, "postgres://"), "mysql://")
	addr, _, _ = strings.Cut(addr, "/")
	if kind == "postgres" && !strings.Contains(addr, ":") {
		addr += ":5432"
	}
	if conn, err := net.DialTimeout("tcp", addr, 2*time.Second); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no %s server at %s (.ci/run starts one): %v", kind, addr, err)
		}
		t.Skipf("no %s server at %s: %v", kind, addr, err)
	} else {
		_ = conn.Close()
	}
	gdb, err := gorm.Open(db.dialector, &gorm.Config{Logger: gormlogger.Discard})
	if err != nil {
		t.Fatalf("connect to %s: %v", db.name, err)
	}
	sqlDB, _ := gdb.DB()
	t.Cleanup(func() { _ = sqlDB.Close() })
	name := "cms_test_" + strings.ToLower(rand.Text()[:12])
	if err := gdb.Exec("CREATE DATABASE " + name).Error; err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		drop := "DROP DATABASE IF EXISTS " + name
		if kind == "postgres" {
			drop += " WITH (FORCE)"
		}
		if err := gdb.Exec(drop).Error; err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	if kind == "mysql" {
		cfg, _ := mysqlConfig(admin)
		cfg.DBName = name
		return appConfig{DatabaseURL: "mysql://" + cfg.FormatDSN()}
	}
	u, _ := url.Parse(admin)
	u.Path = "/" + name
	return appConfig{DatabaseURL: u.String()}
}

// TestSharedDatabase runs two instances of the app on one database (SQLite
// file, PostgreSQL, MySQL/MariaDB): concurrent increments through both all
// count, each answer carries the version its own write committed, and of
// concurrent PATCHes with one If-Match exactly one wins.
func TestSharedDatabase(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres", "mysql"} {
		t.Run(kind, func(t *testing.T) {
			cfg := freshDatabase(t, kind)
			a := newEnvWith(t, cfg)
			b := newEnvWith(t, cfg)
			envs := []*env{a, b}
			tok := token(t, "alice", "t1")
			p, tag0 := a.create(tok, "shared", "body", false)
			var p0 Post
			r := b.do("GET", "/api/v1/posts/"+p.ID, tok, "")
			wantStatus(t, "GET on the other instance", r, http.StatusOK)
			r.json(t, &p0)
			if got := r.header.Get("ETag"); got != tag0 || p0.Counter != 0 {
				t.Fatalf("GET on the other instance: ETag %s counter %d, want the create's %s and 0", got, p0.Counter, tag0)
			}

			// Concurrent increments through both instances.
			const workers, each = 6, 5
			type answer struct {
				status  int
				counter int64
				tag     string
				body    string
			}
			var mu sync.Mutex
			var answers []answer
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range each {
						r := envs[w%2].do("PATCH", "/api/v1/posts/"+p.ID, tok, `{"increment":1}`)
						var got Post
						_ = json.Unmarshal(r.body, &got)
						mu.Lock()
						answers = append(answers, answer{r.status, got.Counter, r.header.Get("ETag"), string(r.body)})
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			sort.Slice(answers, func(i, j int) bool { return answers[i].counter < answers[j].counter })
			last := ""
			for i, an := range answers {
				if an.status != http.StatusOK {
					t.Fatalf("increment: status %d %s", an.status, an.body)
				}
				if an.counter != int64(i+1) {
					t.Fatalf("increment answers' counters %v: want each of 1..%d once", answers, workers*each)
				}
				var got Post
				_ = json.Unmarshal([]byte(an.body), &got)
				want, err := a.app.etag(&got)
				if err != nil || an.tag != want {
					t.Errorf("counter %d answered ETag %s; its body's ETag is %s (%v)", an.counter, an.tag, want, err)
				}
				last = an.tag
			}
			r = a.do("GET", "/api/v1/posts/"+p.ID, tok, "")
			var final Post
			r.json(t, &final)
			if final.Counter != workers*each || r.header.Get("ETag") != last {
				t.Errorf("final GET: counter %d ETag %s, want %d and the last increment's %s", final.Counter, r.header.Get("ETag"), workers*each, last)
			}

			// Compare-and-write: every PATCH names the current version; one wins.
			const racers = 8
			statuses := make([]int, racers)
			tags := make([]string, racers)
			for i := range racers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := envs[i%2].do("PATCH", "/api/v1/posts/"+p.ID, tok, fmt.Sprintf(`{"title":"racer %d"}`, i), "If-Match", last)
					statuses[i], tags[i] = r.status, r.header.Get("ETag")
				}()
			}
			wg.Wait()
			won := 0
			winner := ""
			for i, s := range statuses {
				if s == http.StatusOK {
					won++
					winner = tags[i]
				} else if s != http.StatusPreconditionFailed {
					t.Errorf("racer %d: status %d, want 200 or 412", i, s)
				}
			}
			if won != 1 {
				t.Fatalf("If-Match race: %d winners (statuses %v), want exactly 1", won, statuses)
			}
			for i, s := range statuses {
				if s == http.StatusPreconditionFailed && tags[i] != winner && tags[i] != last {
					t.Errorf("racer %d: 412 with ETag %s, want the current version's", i, tags[i])
				}
			}
			// A delete naming a stale version changes nothing; the current one deletes.
			wantStatus(t, "stale DELETE", b.do("DELETE", "/api/v1/posts/"+p.ID, tok, "", "If-Match", last), http.StatusPreconditionFailed)
			wantStatus(t, "DELETE", b.do("DELETE", "/api/v1/posts/"+p.ID, tok, "", "If-Match", winner), http.StatusNoContent)
			wantStatus(t, "GET after DELETE", a.do("GET", "/api/v1/posts/"+p.ID, tok, ""), http.StatusNotFound)
		})
	}
}

func TestIncrementInput(t *testing.T) {
	e := newEnv(t)
	tok := token(t, "alice", "t1")
	p, _ := e.create(tok, "t", "b", false)
	r := e.do("PATCH", "/api/v1/posts/"+p.ID, tok, `{"counter":5,"increment":1}`)
	wantStatus(t, "counter with increment", r, http.StatusBadRequest)
	r = e.do("PATCH", "/api/v1/posts/"+p.ID, tok, `{"counter":"5"}`)
	wantStatus(t, "a string counter", r, http.StatusBadRequest)
	r = e.do("PATCH", "/api/v1/posts/"+p.ID, tok, `{"counter":5}`)
	wantStatus(t, "set the counter", r, http.StatusOK)
	r = e.do("PATCH", "/api/v1/posts/"+p.ID, tok, `{"increment":-2}`)
	wantStatus(t, "add to it", r, http.StatusOK)
	var got Post
	r.json(t, &got)
	if got.Counter != 3 {
		t.Errorf("counter %d after 5 - 2, want 3", got.Counter)
	}
	other := token(t, "bob", "t2")
	wantStatus(t, "another tenant's increment", e.do("PATCH", "/api/v1/posts/"+p.ID, other, `{"increment":1}`), http.StatusNotFound)
}
