package gormhook

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"

	"gorm.io/gorm"
)

// hookPool wraps a connection pool (a *sql.DB, a *sql.Conn, the inner pool
// of a *gorm.PreparedStmtDB) so that every transaction GORM begins on it is a
// *hookTx. GORM begins transactions through the gorm.ConnPoolBeginner
// interface, so every path gets one: db.Transaction, db.Begin, the default
// transaction around each write, CreateInBatches.
type hookPool struct {
	gorm.ConnPool
	h *Hook
}

var (
	_ gorm.ConnPoolBeginner = (*hookPool)(nil)
	_ gorm.GetDBConnector   = (*hookPool)(nil)
)

// BeginTx implements gorm.ConnPoolBeginner.
func (p *hookPool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	var inner gorm.ConnPool
	switch b := p.ConnPool.(type) {
	case gorm.TxBeginner:
		tx, err := b.BeginTx(ctx, opts)
		if err != nil {
			return nil, err
		}
		inner = tx
	case gorm.ConnPoolBeginner:
		cp, err := b.BeginTx(ctx, opts)
		if err != nil {
			return nil, err
		}
		inner = cp
	default:
		return nil, gorm.ErrInvalidTransaction
	}
	tx, ok := inner.(gorm.Tx)
	if !ok {
		// Not a transaction the hook can follow: writes to watched models
		// inside it are refused with ErrUnmanagedTx.
		return inner, nil
	}
	return &hookTx{Tx: tx, pool: p, h: p.h}, nil
}

// GetDBConn implements gorm.GetDBConnector so that db.DB() still works.
func (p *hookPool) GetDBConn() (*sql.DB, error) {
	switch c := p.ConnPool.(type) {
	case *sql.DB:
		return c, nil
	case gorm.GetDBConnector:
		return c.GetDBConn()
	}
	return nil, nil
}

// Ping pings the underlying database when it can.
func (p *hookPool) Ping() error {
	if pg, ok := p.ConnPool.(interface{ Ping() error }); ok {
		return pg.Ping()
	}
	return nil
}

// hookTx is a transaction begun through a hookPool. The changes of the
// statements run in it wait in pending; Commit records them in the
// transaction and publishes them once the database has committed, Rollback
// drops them, and a ROLLBACK TO SAVEPOINT (GORM's nested transactions)
// drops those collected since the savepoint.
type hookTx struct {
	gorm.Tx
	pool *hookPool
	h    *Hook

	mu      sync.Mutex
	pending []change
	marks   []savepoint
}

type savepoint struct {
	name string
	n    int // len(pending) when the savepoint was set
}

var (
	_ gorm.Tx             = (*hookTx)(nil)
	_ gorm.GetDBConnector = (*hookTx)(nil)
)

// Commit records the transaction's events in it (record: versions taken,
// records read, outbox rows inserted), commits, then publishes the rows
// and deletes those published. When recording fails the transaction is
// rolled back and Commit fails: a committed write always has its events.
// When the COMMIT itself fails its outcome may be unknown (a connection
// lost during COMMIT): if it did commit, its rows are in the outbox and the
// drainer publishes them.
func (t *hookTx) Commit() error {
	changes := t.take()
	if len(changes) == 0 {
		return t.Tx.Commit()
	}
	ctx := changes[0].ctx
	rows, err := t.h.record(ctx, t.Tx, changes)
	if err != nil {
		_ = t.Tx.Rollback()
		return fmt.Errorf("gormhook: commit: %w", err)
	}
	if err := t.Tx.Commit(); err != nil {
		if !errors.Is(err, sql.ErrTxDone) {
			t.h.log.Warn("gormhook: commit failed; if it did commit, the drainer publishes its events", "err", err)
		}
		return err
	}
	t.h.publishCommitted(ctx, t.pool, rows)
	return nil
}

// Rollback rolls the transaction back and forgets its changes.
func (t *hookTx) Rollback() error {
	t.take()
	return t.Tx.Rollback()
}

// ExecContext runs a statement and follows the savepoints it sets, releases
// or rolls back to.
func (t *hookTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	res, err := t.Tx.ExecContext(ctx, query, args...)
	if err == nil {
		if op, name, ok := parseSavepoint(query); ok {
			t.savepoint(op, name)
		}
	}
	return res, err
}

// GetDBConn implements gorm.GetDBConnector so that tx.DB() still works.
func (t *hookTx) GetDBConn() (*sql.DB, error) {
	if c, ok := t.Tx.(gorm.GetDBConnector); ok {
		if db, err := c.GetDBConn(); db != nil || err != nil {
			return db, err
		}
	}
	return t.pool.GetDBConn()
}

func (t *hookTx) add(cs ...change) {
	t.mu.Lock()
	t.pending = append(t.pending, cs...)
	t.mu.Unlock()
}

func (t *hookTx) take() []change {
	t.mu.Lock()
	defer t.mu.Unlock()
	cs := t.pending
	t.pending, t.marks = nil, nil
	return cs
}

func (t *hookTx) savepoint(op spOp, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := len(t.marks) - 1
	if op != spSet {
		for ; i >= 0 && !strings.EqualFold(t.marks[i].name, name); i-- {
		}
		if i < 0 {
			return // a savepoint set before the hook saw the transaction
		}
	}
	switch op {
	case spSet:
		t.marks = append(t.marks, savepoint{name: name, n: len(t.pending)})
	case spRollback:
		// The savepoint stays: it can be rolled back to again.
		clear(t.pending[t.marks[i].n:])
		t.pending = t.pending[:t.marks[i].n]
		t.marks = t.marks[:i+1]
	case spRelease:
		t.marks = t.marks[:i]
	}
}

type spOp int

const (
	spSet spOp = iota + 1
	spRollback
	spRelease
)

// parseSavepoint recognises the savepoint statements of the SQL dialects GORM
// supports: SAVEPOINT n, ROLLBACK TO [SAVEPOINT] n, RELEASE [SAVEPOINT] n,
// and SQL Server's SAVE TRAN[SACTION] n and ROLLBACK TRAN[SACTION] n.
func parseSavepoint(query string) (op spOp, name string, ok bool) {
	if len(query) > 256 {
		return 0, "", false
	}
	f := strings.Fields(strings.TrimRight(strings.TrimSpace(query), ";"))
	if len(f) < 2 {
		return 0, "", false
	}
	name = strings.Trim(f[len(f)-1], "`\"[]")
	is := func(i int, words ...string) bool {
		for _, w := range words {
			if strings.EqualFold(f[i], w) {
				return true
			}
		}
		return false
	}
	switch {
	case len(f) == 2 && is(0, "SAVEPOINT"):
		return spSet, name, true
	case len(f) == 3 && is(0, "SAVE") && is(1, "TRAN", "TRANSACTION"):
		return spSet, name, true
	case len(f) == 4 && is(0, "ROLLBACK") && is(1, "TO") && is(2, "SAVEPOINT"),
		len(f) == 3 && is(0, "ROLLBACK") && is(1, "TO", "TRAN", "TRANSACTION"):
		return spRollback, name, true
	case len(f) == 3 && is(0, "RELEASE") && is(1, "SAVEPOINT"),
		len(f) == 2 && is(0, "RELEASE"):
		return spRelease, name, true
	}
	return 0, "", false
}

// wrapRootPool makes db's pool (and so every session derived from db from
// now on) a hookPool. With PrepareStmt the pool is a *gorm.PreparedStmtDB,
// whose inner pool is wrapped instead, so that GORM still recognises it.
func (h *Hook) wrapRootPool(db *gorm.DB) {
	if ps, ok := db.ConnPool.(*gorm.PreparedStmtDB); ok {
		if !managedPool(ps.ConnPool) {
			ps.ConnPool = &hookPool{ConnPool: ps.ConnPool, h: h}
		}
	} else if !managedPool(db.ConnPool) {
		db.ConnPool = &hookPool{ConnPool: db.ConnPool, h: h}
	}
	db.Statement.ConnPool = db.ConnPool
}

// managedPool reports whether transactions begun on cp are hookTxs.
func managedPool(cp gorm.ConnPool) bool {
	for {
		switch c := cp.(type) {
		case *hookPool:
			return true
		case *gorm.PreparedStmtDB:
			cp = c.ConnPool
		default:
			return false
		}
	}
}

// txOf returns the hookTx a statement runs in. inTx reports whether it runs
// in a transaction at all (t is nil for a transaction the hook did not begin).
func txOf(cp gorm.ConnPool) (t *hookTx, inTx bool) {
	for {
		switch c := cp.(type) {
		case *hookTx:
			return c, true
		case *gorm.PreparedStmtTX:
			cp = c.Tx
			continue
		}
		_, inTx = cp.(gorm.TxCommitter)
		return nil, inTx
	}
}
