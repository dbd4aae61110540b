package gormhook

import (
	"context"
	"fmt"
	"reflect"

	"github.com/ginrealtime/realtime"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// change is one record event waiting for its transaction to commit.
type change struct {
	ctx    context.Context // the statement's context, without its cancellation
	w      *watched
	event  string // realtime.EventSnapshot, EventChanged, EventDeleted or EventResync
	id     string
	key    []any // primary key values, to reload the record
	record any   // pointer to a model struct: the in-memory copy, or for a delete the row before it (published as Prior)
	reload bool  // publish the record as stored after commit
	outbox int64 // the change's outbox row (WithOutbox), 0 if none
}

// reloadChunk bounds the bind variables of one reload query.
const reloadChunk = 500

// flush publishes committed changes in order. Records to reload are read
// first, one query per model and chunk of keys, on pool (the pool the
// transaction came from, so that a single-connection pool cannot deadlock).
// Concurrent flushes are ordered by the sequencer. Errors are logged: the
// write is committed and its caller gone. With the outbox, the rows of the
// changes handled are deleted at the end (one statement); the others stay
// for the drainer.
func (h *Hook) flush(pool gorm.ConnPool, cs []change) {
	if len(cs) == 0 {
		return
	}
	if h.outbox != nil && h.publisherDown() {
		// The publisher says it cannot publish (its broker is unreachable):
		// the commit does not wait for it to fail; the changes' outbox rows
		// stay, and the drainer publishes them once it is back.
		return
	}
	seq := h.seq.begin() // after the commit, before any reload
	defer h.seq.end(seq)
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("gormhook: panic while publishing committed changes", "panic", fmt.Sprint(r))
		}
	}()
	var handled []int64 // outbox rows of the changes published (or not to be published)
	if h.outbox != nil {
		defer func() { h.outboxDelete(context.Background(), pool, handled) }()
	}

	// Reload what must be reloaded.
	type group struct {
		ctx  context.Context
		keys [][]any
		seen map[string]bool
	}
	groups := map[*watched]*group{}
	var order []*watched
	for _, c := range cs {
		if !c.reload {
			continue
		}
		g := groups[c.w]
		if g == nil {
			g = &group{ctx: c.ctx, seen: map[string]bool{}}
			groups[c.w] = g
			order = append(order, c.w)
		}
		if !g.seen[c.id] {
			g.seen[c.id] = true
			g.keys = append(g.keys, c.key)
		}
	}
	loaded := make(map[*watched]map[string]any, len(order))
	for _, w := range order {
		m, err := h.load(groups[w].ctx, pool, w, groups[w].keys)
		if err != nil {
			h.log.Error("gormhook: cannot reload written records after commit; resyncing the collection",
				"collection", w.collection, "err", err)
			continue
		}
		loaded[w] = m
	}

	resynced := map[[2]string]error{}
	sent := map[[2]string]bool{}   // records already published as reloaded in this flush
	failed := map[[2]string]bool{} // records whose publish failed in this flush
	for _, c := range cs {
		if ok := h.flushOne(c, seq, loaded, resynced, sent, failed); ok && c.outbox != 0 {
			handled = append(handled, c.outbox)
		}
	}
}

// flushOne publishes one change of a flush; it reports whether the change
// is handled (published, resynced, or not to be published).
// healthReporter is the optional ability of a Publisher to tell whether it
// can publish now (*realtime.Plugin's Health).
type healthReporter interface{ Health() error }

var _ healthReporter = (*realtime.Plugin)(nil)

// publisherDown reports whether the publisher says it cannot publish now.
func (h *Hook) publisherDown() bool {
	hr, ok := h.pub.(healthReporter)
	return ok && hr.Health() != nil
}

func (h *Hook) flushOne(c change, seq uint64, loaded map[*watched]map[string]any,
	resynced map[[2]string]error, sent, failed map[[2]string]bool) bool {
	if c.event == realtime.EventResync || (c.reload && loaded[c.w] == nil) {
		return h.resync(c, resynced) == nil
	}
	ref := [2]string{c.w.collection, c.id}
	rec := c.record
	if c.reload {
		// Every reloaded event of a record carries the same, final
		// version: publish it once, at the record's first event.
		if rec = loaded[c.w][c.id]; rec == nil {
			return true // gone since (deleted later, hidden by the default scope)
		}
		if sent[ref] {
			return !failed[ref] // already sent
		}
		sent[ref] = true
	}
	if c.event == realtime.EventDeleted {
		delete(sent, ref)
	}
	var err error
	if !h.seq.publish(c.w.collection+"\x00"+c.id, seq, func() { err = h.publishOne(c, rec) }) {
		h.log.Debug("gormhook: a newer version was published by a later commit; skipping",
			"collection", c.w.collection, "id", c.id, "event", c.event)
	}
	if err != nil {
		failed[ref] = true
		return false
	}
	return true
}

func (h *Hook) tenant(ctx context.Context, record any) string {
	if h.tenantFn != nil && record != nil {
		if t := h.tenantFn(ctx, record); t != "" {
			return t
		}
	}
	return realtime.TenantFrom(ctx)
}

func (h *Hook) publishOne(c change, rec any) error {
	pub := realtime.Publication{
		Tenant:     h.tenant(c.ctx, rec),
		Collection: c.w.collection,
		ID:         c.id,
		Event:      c.event,
	}
	pub.Record = rec // for deleted: the row before the delete, shown only to the Authorizer
	_, err := h.pub.Publish(c.ctx, pub)
	h.published(err, "publish after commit",
		"collection", pub.Collection, "id", pub.ID, "event", pub.Event, "tenant", pub.Tenant)
	return err
}

// resync resyncs c's collection once per tenant and flush, and returns the
// outcome of that resync.
func (h *Hook) resync(c change, done map[[2]string]error) error {
	tenant := h.tenant(c.ctx, c.record)
	k := [2]string{tenant, c.w.collection}
	if err, ok := done[k]; ok {
		return err
	}
	err := h.pub.Resync(realtime.WithTenant(c.ctx, tenant), c.w.collection)
	h.published(err, "resync after commit", "collection", c.w.collection, "tenant", tenant)
	done[k] = err
	return err
}

// load reads the records with the given keys as the app reads them (the
// model's default scope and query callbacks, AfterFind hooks) and returns
// pointers to them by ID.
func (h *Hook) load(ctx context.Context, pool gorm.ConnPool, w *watched, keys [][]any) (map[string]any, error) {
	out := make(map[string]any, len(keys))
	chunk := max(1, reloadChunk/len(w.schema.PrimaryFields))
	for i := 0; i < len(keys); i += chunk {
		part := keys[i:min(i+chunk, len(keys))]
		col, vals := schema.ToQueryValues(clause.CurrentTable, w.schema.PrimaryFieldDBNames, part)
		dest := reflect.New(reflect.SliceOf(w.schema.ModelType))
		q := h.db.Session(&gorm.Session{NewDB: true, Context: ctx})
		if pool != nil {
			q.Statement.ConnPool = pool
		}
		if err := q.Where(clause.IN{Column: col, Values: vals}).Find(dest.Interface()).Error; err != nil {
			return nil, fmt.Errorf("gormhook: reload %s: %w", w.collection, err)
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
