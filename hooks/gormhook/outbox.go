package gormhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ginrealtime/realtime"
	"gorm.io/gorm"
)

// Defaults of OutboxConfig.
const (
	DefaultOutboxTable    = "realtime_outbox"
	DefaultVersionTable   = "realtime_versions"
	DefaultOutboxInterval = time.Second
	DefaultOutboxGrace    = 2 * time.Second
	DefaultOutboxBatch    = 500
	DefaultOutboxClaimTTL = 5 * time.Second
	DefaultOutboxGapAfter = 10 * time.Second
)

// OutboxConfig tunes the versions table and the transactional outbox that
// every hook keeps (see the package documentation). The zero value uses
// the defaults; negative values are refused by db.Use.
type OutboxConfig struct {
	// Table is the outbox table, created by db.Use when missing. Letters,
	// digits, "_" and "." (schema.table). Default "realtime_outbox".
	Table string
	// VersionTable is the table of the records' last versions, created by
	// db.Use when missing. Same rules. Default "realtime_versions".
	VersionTable string
	// Interval is the period of the drainer. Default 1s.
	Interval time.Duration
	// Grace is the age under which a row is left to the process that
	// committed it (it publishes the row right after its commit and deletes
	// it); older rows are drained by whichever process claims them, with
	// the younger rows of their records (those wait behind them). Keep it
	// above the time a commit takes to publish and the clock skew between
	// the app's instances. Default 2s.
	Grace time.Duration
	// Batch is the number of rows one drain claims at most. Default 500.
	Batch int
	// ClaimTTL is how long a claim keeps other processes off a row: a
	// process that dies while draining leaves claims that expire after it.
	// Keep it above the time a batch takes to publish (a few milliseconds
	// per row). Default 5s.
	ClaimTTL time.Duration
	// GapAfter is how long a row must have been refused as out of order
	// (the version before it was never published) before the drainer,
	// finding no earlier version of the record left in the outbox,
	// publishes it with realtime.Publication.Gap. Default 10s.
	GapAfter time.Duration
}

// WithOutbox tunes the versions table and the outbox: table names, the
// drainer's period, grace, batch, claim TTL and gap delay. Every hook has
// them; without this option the defaults apply.
func WithOutbox(cfg OutboxConfig) Option {
	return func(h *Hook) { h.outboxCfg = cfg }
}

// Event of an outbox row that resyncs a collection (a write the hook cannot
// name record by record).
const eventResync = realtime.EventResync

// outboxRow is a row of the outbox table: one event exactly as committed.
type outboxRow struct {
	ID int64 `gorm:"primaryKey;autoIncrement"`
	// Ref is refOf(Collection, RecordID); empty for a collection resync.
	Ref        string `gorm:"size:64;not null;index"`
	Tenant     string `gorm:"not null"`
	Collection string `gorm:"not null"`
	RecordID   string `gorm:"not null"`
	// Version is the record's version (1, 2, 3, …); 0 for a resync.
	Version uint64 `gorm:"not null"`
	// Event is snapshot, changed, deleted or resync.
	Event string `gorm:"size:16;not null"`
	// ETag is the event's ETag (a deleted event's tombstone ETag).
	ETag string `gorm:"column:etag;not null"`
	// PrevETag is the ETag of the record's previous version, when known
	// (Publication.PrevETag); NULL in rows written before the column
	// existed.
	PrevETag string `gorm:"column:prev_etag"`
	// Data is the record's JSON as committed; for deleted the record as it
	// was before the delete (the event's Prior), or empty.
	Data      string    `gorm:"not null"`
	CreatedAt time.Time `gorm:"not null"`
	ClaimedAt *time.Time
	ClaimedBy string `gorm:"size:128;not null"`
	// RefusedAt is when the drainer first found the row refused as out of
	// order (GapAfter counts from it).
	RefusedAt *time.Time
}

// outbox is the hook's outbox state.
type outbox struct {
	cfg    OutboxConfig
	owner  string // claimed_by prefix: host, pid and a random suffix
	drains atomic.Uint64
	// backlog is the last count of rows older than Grace (stats.go).
	backlog atomic.Int64

	// pubDown and dbDown make failures log once per outage.
	pubDown atomic.Bool
	dbDown  atomic.Bool

	stop     context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

// dialects the versions upsert is written for (gorm.Dialector.Name).
var dialects = map[string]bool{"sqlite": true, "postgres": true, "mysql": true}

func (h *Hook) initOutbox(db *gorm.DB) error {
	cfg := h.outboxCfg
	if cfg.Interval < 0 || cfg.Grace < 0 || cfg.Batch < 0 || cfg.ClaimTTL < 0 || cfg.GapAfter < 0 {
		return fmt.Errorf("%w: outbox: negative interval, grace, batch, claim TTL or gap delay", realtime.ErrInvalidConfig)
	}
	cfg.Table = orDefault(cfg.Table, DefaultOutboxTable)
	cfg.VersionTable = orDefault(cfg.VersionTable, DefaultVersionTable)
	for _, t := range []string{cfg.Table, cfg.VersionTable} {
		if !validTable(t) {
			return fmt.Errorf("%w: outbox: invalid table name %q", realtime.ErrInvalidConfig, t)
		}
	}
	if strings.EqualFold(cfg.Table, cfg.VersionTable) {
		return fmt.Errorf("%w: outbox: the outbox and versions tables are both %q", realtime.ErrInvalidConfig, cfg.Table)
	}
	cfg.Interval = orDefault(cfg.Interval, DefaultOutboxInterval)
	cfg.Grace = orDefault(cfg.Grace, DefaultOutboxGrace)
	cfg.Batch = orDefault(cfg.Batch, DefaultOutboxBatch)
	cfg.ClaimTTL = orDefault(cfg.ClaimTTL, DefaultOutboxClaimTTL)
	cfg.GapAfter = orDefault(cfg.GapAfter, DefaultOutboxGapAfter)
	h.dialect = db.Dialector.Name()
	if !dialects[h.dialect] {
		return fmt.Errorf("%w: dialect %q is not supported (sqlite, postgres, mysql)", realtime.ErrInvalidConfig, h.dialect)
	}
	for _, t := range []struct {
		name  string
		model any
	}{{cfg.VersionTable, &versionRow{}}, {cfg.Table, &outboxRow{}}} {
		m := db.Session(&gorm.Session{NewDB: true, SkipDefaultTransaction: true}).Table(t.name).Migrator()
		if !m.HasTable(t.model) {
			// Another process may create it at the same time.
			if err := m.CreateTable(t.model); err != nil && !m.HasTable(t.model) {
				return fmt.Errorf("outbox: create table %s: %w", t.name, err)
			}
			continue
		}
		if !m.HasColumn(t.model, "version") {
			return fmt.Errorf("%w: outbox: table %s has the layout of an earlier version of the hook (no version column); drop it",
				realtime.ErrInvalidConfig, t.name)
		}
		// Columns added since: nullable, so adding them to a table with
		// rows needs no default.
		for _, col := range addedColumns[t.name == cfg.VersionTable] {
			if !m.HasColumn(t.model, col) {
				if err := m.AddColumn(t.model, col); err != nil && !m.HasColumn(t.model, col) {
					return fmt.Errorf("outbox: add column %s to %s: %w", col, t.name, err)
				}
			}
		}
	}
	h.outbox = &outbox{cfg: cfg, owner: ownerID()}
	return nil
}

// addedColumns are the columns added to the versions table (true) and the
// outbox table (false) since their first layout: New adds them to an
// existing table.
var addedColumns = map[bool][]string{true: {"ETag"}, false: {"PrevETag"}}

// orDefault returns v, or def when v is the zero value.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// startOutbox starts the drainer; Close stops it.
func (h *Hook) startOutbox() {
	o := h.outbox
	ctx, cancel := context.WithCancel(context.Background())
	o.stop, o.done = cancel, make(chan struct{})
	go h.drainLoop(ctx)
}

// Close stops the outbox drainer started by db.Use and waits for it (or for
// ctx). The hook keeps versioning, recording and publishing commits; the
// rows left behind are drained by another process's hook, or by this
// database's next hook. Close is idempotent, and a no-op on a hook that was
// never installed.
func (h *Hook) Close(ctx context.Context) error {
	if h == nil || h.outbox == nil || h.outbox.stop == nil {
		return nil
	}
	h.outbox.stopOnce.Do(h.outbox.stop)
	select {
	case <-h.outbox.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("gormhook: close: %w", ctx.Err())
	}
}

func validTable(s string) bool {
	if len(s) > 128 || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func ownerID() string {
	host, _ := os.Hostname()
	if len(host) > 64 {
		host = host[:64]
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// outboxSession is a statement builder on the outbox table, on pool (nil:
// the database's pool), outside any default transaction.
func (h *Hook) outboxSession(ctx context.Context, pool gorm.ConnPool) *gorm.DB {
	return h.session(ctx, pool).Table(h.outbox.cfg.Table)
}

// outboxChunk is the number of rows of one INSERT or DELETE.
const outboxChunk = 200

// insertRows inserts rows in the transaction tx and sets their ids.
func (h *Hook) insertRows(ctx context.Context, tx gorm.ConnPool, rows []outboxRow) error {
	q := h.outboxSession(ctx, tx)
	q.Statement.SkipHooks = true
	if err := q.CreateInBatches(&rows, outboxChunk).Error; err != nil {
		return fmt.Errorf("gormhook: outbox: insert into %s: %w", h.outbox.cfg.Table, err)
	}
	return nil
}

// deleteRows deletes rows whose events were published (or can never be).
func (h *Hook) deleteRows(ctx context.Context, pool gorm.ConnPool, ids []int64) {
	for len(ids) > 0 {
		part := ids[:min(len(ids), outboxChunk)]
		ids = ids[len(part):]
		if err := h.outboxSession(ctx, pool).Where("id IN ?", part).Delete(&outboxRow{}).Error; err != nil {
			h.dbFailed("delete published outbox rows", err)
			return
		}
	}
	h.dbOK()
}

// published logs a publish's outcome. The failures of an outage are logged
// once (the rows stay, the drainer retries), per event at debug level only;
// so are refusals as out of order (the row waits for its predecessor).
func (h *Hook) published(err error, op string, attrs ...any) {
	o := h.outbox
	out := classify(err)
	if out != down && o.pubDown.CompareAndSwap(true, false) {
		h.log.Info("gormhook: publisher reachable again; draining the outbox")
	}
	if err == nil {
		return
	}
	attrs = append(attrs, "op", op, "err", err)
	switch out {
	case refused:
		h.log.Debug("gormhook: publish refused (out of order, or an earlier version still in the outbox); kept in the outbox", attrs...)
	case down:
		if o.pubDown.CompareAndSwap(false, true) {
			h.log.Warn("gormhook: publisher unavailable; events stay in the outbox until it is back", "err", err)
		}
		h.log.Debug("gormhook: publish failed; kept in the outbox", attrs...)
	case dropped:
		h.log.Error("gormhook: event refused by the publisher as invalid; dropped from the outbox", attrs...)
	default:
		h.log.Error("gormhook: publish failed; kept in the outbox", attrs...)
	}
}

// outage reports whether a publish failed because the publisher cannot be
// reached (rather than because of the event): the drainer then stops, and
// probes with one row until it succeeds.
func outage(err error) bool {
	return errors.Is(err, realtime.ErrUnavailable) || errors.Is(err, realtime.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

func (h *Hook) dbFailed(op string, err error) {
	if h.outbox.dbDown.CompareAndSwap(false, true) {
		h.log.Warn("gormhook: outbox: database operation failed; retrying", "op", op, "table", h.outbox.cfg.Table, "err", err)
	}
}

func (h *Hook) dbOK() {
	if h.outbox.dbDown.CompareAndSwap(true, false) {
		h.log.Info("gormhook: outbox: database reachable again", "table", h.outbox.cfg.Table)
	}
}
