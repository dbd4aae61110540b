package gormhook

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"github.com/ginrealtime/realtime"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// change is one write to a record (or a collection resync) waiting for
// its transaction to commit.
type change struct {
	ctx    context.Context // the statement's context, without its cancellation
	w      *watched
	event  string // realtime.EventSnapshot, EventChanged, EventDeleted or EventResync
	id     string
	key    []any // primary key values, to read the record
	record any   // pointer to a model struct: the in-memory copy (WithReload(false)), or for a delete the row before it
	reload bool  // the record's data is read in the transaction
}

// pending is what a transaction commits for one record (all its changes
// folded), or one collection resync.
type pending struct {
	ctx     context.Context // the last change's
	w       *watched        // the last change's
	id      string
	key     []any
	resync  bool
	created bool // a change created it: its event is snapshot
	gone    bool // the last change deleted it
	prior   any  // the row before the last delete
	mem     any  // the last in-memory struct (WithReload(false))
	reload  bool // read the record in the transaction
}

// fold groups a transaction's changes: one pending per record, in the
// order of their first change, and one per collection resync and tenant.
func fold(cs []change) []*pending {
	var out []*pending
	byRecord := map[[2]string]*pending{}
	for _, c := range cs {
		k := [2]string{c.w.collection, c.id}
		if c.event == realtime.EventResync {
			k = [2]string{c.w.collection, "\x00" + realtime.TenantFrom(c.ctx)}
		}
		p := byRecord[k]
		if p == nil {
			p = &pending{id: c.id, resync: c.event == realtime.EventResync}
			byRecord[k] = p
			out = append(out, p)
		}
		p.ctx, p.w, p.key = c.ctx, c.w, c.key
		switch c.event {
		case realtime.EventSnapshot:
			p.created, p.gone = true, false
		case realtime.EventDeleted:
			p.gone, p.prior = true, c.record
			continue
		case realtime.EventChanged:
			p.gone = false
		}
		p.reload = p.reload || c.reload
		if !c.reload && c.record != nil {
			p.mem = c.record
		}
	}
	return out
}

// record turns the changes of a transaction about to commit into its outbox
// rows, in the transaction tx (the caller's, before its COMMIT): it takes
// each record's next version (locking the record's version row until the
// commit), then reads the records as the app's GET handler does (default
// scope, query callbacks, AfterFind), and inserts one row per record with
// the event exactly as committed: type, version, ETag, JSON. A record
// written several times in the transaction has one event: snapshot if the
// transaction created it, changed otherwise, deleted when it is gone at
// commit (deleted, or hidden by the default scope).
func (h *Hook) record(ctx context.Context, tx gorm.ConnPool, cs []change) ([]outboxRow, error) {
	ps := fold(cs)
	var refs []versionRow
	for _, p := range ps {
		if !p.resync {
			refs = append(refs, versionRow{Ref: refOf(p.w.collection, p.id), Collection: p.w.collection, RecordID: p.id})
		}
	}
	versions, err := h.nextVersions(ctx, tx, refs)
	if err != nil {
		return nil, err
	}
	loaded, err := h.loadPending(tx, ps)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	rows := make([]outboxRow, 0, len(ps))
	for _, p := range ps {
		r, err := h.eventRow(p, loaded[p.w][p.id])
		if err != nil {
			return nil, err
		}
		r.Version, r.CreatedAt = versions[r.Ref], now
		rows = append(rows, r)
	}
	if err := h.insertRows(ctx, tx, rows); err != nil {
		return nil, err
	}
	return rows, nil
}

// loadPending reads the records of ps that are read in the transaction,
// one query per model and chunk of keys.
func (h *Hook) loadPending(tx gorm.ConnPool, ps []*pending) (map[*watched]map[string]any, error) {
	type group struct {
		ctx  context.Context
		keys [][]any
	}
	groups := map[*watched]*group{}
	var order []*watched
	for _, p := range ps {
		if p.resync || p.gone || !p.reload {
			continue
		}
		g := groups[p.w]
		if g == nil {
			g = &group{ctx: p.ctx}
			groups[p.w] = g
			order = append(order, p.w)
		}
		g.keys = append(g.keys, p.key)
	}
	loaded := make(map[*watched]map[string]any, len(order))
	for _, w := range order {
		m, err := h.load(groups[w].ctx, tx, w, groups[w].keys)
		if err != nil {
			return nil, err
		}
		loaded[w] = m
	}
	return loaded, nil
}

// eventRow is p's outbox row, but for its version and time; rec is the
// record read in the transaction (nil: not read, or not found).
func (h *Hook) eventRow(p *pending, rec any) (outboxRow, error) {
	if p.resync {
		return outboxRow{Tenant: h.tenant(p.ctx, nil), Collection: p.w.collection, Event: eventResync}, nil
	}
	r := outboxRow{Ref: refOf(p.w.collection, p.id), Collection: p.w.collection, RecordID: p.id}
	if !p.reload && !p.gone {
		rec = p.mem
	}
	if rec == nil {
		// Deleted, or gone from the app's view (hidden by the default
		// scope): the GET handler answers 404.
		r.Event, r.ETag = realtime.EventDeleted, realtime.TombstoneETag(p.w.collection, p.id)
		r.Tenant = h.tenant(p.ctx, p.prior)
		if p.prior != nil {
			b, err := json.Marshal(p.prior)
			if err != nil {
				return r, fmt.Errorf("gormhook: marshal the deleted record %s/%s: %w", p.w.collection, p.id, err)
			}
			r.Data = string(b)
		}
		return r, nil
	}
	r.Event = realtime.EventChanged
	if p.created {
		r.Event = realtime.EventSnapshot
	}
	r.Tenant = h.tenant(p.ctx, rec)
	b, err := json.Marshal(rec)
	if err != nil {
		return r, fmt.Errorf("gormhook: marshal the record %s/%s: %w", p.w.collection, p.id, err)
	}
	r.Data = string(b)
	if r.ETag, err = h.etagOf(p.w.collection, p.id, rec, b); err != nil {
		return r, fmt.Errorf("gormhook: etag of %s/%s: %w", p.w.collection, p.id, err)
	}
	return r, nil
}

// etagger is the optional ability of a Publisher to give the ETag the app's
// handlers send for a record (*realtime.Plugin's ETag, which applies the
// record's realtime.ETagger and Config.ETag).
type etagger interface {
	ETag(collection, id string, record any) (string, error)
}

var _ etagger = (*realtime.Plugin)(nil)

// etagOf is the ETag of a record whose JSON is data: the Publisher's, else
// the record's own (realtime.ETagger), else realtime.DefaultETag.
func (h *Hook) etagOf(collection, id string, rec any, data []byte) (string, error) {
	if e, ok := h.pub.(etagger); ok {
		return e.ETag(collection, id, rec)
	}
	if t, ok := rec.(realtime.ETagger); ok && t.ETag() != "" {
		return t.ETag(), nil
	}
	return realtime.DefaultETag(collection, id, data), nil
}

func (h *Hook) tenant(ctx context.Context, record any) string {
	if h.tenantFn != nil && record != nil {
		if t := h.tenantFn(ctx, record); t != "" {
			return t
		}
	}
	return realtime.TenantFrom(ctx)
}

// loadChunk bounds the bind variables of one read of records.
const loadChunk = 500

// load reads the records with the given keys as the app reads them (the
// model's default scope and query callbacks, AfterFind hooks), on pool (the
// transaction), and returns pointers to them by ID. On MySQL the read locks
// the rows (FOR UPDATE).
func (h *Hook) load(ctx context.Context, pool gorm.ConnPool, w *watched, keys [][]any) (map[string]any, error) {
	out := make(map[string]any, len(keys))
	chunk := max(1, loadChunk/len(w.schema.PrimaryFields))
	for i := 0; i < len(keys); i += chunk {
		part := keys[i:min(i+chunk, len(keys))]
		col, vals := schema.ToQueryValues(clause.CurrentTable, w.schema.PrimaryFieldDBNames, part)
		dest := reflect.New(reflect.SliceOf(w.schema.ModelType))
		q := h.db.Session(&gorm.Session{NewDB: true, Context: ctx})
		q.Statement.ConnPool = pool
		if h.dialect == "mysql" {
			// Under REPEATABLE READ a plain read returns the transaction's
			// snapshot, which may predate a version committed since for a
			// row this transaction named but did not change; a locking read
			// returns the latest (the version row's lock orders them).
			q = q.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate})
		}
		if err := q.Where(clause.IN{Column: col, Values: vals}).Find(dest.Interface()).Error; err != nil {
			return nil, fmt.Errorf("gormhook: read the written records of %s: %w", w.collection, err)
		}
		s := dest.Elem()
		for j := range s.Len() {
			e := s.Index(j)
			if _, id, ok := keyOf(ctx, w, e); ok {
				out[id] = e.Addr().Interface()
			}
		}
	}
	return out, nil
}
