package gormhook

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/ginrealtime/realtime"
	"gorm.io/gorm"
)

// LoadFunc loads a record for the plugin (a realtime.RecordLoader's work)
// through tx, the read-only transaction Loader runs it in: read with tx,
// exactly as the app's GET handler reads (so the record marshals to the
// same JSON and has the same ETag as the events). It returns the record,
// or an error wrapping realtime.ErrNotFound or gorm.ErrRecordNotFound when
// it is absent.
type LoadFunc func(ctx context.Context, tx *gorm.DB, ref realtime.Ref) (any, error)

// Loader returns a realtime.RecordLoader (realtime.Config.Loader) that
// runs load and reads the record's version in one read-only transaction,
// one consistent snapshot (REPEATABLE READ on PostgreSQL and MySQL; a
// SQLite transaction is one snapshot already), so the plugin knows which
// version its snapshot is and never sends an event older than it:
//
//   - found, with a version: realtime.VersionedRecord{Record: rec, Version: v};
//   - absent, with a version (deleted, or hidden from load):
//     realtime.VersionedRecord{Record: nil, Version: v};
//   - found, without a version (never written through a hook since the
//     versions table exists): the bare record;
//   - absent, without a version: an error wrapping realtime.ErrNotFound.
//
// Other errors are returned wrapped. The transaction is begun on the
// database the hook is installed on (db.Use), which must be the one the
// app writes to.
func (h *Hook) Loader(load LoadFunc) realtime.RecordLoader {
	return func(ctx context.Context, ref realtime.Ref) (any, error) {
		if h.db == nil || h.outbox == nil {
			return nil, fmt.Errorf("gormhook: load %s/%s: %w: the hook is not installed (db.Use)", ref.Collection, ref.ID, realtime.ErrInvalidConfig)
		}
		var out any
		err := h.readSnapshot(ctx, func(tx *gorm.DB) error {
			rec, lerr := load(ctx, tx, ref)
			notFound := errors.Is(lerr, realtime.ErrNotFound) || errors.Is(lerr, gorm.ErrRecordNotFound)
			if lerr != nil && !notFound {
				return lerr
			}
			v, err := h.readVersion(tx, ref.Collection, ref.ID)
			if err != nil {
				return fmt.Errorf("read the version: %w", err)
			}
			switch {
			case notFound && v == 0:
				if errors.Is(lerr, realtime.ErrNotFound) {
					return lerr
				}
				return fmt.Errorf("%w: %w", realtime.ErrNotFound, lerr)
			case notFound:
				out = realtime.VersionedRecord{Version: v}
			case v == 0:
				out = rec
			default:
				out = realtime.VersionedRecord{Record: rec, Version: v}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("gormhook: load %s/%s: %w", ref.Collection, ref.ID, err)
		}
		return out, nil
	}
}

// readSnapshot runs fn in a read-only transaction whose reads all see one
// snapshot. PostgreSQL and MySQL get REPEATABLE READ READ ONLY; SQLite a
// read-only (deferred) transaction, one snapshot by itself (its drivers may
// refuse an isolation level). A driver that refuses the options anyway gets
// a plain transaction, from then on.
func (h *Hook) readSnapshot(ctx context.Context, fn func(tx *gorm.DB) error) error {
	opts := snapshotOpts[h.dialect == "sqlite"]
	if h.plainSnapshot.Load() {
		opts = nil
	}
	db := h.db.Session(&gorm.Session{NewDB: true, Context: ctx})
	tx := db.Begin(opts)
	if tx.Error != nil && opts != nil && ctx.Err() == nil {
		h.log.Warn("gormhook: the driver refuses read-only repeatable-read transactions; loading in plain ones",
			"err", tx.Error)
		h.plainSnapshot.Store(true)
		tx = db.Begin()
	}
	if tx.Error != nil {
		return fmt.Errorf("begin a read-only transaction: %w", tx.Error)
	}
	defer tx.Rollback() // nothing to keep
	return fn(tx)
}

// snapshotOpts are the read transactions' options: [false] for PostgreSQL
// and MySQL, [true] for SQLite.
var snapshotOpts = map[bool]*sql.TxOptions{
	false: {Isolation: sql.LevelRepeatableRead, ReadOnly: true},
	true:  {ReadOnly: true},
}
