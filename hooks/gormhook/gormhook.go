package gormhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"

	"github.com/ginrealtime/realtime"
	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// Publisher is what the hook needs of the realtime plugin (*realtime.Plugin
// implements it).
type Publisher interface {
	Publish(ctx context.Context, pub realtime.Publication) (string, error)
	Resync(ctx context.Context, collection string) error
}

var _ Publisher = (*realtime.Plugin)(nil)

// ErrUnmanagedTx is the error of a write to a watched model inside a
// transaction the hook did not see begin (one begun on a *gorm.DB derived
// before db.Use, or inside db.Connection): its commit cannot be observed, so
// the write is refused rather than published too early or never.
var ErrUnmanagedTx = errors.New("gormhook: write in a transaction the hook does not manage (install the hook with db.Use right after gorm.Open, before deriving sessions; db.Connection transactions are not supported)")

// DefaultMaxAffected is the default cap on the records a write by condition
// may name before the hook publishes a collection resync instead.
const DefaultMaxAffected = 1000

// Option configures the hook.
type Option func(*Hook)

// Watch makes writes to model's table events of collection. model is a
// pointer to the model struct, e.g. Watch(&Post{}, "posts").
func Watch(model any, collection string) Option {
	return func(h *Hook) { h.watch = append(h.watch, watched{model: model, collection: collection}) }
}

// WithReload sets whether the records written are read by primary key in
// the write's transaction, at commit (default true), so that an event
// carries the whole stored record, byte for byte what the app's GET handler
// marshals (database defaults, timestamp precision, columns an
// Updates(map) did not touch). With false the hook publishes the in-memory
// struct the write was given, which may be partial; records written by
// condition have no such struct and are always read.
func WithReload(reload bool) Option {
	return func(h *Hook) { h.noReload = !reload }
}

// WithMaxAffected caps the number of records an update or delete by condition
// may name: above it (and whenever the affected keys cannot be selected) the
// hook publishes a resync of the collection instead. 0 means
// DefaultMaxAffected; a negative n never selects keys and always resyncs.
func WithMaxAffected(n int) Option {
	return func(h *Hook) { h.maxAffected = n }
}

// WithTenant takes each event's tenant from the record instead of the write's
// context. fn gets the statement's context and a pointer to the model struct
// (the record read in the transaction, the in-memory one with
// WithReload(false), or for a delete the row as it was before the delete);
// an empty result falls back to realtime.TenantFrom(ctx). A collection
// resync always uses the context's tenant.
func WithTenant(fn func(ctx context.Context, record any) string) Option {
	return func(h *Hook) { h.tenantFn = fn }
}

// WithLogger sets where the hook logs publish failures, outages and outbox
// trouble. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(h *Hook) { h.log = l }
}

type watched struct {
	model      any
	collection string
	schema     *schema.Schema
	table      string // the table name GORM's statements carry
}

// Hook is a gorm.Plugin. Create it with New and install it with db.Use;
// stop its outbox drainer with Close.
type Hook struct {
	pub         Publisher
	watch       []watched
	noReload    bool
	maxAffected int
	tenantFn    func(ctx context.Context, record any) string
	log         *slog.Logger
	outboxCfg   OutboxConfig

	db      *gorm.DB
	dialect string  // "sqlite", "postgres" or "mysql"
	outbox  *outbox // set by db.Use
	// plainSnapshot: the driver refused the Loader's transaction options.
	plainSnapshot atomic.Bool
	byType        map[reflect.Type]*watched
	byTable       map[string]*watched
}

var _ gorm.Plugin = (*Hook)(nil)

// New returns the hook; install it with db.Use, stop its outbox drainer
// with Close.
func New(pub Publisher, opts ...Option) *Hook {
	h := &Hook{pub: pub}
	for _, o := range opts {
		if o != nil {
			o(h)
		}
	}
	return h
}

// Name implements gorm.Plugin.
func (h *Hook) Name() string { return "realtime:gormhook" }

// Initialize implements gorm.Plugin: it checks the options, creates the
// versions and outbox tables when missing, wraps db's connection pool so
// that the transactions it begins report their commit, registers the hook's
// callbacks and starts the outbox drainer (stop it with Close).
func (h *Hook) Initialize(db *gorm.DB) error {
	if err := h.init(db); err != nil {
		return fmt.Errorf("gormhook: initialize: %w", err)
	}
	return nil
}

func (h *Hook) init(db *gorm.DB) error {
	if h == nil || db == nil {
		return fmt.Errorf("%w: nil hook or database", realtime.ErrInvalidConfig)
	}
	if h.pub == nil || (reflect.ValueOf(h.pub).Kind() == reflect.Pointer && reflect.ValueOf(h.pub).IsNil()) {
		return fmt.Errorf("%w: publisher is nil", realtime.ErrInvalidConfig)
	}
	if db.Config == nil || db.Statement == nil || db.ConnPool == nil {
		return fmt.Errorf("%w: database is not open", realtime.ErrInvalidConfig)
	}
	if h.db != nil {
		return fmt.Errorf("%w: the hook is already installed on a database; create one hook per *gorm.DB", realtime.ErrInvalidConfig)
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.maxAffected == 0 {
		h.maxAffected = DefaultMaxAffected
	}
	h.byType = make(map[reflect.Type]*watched, len(h.watch))
	h.byTable = make(map[string]*watched, len(h.watch))
	for i := range h.watch {
		w := &h.watch[i]
		if w.collection == "" || len(w.collection) > 512 || strings.ContainsAny(w.collection, "\r\n\x00") {
			return fmt.Errorf("%w: watch %T: invalid collection %q", realtime.ErrInvalidConfig, w.model, w.collection)
		}
		if w.model == nil {
			return fmt.Errorf("%w: watch %q: nil model", realtime.ErrInvalidConfig, w.collection)
		}
		stmt := &gorm.Statement{DB: db}
		if err := stmt.Parse(w.model); err != nil {
			return fmt.Errorf("%w: watch %T as %q: %w", realtime.ErrInvalidConfig, w.model, w.collection, err)
		}
		w.schema, w.table = stmt.Schema, stmt.Table
		if len(w.schema.PrimaryFields) == 0 {
			return fmt.Errorf("%w: watch %T as %q: the model has no primary key", realtime.ErrInvalidConfig, w.model, w.collection)
		}
		if _, dup := h.byType[w.schema.ModelType]; dup {
			return fmt.Errorf("%w: watch %T: model watched twice", realtime.ErrInvalidConfig, w.model)
		}
		h.byType[w.schema.ModelType] = w
		if _, dup := h.byTable[w.table]; !dup {
			h.byTable[w.table] = w
		}
	}
	h.db = db
	if err := h.initOutbox(db); err != nil {
		h.db = nil
		return err
	}
	h.wrapRootPool(db)
	if err := h.registerCallbacks(db); err != nil {
		return err
	}
	h.startOutbox()
	if r, ok := h.pub.(pendingRegistrar); ok {
		r.AddPendingEvents(h)
	}
	return nil
}
