package gormhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
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
	DefaultOutboxInterval = 2 * time.Second
	DefaultOutboxGrace    = 5 * time.Second
	DefaultOutboxBatch    = 500
	DefaultOutboxClaimTTL = 30 * time.Second
)

// OutboxConfig configures the transactional outbox (WithOutbox). The zero
// value uses the defaults; negative values are refused by db.Use.
type OutboxConfig struct {
	// Table is the outbox table, created by db.Use when missing. Letters,
	// digits, "_" and "." (schema.table). Default "realtime_outbox".
	Table string
	// Interval is the period of the drainer. Default 2s.
	Interval time.Duration
	// Grace is the age under which a row is left to the process that wrote
	// it (its flush after commit publishes it and deletes the row); older
	// rows are drained by whichever process claims them. Keep it above the
	// time a flush takes and the clock skew between the app's instances.
	// Default 5s.
	Grace time.Duration
	// Batch is the number of rows one drain claims at most. Default 500.
	Batch int
	// ClaimTTL is how long a claim keeps other processes off a row: a
	// process that dies while draining leaves claims that expire after it.
	// Keep it well above the time a batch takes to publish. Default 30s.
	ClaimTTL time.Duration
}

// WithOutbox makes the hook durable across publisher outages and process
// crashes: each written record also gets a row in an outbox table, in the
// write's transaction; the row is deleted once its event is published, and
// a background drainer publishes the rows left behind (see the package
// documentation). Stop the drainer with Hook.Close.
func WithOutbox(cfg OutboxConfig) Option {
	return func(h *Hook) { h.outboxCfg = &cfg }
}

// outboxRow is a row of the outbox table.
type outboxRow struct {
	ID         int64  `gorm:"primaryKey;autoIncrement"`
	Tenant     string `gorm:"size:255;not null"`
	Collection string `gorm:"size:512;not null"`
	// RecordKey is the JSON array of the record's primary key values, in the
	// model's field order; empty for a collection resync.
	RecordKey string `gorm:"type:text;not null"`
	// RecordID is the event's ID (the key formatted as in events).
	RecordID  string    `gorm:"type:text;not null"`
	CreatedAt time.Time `gorm:"not null"`
	ClaimedAt *time.Time
	ClaimedBy string `gorm:"size:128;not null"`
}

// outbox is the hook's outbox state; nil without WithOutbox.
type outbox struct {
	cfg    OutboxConfig
	owner  string // claimed_by prefix: host, pid and a random suffix
	byColl map[string]*watched
	drains atomic.Uint64

	// pubDown and dbDown make failures log once per outage.
	pubDown atomic.Bool
	dbDown  atomic.Bool

	stop     context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

func (h *Hook) initOutbox(db *gorm.DB) error {
	if h.outboxCfg == nil {
		return nil
	}
	cfg := *h.outboxCfg
	if cfg.Interval < 0 || cfg.Grace < 0 || cfg.Batch < 0 || cfg.ClaimTTL < 0 {
		return fmt.Errorf("%w: outbox: negative interval, grace, batch or claim TTL", realtime.ErrInvalidConfig)
	}
	if cfg.Table == "" {
		cfg.Table = DefaultOutboxTable
	}
	if !validTable(cfg.Table) {
		return fmt.Errorf("%w: outbox: invalid table name %q", realtime.ErrInvalidConfig, cfg.Table)
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultOutboxInterval
	}
	if cfg.Grace == 0 {
		cfg.Grace = DefaultOutboxGrace
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultOutboxBatch
	}
	if cfg.ClaimTTL == 0 {
		cfg.ClaimTTL = DefaultOutboxClaimTTL
	}
	o := &outbox{cfg: cfg, owner: ownerID(), byColl: map[string]*watched{}}
	for i := range h.watch {
		if _, dup := o.byColl[h.watch[i].collection]; !dup {
			o.byColl[h.watch[i].collection] = &h.watch[i]
		}
	}
	m := db.Session(&gorm.Session{NewDB: true, SkipDefaultTransaction: true}).Table(cfg.Table).Migrator()
	if !m.HasTable(&outboxRow{}) {
		if err := m.CreateTable(&outboxRow{}); err != nil && !m.HasTable(&outboxRow{}) {
			return fmt.Errorf("outbox: create table %s: %w", cfg.Table, err)
		}
	}
	h.outbox = o
	return nil
}

// startOutbox starts the drainer; Close stops it.
func (h *Hook) startOutbox() {
	o := h.outbox
	if o == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	o.stop, o.done = cancel, make(chan struct{})
	go h.drainLoop(ctx)
}

// Close stops the outbox drainer started by db.Use and waits for it (or for
// ctx). The hook keeps publishing after commit and writing outbox rows; the
// rows left behind are drained by another process's hook, or by this
// database's next hook. Close is a no-op without WithOutbox, and idempotent.
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

// outboxSession is a statement builder on the outbox table, on pool (nil: the
// database's pool), outside any default transaction.
func (h *Hook) outboxSession(ctx context.Context, pool gorm.ConnPool) *gorm.DB {
	q := h.db.Session(&gorm.Session{NewDB: true, SkipDefaultTransaction: true, Context: ctx})
	if pool != nil {
		q.Statement.ConnPool = pool
	}
	return q.Table(h.outbox.cfg.Table)
}

// outboxInsert inserts one row per change, on the write's connection (in its
// transaction when it has one), and records the rows' ids in cs.
func (h *Hook) outboxInsert(db *gorm.DB, cs []change) error {
	now := time.Now().UTC()
	rows := make([]outboxRow, len(cs))
	for i, c := range cs {
		r := outboxRow{Tenant: h.tenant(c.ctx, c.record), Collection: c.w.collection, CreatedAt: now}
		if h.tenantFn != nil && c.record == nil && c.event != realtime.EventResync {
			// The tenant is read from the record, which the hook has not
			// read in the transaction: the drainer reads it from the
			// reloaded record, and publishes no deleted for such a row
			// (the record's deleted is the event of the delete).
			r.Tenant = ""
		}
		if c.event != realtime.EventResync {
			k, err := json.Marshal(c.key)
			if err != nil {
				return fmt.Errorf("gormhook: outbox: encode the key of %s: %w", c.w.collection, err)
			}
			r.RecordKey, r.RecordID = string(k), c.id
		}
		rows[i] = r
	}
	q := db.Session(&gorm.Session{NewDB: true, SkipDefaultTransaction: true}).Table(h.outbox.cfg.Table)
	q.Statement.SkipHooks = true
	if err := q.CreateInBatches(&rows, 200).Error; err != nil {
		return fmt.Errorf("gormhook: outbox: insert into %s: %w", h.outbox.cfg.Table, err)
	}
	for i := range cs {
		cs[i].outbox = rows[i].ID
	}
	return nil
}

// outboxDelete deletes rows whose events were published (or resynced).
func (h *Hook) outboxDelete(ctx context.Context, pool gorm.ConnPool, ids []int64) {
	for len(ids) > 0 {
		part := ids[:min(len(ids), reloadChunk)]
		ids = ids[len(part):]
		if err := h.outboxSession(ctx, pool).Where("id IN ?", part).Delete(&outboxRow{}).Error; err != nil {
			h.dbFailed("delete published outbox rows", err)
			return
		}
	}
	h.dbOK()
}

// published reports a publish's outcome: with the outbox, the failures of
// an outage are logged once (the rows stay, the drainer retries), per event
// at debug level only.
func (h *Hook) published(err error, what string, attrs ...any) {
	o := h.outbox
	if err == nil {
		if o != nil && o.pubDown.CompareAndSwap(true, false) {
			h.log.Info("gormhook: publisher reachable again; draining the outbox")
		}
		return
	}
	attrs = append(attrs, "err", err)
	if o == nil || !outage(err) {
		h.log.Error("gormhook: "+what+" failed", attrs...)
		return
	}
	if o.pubDown.CompareAndSwap(false, true) {
		h.log.Warn("gormhook: publisher unavailable; events stay in the outbox until it is back", "err", err)
	}
	h.log.Debug("gormhook: "+what+" failed; kept in the outbox", attrs...)
}

// outage reports whether a publish failed because the publisher cannot be
// reached (rather than because of the event): the drainer then stops, and
// probes with one row until it succeeds. Another failure leaves its row
// claimed, retried when the claim expires, without holding up the others.
func outage(err error) bool {
	return errors.Is(err, realtime.ErrUnavailable) || errors.Is(err, realtime.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

func (h *Hook) dbFailed(what string, err error) {
	if h.outbox.dbDown.CompareAndSwap(false, true) {
		h.log.Warn("gormhook: outbox: cannot "+what+"; retrying", "table", h.outbox.cfg.Table, "err", err)
	}
}

func (h *Hook) dbOK() {
	if h.outbox.dbDown.CompareAndSwap(true, false) {
		h.log.Info("gormhook: outbox: database reachable again", "table", h.outbox.cfg.Table)
	}
}

func (h *Hook) drainLoop(ctx context.Context) {
	defer close(h.outbox.done)
	t := time.NewTicker(h.outbox.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A full batch drained without failure: there may be more.
		for h.drain(ctx) && ctx.Err() == nil {
		}
	}
}

// drain claims and publishes one batch of rows older than Grace. It reports
// whether the batch was full and drained without failure. While the
// publisher is down it claims one row, as a probe.
func (h *Hook) drain(ctx context.Context) (more bool) {
	o := h.outbox
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("gormhook: panic while draining the outbox", "panic", fmt.Sprint(r))
			more = false
		}
	}()
	now := time.Now().UTC()
	expired := now.Add(-o.cfg.ClaimTTL)
	limit := o.cfg.Batch
	if o.pubDown.Load() {
		limit = 1
	}
	var cand []int64
	err := h.outboxSession(ctx, nil).
		Where("created_at < ? AND (claimed_at IS NULL OR claimed_at < ?)", now.Add(-o.cfg.Grace), expired).
		Order("id").Limit(limit).Pluck("id", &cand).Error
	if err != nil {
		if ctx.Err() == nil {
			h.dbFailed("read the outbox", err)
		}
		return false
	}
	if len(cand) == 0 {
		h.dbOK()
		return false
	}
	// Claim: one UPDATE whose WHERE is re-checked per row under the row's
	// write lock (PostgreSQL, MySQL) or the database lock (SQLite), so two
	// processes never both claim a row. The token is unique to this drain.
	token := fmt.Sprintf("%s#%d", o.owner, o.drains.Add(1))
	err = h.outboxSession(ctx, nil).
		Where("id IN ? AND (claimed_at IS NULL OR claimed_at < ?)", cand, expired).
		Updates(map[string]any{"claimed_by": token, "claimed_at": now}).Error
	if err != nil {
		if ctx.Err() == nil {
			h.dbFailed("claim outbox rows", err)
		}
		return false
	}
	var rows []outboxRow
	err = h.outboxSession(ctx, nil).Select("id", "tenant", "collection", "record_key", "record_id").
		Where("id IN ? AND claimed_by = ?", cand, token).Order("id").Find(&rows).Error
	if err != nil {
		if ctx.Err() == nil {
			h.dbFailed("read claimed outbox rows", err)
		}
		return false // the claims expire
	}
	h.dbOK()
	if len(rows) == 0 {
		return false // all taken by another process
	}
	done, ok := h.drainRows(ctx, rows)
	if len(done) > 0 {
		h.outboxDelete(context.WithoutCancel(ctx), nil, done)
	}
	if !ok {
		// Give the rest back rather than holding it until the claims expire.
		rest := make([]int64, 0, len(rows)-len(done))
		gone := make(map[int64]bool, len(done))
		for _, id := range done {
			gone[id] = true
		}
		for _, r := range rows {
			if !gone[r.ID] {
				rest = append(rest, r.ID)
			}
		}
		_ = h.outboxSession(context.WithoutCancel(ctx), nil).Where("id IN ? AND claimed_by = ?", rest, token).
			Updates(map[string]any{"claimed_by": "", "claimed_at": nil}).Error
		return false
	}
	return len(cand) == limit
}

// drainRows publishes the claimed rows: the record as stored now (changed),
// deleted when it is gone, a resync for resync rows and for rows it cannot
// read. It returns the rows handled and whether all were.
//
// The drain is numbered by the sequencer like a flush, after the rows were
// committed (they are visible) and before it reloads: a flush of this
// process that published a record with a higher number reloaded it later, so
// the drainer skips that record (and deletes its rows) rather than publish
// an older version; a flush with a lower number reloaded earlier, and the
// drainer's version replaces it.
func (h *Hook) drainRows(ctx context.Context, rows []outboxRow) (done []int64, ok bool) {
	seq := h.seq.begin()
	defer h.seq.end(seq)

	type groupKey struct {
		w      *watched
		tenant string
	}
	type rec struct {
		row outboxRow
		key []any
	}
	groups := map[groupKey][]rec{}
	var order []groupKey
	resyncs := map[[2]string][]int64{} // tenant, collection → rows
	var resyncOrder [][2]string
	addResync := func(r outboxRow) {
		k := [2]string{r.Tenant, r.Collection}
		if resyncs[k] == nil {
			resyncOrder = append(resyncOrder, k)
		}
		resyncs[k] = append(resyncs[k], r.ID)
	}
	for _, r := range rows {
		w := h.outbox.byColl[r.Collection]
		if r.RecordKey == "" || w == nil {
			addResync(r)
			continue
		}
		key, err := decodeKey(w, r.RecordKey, r.RecordID)
		if err != nil {
			h.log.Warn("gormhook: outbox: cannot decode a record key; resyncing the collection",
				"collection", r.Collection, "err", err)
			addResync(r)
			continue
		}
		gk := groupKey{w, r.Tenant}
		if groups[gk] == nil {
			order = append(order, gk)
		}
		groups[gk] = append(groups[gk], rec{r, key})
	}

	for _, k := range resyncOrder {
		err := h.pub.Resync(realtime.WithTenant(ctx, k[0]), k[1])
		h.published(err, "resync from the outbox", "collection", k[1], "tenant", k[0])
		if outage(err) {
			return done, false
		}
		if err == nil {
			done = append(done, resyncs[k]...)
		} // else: the rows stay claimed, retried when the claims expire

	}

	for _, gk := range order {
		g := groups[gk]
		tctx := realtime.WithTenant(ctx, gk.tenant)
		keys := make([][]any, 0, len(g))
		seen := map[string]bool{}
		for _, r := range g {
			if !seen[r.row.RecordID] {
				seen[r.row.RecordID] = true
				keys = append(keys, r.key)
			}
		}
		loaded, err := h.load(tctx, nil, gk.w, keys)
		if err != nil {
			h.dbFailed("reload outbox records", err)
			return done, false
		}
		sent := map[string]error{}
		for _, r := range g {
			id := r.row.RecordID
			perr, already := sent[id]
			if !already {
				c := change{ctx: tctx, w: gk.w, id: id, event: realtime.EventChanged, record: loaded[id]}
				if c.record == nil {
					c.event = realtime.EventDeleted // gone (or hidden by the default scope); no Prior
				}
				if c.record == nil && gk.tenant == "" {
					// Unknown tenant (see outboxInsert): the delete that
					// removed the record has its own event.
					sent[id] = nil
					done = append(done, r.row.ID)
					continue
				}
				if !h.seq.publish(gk.w.collection+"\x00"+id, seq, func() { perr = h.publishOne(c, c.record) }) {
					h.log.Debug("gormhook: outbox: a newer version was published meanwhile; skipping",
						"collection", gk.w.collection, "id", id)
				}
				sent[id] = perr
			}
			if outage(perr) {
				return done, false
			}
			if perr == nil {
				done = append(done, r.row.ID)
			} // else: the row stays claimed, retried when its claim expires
		}
		h.recheck(tctx, gk.w, keys, loaded, gk.tenant != "")
	}
	return done, true
}

// recheck reads the drained records once more and publishes again those
// that changed since the drainer read them. Another process's flush knows
// nothing of this process's sequencer: it may have published a newer
// version between the drainer's read and its publish, which the drainer's
// older version then overwrote. That flush committed before it published,
// so before this read: publishing what is stored now converges (a race
// would have to repeat itself to leave a stale version). Failures are
// logged only: the rows' events were published. A record gone since is
// published as deleted only when its tenant is known (see outboxInsert).
func (h *Hook) recheck(ctx context.Context, w *watched, keys [][]any, before map[string]any, knownTenant bool) {
	seq := h.seq.begin()
	defer h.seq.end(seq)
	now, err := h.load(ctx, nil, w, keys)
	if err != nil {
		h.dbFailed("reload outbox records", err)
		return
	}
	for id, rec := range now {
		if old, ok := before[id]; ok && sameJSON(old, rec) {
			continue
		}
		c := change{ctx: ctx, w: w, id: id, event: realtime.EventChanged, record: rec}
		h.seq.publish(w.collection+"\x00"+id, seq, func() { _ = h.publishOne(c, rec) })
	}
	for id := range before {
		if now[id] == nil && knownTenant {
			c := change{ctx: ctx, w: w, id: id, event: realtime.EventDeleted}
			h.seq.publish(w.collection+"\x00"+id, seq, func() { _ = h.publishOne(c, nil) })
		}
	}
}

func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// decodeKey decodes a row's key into values of the primary fields' types,
// and checks that they format to the row's ID (a key that does not round
// trip through JSON must not make an existing record look deleted).
func decodeKey(w *watched, raw, id string) ([]any, error) {
	var parts []json.RawMessage
	if err := json.Unmarshal([]byte(raw), &parts); err != nil {
		return nil, err
	}
	if len(parts) != len(w.schema.PrimaryFields) {
		return nil, fmt.Errorf("%d key values for %d key fields", len(parts), len(w.schema.PrimaryFields))
	}
	key := make([]any, len(parts))
	strs := make([]string, len(parts))
	for i, f := range w.schema.PrimaryFields {
		v := reflect.New(f.FieldType)
		if err := json.Unmarshal(parts[i], v.Interface()); err != nil {
			return nil, err
		}
		key[i] = v.Elem().Interface()
		if strs[i] = formatKey(key[i]); strs[i] == "" {
			return nil, errors.New("empty key value")
		}
	}
	if strings.Join(strs, ",") != id {
		return nil, errors.New("the key does not match the record's ID")
	}
	return key, nil
}
