package gormhook

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"

	"github.com/ginrealtime/realtime"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

const (
	cbPrefix = "realtime:gormhook:"
	planKey  = "realtime:gormhook:plan"
)

type op int

const (
	opUpdate op = iota + 1
	opDelete
)

func (o op) event() string {
	if o == opDelete {
		return realtime.EventDeleted
	}
	return realtime.EventChanged
}

// registerCallbacks places the hook's callbacks in GORM's chains:
//
//	create: guard (first) … gorm:create, collect … commit
//	update: guard (first) … select affected, gorm:update, collect … commit
//	delete: guard (first) … select affected, gorm:delete, collect … commit
//
// The collect callbacks are placed with Before on the callback that follows
// the write, because GORM's After on an already sorted callback appends to
// the end of the chain, past gorm:commit_or_rollback_transaction.
func (h *Hook) registerCallbacks(db *gorm.DB) error {
	cb := db.Callback()
	return errors.Join(
		cb.Create().Before("*").Register(cbPrefix+"guard", h.guard),
		cb.Create().Before("gorm:save_after_associations").Register(cbPrefix+"collect", h.collectCreate),
		cb.Update().Before("*").Register(cbPrefix+"guard", h.guard),
		cb.Update().Before("gorm:update").Register(cbPrefix+"select", h.selectAffected(opUpdate)),
		cb.Update().Before("gorm:save_after_associations").Register(cbPrefix+"collect", h.collect(opUpdate)),
		cb.Delete().Before("*").Register(cbPrefix+"guard", h.guard),
		cb.Delete().Before("gorm:delete").Register(cbPrefix+"select", h.selectAffected(opDelete)),
		cb.Delete().Before("gorm:after_delete").Register(cbPrefix+"collect", h.collect(opDelete)),
	)
}

// match returns the watched model a statement writes. exact is false when a
// watched table is written without its model (db.Table("posts") with a map
// or another struct): its records cannot be named, the collection is resynced.
func (h *Hook) match(stmt *gorm.Statement) (w *watched, exact bool) {
	if stmt.Schema != nil {
		if w := h.byType[stmt.Schema.ModelType]; w != nil && (stmt.Table == "" || stmt.Table == w.table) {
			return w, true
		}
	}
	return h.byTable[stmt.Table], false
}

// guard runs first in every write chain. A write to a watched model inside a
// transaction the hook did not begin is refused (its commit could not be
// seen); a pool the hook did not wrap (a session derived before db.Use, a
// db.Connection) is wrapped for this statement, so that its default
// transaction is followed.
func (h *Hook) guard(db *gorm.DB) {
	if db.Error != nil || db.DryRun {
		return
	}
	w, _ := h.match(db.Statement)
	if w == nil {
		return
	}
	cp := db.Statement.ConnPool
	if t, inTx := txOf(cp); inTx {
		if t == nil {
			db.AddError(fmt.Errorf("gormhook: write to %s: %w", w.collection, ErrUnmanagedTx))
		}
		return
	}
	if cp != nil && !managedPool(cp) {
		db.Statement.ConnPool = &hookPool{ConnPool: cp, h: h}
	}
}

// written returns the watched model a finished write changed (exact as in
// match) and the statement's context without its cancellation; ok is false
// when the write failed, was a dry run, changed no row or is not watched.
func (h *Hook) written(db *gorm.DB) (w *watched, exact bool, ctx context.Context, ok bool) {
	if db.Error != nil || db.DryRun || db.RowsAffected == 0 {
		return nil, false, nil, false
	}
	if w, exact = h.match(db.Statement); w == nil {
		return nil, false, nil, false
	}
	return w, exact, detached(db.Statement), true
}

// collectCreate turns the rows a create inserted into snapshot events.
func (h *Hook) collectCreate(db *gorm.DB) {
	w, exact, ctx, ok := h.written(db)
	if !ok {
		return
	}
	stmt := db.Statement
	if !exact {
		h.emit(db, []change{{ctx: ctx, w: w, event: realtime.EventResync}})
		return
	}
	doNothing := false
	if c, ok := stmt.Clauses["ON CONFLICT"]; ok {
		oc, _ := c.Expression.(clause.OnConflict)
		doNothing = oc.DoNothing
	}
	var cs []change
	unnamed := false
	eachElem(stmt.ReflectValue, func(v reflect.Value) {
		key, id, ok := keyOf(ctx, w, v)
		if !ok {
			// A row skipped by ON CONFLICT DO NOTHING, or one whose key the
			// database chose without telling: the collection is resynced.
			unnamed = unnamed || !doNothing
			return
		}
		c := change{ctx: ctx, w: w, event: realtime.EventSnapshot, id: id, key: key, reload: true}
		if h.noReload && v.Kind() == reflect.Struct {
			c.record, c.reload = copyOf(v), false
		}
		cs = append(cs, c)
	})
	if unnamed {
		cs = append(cs, change{ctx: ctx, w: w, event: realtime.EventResync})
	}
	h.emit(db, cs)
}

// plan is what selectAffected learned before an update or delete ran.
type plan struct {
	fast   bool       // the statement's model names its records by primary key
	rows   []selected // else the records the statement's conditions select
	resync bool       // else: publish a resync of the collection
}

type selected struct {
	key    []any
	id     string
	record any // the row before a delete (deleted events carry it as Prior)
}

// selectAffected runs before gorm:update / gorm:delete. When the statement
// has conditions, or its model does not carry every primary key, it selects
// the primary keys of the rows the statement is about to write, with the
// same conditions, on the same connection (inside the same transaction) and
// the same soft-delete scope.
func (h *Hook) selectAffected(o op) func(*gorm.DB) {
	return func(db *gorm.DB) {
		if db.Error != nil || db.DryRun {
			return
		}
		w, exact := h.match(db.Statement)
		if w == nil {
			return
		}
		var p *plan
		if exact {
			p = h.plan(db, w, o)
		}
		db.InstanceSet(planKey, p) // also replaces a stale plan of a reused statement
	}
}

func (h *Hook) plan(db *gorm.DB, w *watched, o op) *plan {
	stmt := db.Statement
	where, ok := userWhere(stmt)
	if !ok {
		h.log.Warn("gormhook: cannot copy the conditions of a write; the collection will be resynced",
			"collection", w.collection)
		return &plan{resync: true}
	}
	if _, limited := stmt.Clauses["LIMIT"]; limited {
		// Whether the dialect honours LIMIT in UPDATE/DELETE decides which
		// rows are written: the records cannot be named reliably.
		return &plan{resync: true}
	}
	if o == opUpdate && setsKey(stmt, w) {
		// The records' IDs change: the old ones end, the new ones start.
		return &plan{resync: true}
	}
	conds, named := keyConds(stmt, w, o)
	if len(where) == 0 && named && o == opUpdate {
		return &plan{fast: true}
	}
	if len(where) == 0 && len(conds) == 0 && !db.AllowGlobalUpdate {
		return nil // GORM refuses it with ErrMissingWhereClause
	}
	if h.maxAffected < 0 {
		return &plan{resync: true}
	}
	// A delete reads the rows it is about to remove: the deleted event carries
	// them as Prior, so the app's Authorizer decides on the record as it was.
	full := o == opDelete
	rows, err := h.selectRows(db, w, append(where, conds...), full)
	if err != nil {
		h.log.Warn("gormhook: cannot select the records a write affects; the collection will be resynced",
			"collection", w.collection, "err", err)
		return &plan{resync: true}
	}
	if len(rows) > h.maxAffected {
		return &plan{resync: true}
	}
	return &plan{rows: rows}
}

// setsKey reports whether an update assigns a primary key column a new
// value: a map naming a key field, or a struct other than the model whose
// key fields are set and differ from the model's.
func setsKey(stmt *gorm.Statement, w *watched) bool {
	dv := deref(reflect.ValueOf(stmt.Dest))
	switch {
	case dv.Kind() == reflect.Map && dv.Type().Key().Kind() == reflect.String:
		for _, k := range dv.MapKeys() {
			if f := w.schema.LookUpField(k.String()); f != nil && f.PrimaryKey {
				return true
			}
		}
	case dv.Kind() == reflect.Struct:
		ds := w.schema
		if dv.Type() != w.schema.ModelType {
			ps := &gorm.Statement{DB: stmt.DB}
			if ps.Parse(stmt.Dest) != nil {
				return false
			}
			ds = ps.Schema
		} else if stmt.Dest == stmt.Model {
			return false
		}
		mv := deref(stmt.ReflectValue)
		for _, pf := range w.schema.PrimaryFields {
			df := ds.LookUpField(pf.DBName)
			if df == nil {
				continue
			}
			nv, zero := df.ValueOf(stmt.Context, dv)
			if zero {
				continue
			}
			if mv.Kind() != reflect.Struct || mv.Type() != w.schema.ModelType {
				return true
			}
			if ov, _ := pf.ValueOf(stmt.Context, mv); formatKey(ov) != formatKey(nv) {
				return true
			}
		}
	}
	return false
}

// userWhere returns a copy of the conditions the caller gave the statement.
func userWhere(stmt *gorm.Statement) ([]clause.Expression, bool) {
	c, ok := stmt.Clauses["WHERE"]
	if !ok || c.Expression == nil {
		return nil, true
	}
	where, ok := c.Expression.(clause.Where)
	if !ok {
		return nil, false
	}
	return slices.Clone(where.Exprs), true
}

// keyConds returns the primary-key conditions GORM derives from the
// statement's model for an update or a delete, and whether those keys name
// every written record on their own (every key field of every element set).
func keyConds(stmt *gorm.Statement, w *watched, o op) (conds []clause.Expression, named bool) {
	ctx, rv := stmt.Context, stmt.ReflectValue
	if !rv.IsValid() {
		return nil, false
	}
	named = true
	n := 0
	eachElem(rv, func(v reflect.Value) {
		n++
		if _, _, ok := keyOf(ctx, w, v); !ok {
			named = false
		}
	})
	named = named && n > 0
	if o == opUpdate && rv.Kind() == reflect.Struct {
		if rv.Type() != w.schema.ModelType {
			return nil, false
		}
		for _, f := range w.schema.PrimaryFields {
			if v, zero := f.ValueOf(ctx, rv); !zero {
				conds = append(conds, clause.Eq{Column: clause.Column{Table: clause.CurrentTable, Name: f.DBName}, Value: v})
			}
		}
		return conds, named
	}
	in := func(v reflect.Value) {
		_, vals := schema.GetIdentityFieldValuesMap(ctx, v, w.schema.PrimaryFields)
		if col, values := schema.ToQueryValues(clause.CurrentTable, w.schema.PrimaryFieldDBNames, vals); len(values) > 0 {
			conds = append(conds, clause.IN{Column: col, Values: values})
		}
	}
	if elemType(rv) != w.schema.ModelType {
		return nil, false
	}
	in(rv)
	if o == opDelete && rv.CanAddr() && stmt.Model != nil && stmt.Dest != stmt.Model {
		mv := reflect.Indirect(reflect.ValueOf(stmt.Model))
		if elemType(mv) != w.schema.ModelType {
			return nil, false
		}
		before := len(conds)
		in(mv)
		named = named && len(conds) == before
	}
	return conds, named
}

// selectRows selects the primary keys (full rows with full) of the records
// matching conds, in the statement's transaction and scope, at most
// maxAffected+1 of them.
func (h *Hook) selectRows(db *gorm.DB, w *watched, conds []clause.Expression, full bool) ([]selected, error) {
	dest := reflect.New(reflect.SliceOf(w.schema.ModelType))
	q := db.Session(&gorm.Session{NewDB: true}).Model(reflect.New(w.schema.ModelType).Interface())
	q.Statement.SkipHooks = true
	if db.Statement.Unscoped {
		q = q.Unscoped()
	}
	if len(conds) > 0 {
		q = q.Clauses(clause.Where{Exprs: conds})
	}
	if !full {
		q = q.Select(w.schema.PrimaryFieldDBNames)
	} else if h.dialect != "sqlite" {
		// The rows about to be deleted, as committed last: a plain read
		// could return a version older than one a concurrent transaction
		// is committing (MySQL's snapshot; PostgreSQL before that commit).
		q = q.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate})
	}
	if err := q.Limit(min(h.maxAffected, math.MaxInt32-1) + 1).Find(dest.Interface()).Error; err != nil {
		return nil, fmt.Errorf("gormhook: select affected %s: %w", w.collection, err)
	}
	ctx := db.Statement.Context
	s := dest.Elem()
	rows := make([]selected, 0, s.Len())
	for i := range s.Len() {
		e := s.Index(i)
		key, id, ok := keyOf(ctx, w, e)
		if !ok {
			return nil, fmt.Errorf("gormhook: select affected %s: a row without a primary key", w.collection)
		}
		r := selected{key: key, id: id}
		if full {
			r.record = e.Addr().Interface()
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// collect runs after gorm:update / gorm:delete and turns the plan into
// changed / deleted events.
func (h *Hook) collect(o op) func(*gorm.DB) {
	return func(db *gorm.DB) {
		v, _ := db.InstanceGet(planKey)
		p, _ := v.(*plan)
		db.InstanceSet(planKey, (*plan)(nil))
		w, exact, ctx, ok := h.written(db)
		if !ok {
			return
		}
		stmt := db.Statement
		if !exact || p == nil || p.resync {
			h.emit(db, []change{{ctx: ctx, w: w, event: realtime.EventResync}})
			return
		}
		var cs []change
		if p.fast {
			eachElem(stmt.ReflectValue, func(v reflect.Value) {
				key, id, ok := keyOf(ctx, w, v)
				if !ok {
					return
				}
				c := change{ctx: ctx, w: w, event: o.event(), id: id, key: key}
				if o == opUpdate {
					c.reload = true
					if h.noReload && v.Kind() == reflect.Struct {
						c.record, c.reload = copyOf(v), false
					}
				}
				cs = append(cs, c)
			})
		} else {
			for _, r := range p.rows {
				cs = append(cs, change{ctx: ctx, w: w, event: o.event(), id: r.id, key: r.key,
					record: r.record, reload: o == opUpdate})
			}
		}
		h.emit(db, cs)
	}
}

// emit queues changes on the statement's transaction, recorded and
// published when it commits. A statement that ran outside any transaction
// (SkipDefaultTransaction) is committed already: its changes are recorded
// in a transaction of their own, right after it, then published.
func (h *Hook) emit(db *gorm.DB, cs []change) {
	if len(cs) == 0 {
		return
	}
	switch t, inTx := txOf(db.Statement.ConnPool); {
	case t != nil:
		t.add(cs...)
	case inTx:
		// guard refuses such writes; this is a transaction swapped in
		// between guard and the write.
		h.log.Error("gormhook: write in an unmanaged transaction; events not published",
			"collection", cs[0].w.collection, "err", ErrUnmanagedTx)
	default:
		h.commitAlone(db.Statement.ConnPool, cs)
	}
}

// commitAlone records and publishes the changes of a write that committed
// on its own, in a transaction begun on its pool. When that fails the
// write's events are lost: the collections it wrote are resynced instead
// (best effort: the publisher may be down too).
func (h *Hook) commitAlone(pool gorm.ConnPool, cs []change) {
	q := h.db.Session(&gorm.Session{NewDB: true, Context: cs[0].ctx})
	q.Statement.ConnPool = pool
	err := q.Transaction(func(tx *gorm.DB) error {
		t, _ := txOf(tx.Statement.ConnPool)
		if t == nil {
			return ErrUnmanagedTx
		}
		t.add(cs...)
		return nil
	})
	if err == nil {
		return
	}
	h.log.Error("gormhook: cannot record the events of a write made outside a transaction; resyncing its collections",
		"collection", cs[0].w.collection, "err", err)
	seen := map[[2]string]bool{}
	for _, c := range cs {
		k := [2]string{realtime.TenantFrom(c.ctx), c.w.collection}
		if !seen[k] {
			seen[k] = true
			err := h.pub.Resync(realtime.WithTenant(c.ctx, k[0]), k[1])
			h.published(err, "resync", "collection", k[1], "tenant", k[0])
		}
	}
}

// detached is the statement's context without its cancellation or deadline:
// the events of a committed write are published even if the request that
// made it has gone.
func detached(stmt *gorm.Statement) context.Context {
	if stmt.Context == nil {
		return context.Background()
	}
	return context.WithoutCancel(stmt.Context)
}

// eachElem calls f with every struct (or map) that rv holds: rv itself, or
// the elements of a slice or array, pointers followed, nils skipped.
func eachElem(rv reflect.Value, f func(reflect.Value)) {
	rv = deref(rv)
	switch rv.Kind() {
	case reflect.Struct, reflect.Map:
		f(rv)
	case reflect.Slice, reflect.Array:
		for i := range rv.Len() {
			if e := deref(rv.Index(i)); e.Kind() == reflect.Struct || e.Kind() == reflect.Map {
				f(e)
			}
		}
	}
}

func deref(v reflect.Value) reflect.Value {
	for v.IsValid() && (v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface) {
		if v.IsNil() {
			return reflect.Value{}
		}
		v = v.Elem()
	}
	return v
}

// elemType is the struct type a value holds, through pointers and slices.
func elemType(v reflect.Value) reflect.Type {
	if !v.IsValid() {
		return nil
	}
	t := v.Type()
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
		t = t.Elem()
	}
	return t
}

// keyOf returns the primary key of a model struct (or a map written with the
// model) and its ID: each key field formatted with %v (pointers followed),
// joined with "," for a composite key. ok is false when a key field is unset.
func keyOf(ctx context.Context, w *watched, v reflect.Value) (key []any, id string, ok bool) {
	fields := w.schema.PrimaryFields
	key = make([]any, len(fields))
	parts := make([]string, len(fields))
	for i, f := range fields {
		var val any
		switch {
		case v.Kind() == reflect.Struct && v.Type() == w.schema.ModelType:
			var zero bool
			if val, zero = f.ValueOf(ctx, v); zero {
				return nil, "", false
			}
		case v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String:
			mv := v.MapIndex(reflect.ValueOf(f.DBName).Convert(v.Type().Key()))
			if !mv.IsValid() {
				mv = v.MapIndex(reflect.ValueOf(f.Name).Convert(v.Type().Key()))
			}
			if d := deref(mv); !d.IsValid() || d.IsZero() {
				return nil, "", false
			}
			val = mv.Interface()
		default:
			return nil, "", false
		}
		s := formatKey(val)
		if s == "" {
			return nil, "", false
		}
		key[i], parts[i] = val, s
	}
	return key, strings.Join(parts, ","), true
}

func formatKey(v any) string {
	rv := deref(reflect.ValueOf(v))
	if !rv.IsValid() {
		return ""
	}
	return fmt.Sprintf("%v", rv.Interface())
}

// copyOf returns a pointer to a shallow copy of a struct.
func copyOf(v reflect.Value) any {
	p := reflect.New(v.Type())
	p.Elem().Set(v)
	return p.Interface()
}
