package gormhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/hooks/gormhook"
	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Post is a watched model with a database default, timestamps and soft delete.
type Post struct {
	ID        uint           `json:"id" gorm:"primaryKey"`
	Tenant    string         `json:"tenant"`
	Title     string         `json:"title"`
	Body      string         `json:"body"`
	Views     int            `json:"views" gorm:"default:7"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
	DeletedAt gorm.DeletedAt `json:"deleted_at" gorm:"index"`
}

// Tag is a watched model with a composite primary key and no soft delete.
type Tag struct {
	Name  string `json:"name" gorm:"primaryKey"`
	Lang  string `json:"lang" gorm:"primaryKey"`
	Label string `json:"label"`
}

// Note is never watched.
type Note struct {
	ID   uint   `json:"id" gorm:"primaryKey"`
	Text string `json:"text"`
}

// published is one call the recorder saw.
type published struct {
	Tenant, Collection, ID, Event string
	JSON                          string // the record's JSON (snapshot, changed; for deleted the prior row, if any)
	Record                        any    // JSON decoded into a *Post or *Tag
	ETag                          string
	Version                       uint64
	Gap                           bool
}

func (p published) String() string {
	return fmt.Sprintf("%s %s/%s@%s", p.Event, p.Collection, p.ID, p.Tenant)
}

// recorder is a fake Publisher that records what it is given.
type recorder struct {
	mu      sync.Mutex
	events  []published
	resyncs []string // "tenant/collection"
	fail    error
}

var _ gormhook.Publisher = (*recorder)(nil)

func (r *recorder) Publish(_ context.Context, p realtime.Publication) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return "", r.fail
	}
	ev := published{Tenant: p.Tenant, Collection: p.Collection, ID: p.ID, Event: p.Event,
		ETag: p.ETag, Version: p.Version, Gap: p.Gap, JSON: string(p.Data)}
	if p.Data == nil && p.Record != nil {
		b, err := json.Marshal(p.Record)
		if err != nil {
			return "", err
		}
		ev.JSON = string(b)
	}
	if ev.JSON != "" {
		switch p.Collection {
		case "posts":
			ev.Record = new(Post)
		case "tags":
			ev.Record = new(Tag)
		}
		if ev.Record != nil {
			if err := json.Unmarshal([]byte(ev.JSON), ev.Record); err != nil {
				return "", err
			}
		}
	}
	r.events = append(r.events, ev)
	return p.ETag, nil
}

func (r *recorder) Resync(ctx context.Context, collection string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resyncs = append(r.resyncs, realtime.TenantFrom(ctx)+"/"+collection)
	return r.fail
}

// got returns the events as strings ("snapshot posts/1@default") and the
// resyncs, and forgets them.
func (r *recorder) got() (events []string, resyncs []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		events = append(events, e.String())
	}
	resyncs = r.resyncs
	r.events, r.resyncs = nil, nil
	return events, resyncs
}

// resynced returns the resyncs seen so far.
func (r *recorder) resynced() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.resyncs)
}

// take returns and forgets the events (not the resyncs).
func (r *recorder) take() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.events
	r.events = nil
	return evs
}

// openDB opens a fresh SQLite database file with the tables migrated and the
// hook installed (posts and tags watched) publishing to a recorder.
func openDB(t *testing.T, opts ...gormhook.Option) (*gorm.DB, *recorder) {
	t.Helper()
	db := openRaw(t, nil)
	rec := &recorder{}
	opts = append([]gormhook.Option{gormhook.Watch(&Post{}, "posts"), gormhook.Watch(&Tag{}, "tags")}, opts...)
	use(t, db, gormhook.New(rec, opts...))
	return db, rec
}

// use installs h on db and closes it (stopping its drainer) when the test
// ends, before the database closes.
func use(t testing.TB, db *gorm.DB, h *gormhook.Hook) {
	t.Helper()
	if err := db.Use(h); err != nil {
		t.Fatalf("db.Use: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("close the hook: %v", err)
		}
	})
}

// openRaw opens a migrated database without the hook.
func openRaw(t *testing.T, cfg *gorm.Config) *gorm.DB {
	t.Helper()
	if cfg == nil {
		cfg = &gorm.Config{}
	}
	cfg.Logger = logger.Discard
	dsn := filepath.Join(t.TempDir(), "test.db") + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)"
	db, err := gorm.Open(sqlite.Open(dsn), cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatalf("db.DB: %v", err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	if err := db.AutoMigrate(&Post{}, &Tag{}, &Note{}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

// getJSON is what an app's GET handler answers: the row read by primary key
// and marshalled.
func getJSON(t *testing.T, db *gorm.DB, id uint) string {
	t.Helper()
	var p Post
	if err := db.First(&p, id).Error; err != nil {
		t.Fatalf("get post %d: %v", id, err)
	}
	b, err := json.Marshal(&p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func equal(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

var errRollback = errors.New("roll back")

// logBuffer is a slog handler target safe for concurrent writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLogger(l *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func posts(titles ...string) []Post {
	ps := make([]Post, len(titles))
	for i, s := range titles {
		ps[i] = Post{Title: s, Body: "body of " + s}
	}
	return ps
}

func ids(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s%d@default", prefix, i))
	}
	return out
}

var _ = strings.Join
