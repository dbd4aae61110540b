package gormhook

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"gorm.io/gorm"
)

// versionRow is a row of the versions table: the last version committed
// for a record. It is never deleted: a record deleted and created again
// continues its numbering.
type versionRow struct {
	// Ref is refOf(collection, record ID): a fixed-width key every
	// database can index, whatever the lengths of the names.
	Ref        string `gorm:"primaryKey;size:64"`
	Collection string `gorm:"not null"`
	RecordID   string `gorm:"not null"`
	Version    uint64 `gorm:"not null"`
}

// refOf is a record's key in the versions and outbox tables: the hex
// SHA-256 of its collection and ID, each prefixed with its length.
//
// The tenant is not part of it: a record is a row of a watched table, and
// its tenant an attribute of that row (the write's context, or WithTenant).
// The version is taken before the record is read in the transaction (the
// lock on the version row must be held before the read, see nextVersions),
// and WithTenant can only name the tenant after that read.
func refOf(collection, id string) string {
	h := sha256.New()
	var n [8]byte
	for _, s := range [...]string{collection, id} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// versionChunk bounds the records of one upsert (4 bind variables each).
const versionChunk = 250

// nextVersions takes the next version of each record in the transaction
// tx and returns them by ref: version = version + 1 on the record's row of
// the versions table, created at 1. The upsert locks the row until tx ends:
// a concurrent transaction taking a version of the same record waits for
// this one to commit (or roll back) and then reads its value, so versions
// follow commit order. Rows are upserted in ref order, so two transactions
// writing the same records cannot deadlock on them.
//
// Read the records only after this: a read after the lock sees every
// earlier version of the record committed.
func (h *Hook) nextVersions(ctx context.Context, tx gorm.ConnPool, refs []versionRow) (map[string]uint64, error) {
	refs = slices.Clone(refs)
	slices.SortFunc(refs, func(a, b versionRow) int { return strings.Compare(a.Ref, b.Ref) })
	refs = slices.CompactFunc(refs, func(a, b versionRow) bool { return a.Ref == b.Ref })
	out := make(map[string]uint64, len(refs))
	for len(refs) > 0 {
		part := refs[:min(len(refs), versionChunk)]
		refs = refs[len(part):]
		got, err := h.upsertVersions(ctx, tx, part)
		if err != nil {
			return nil, fmt.Errorf("gormhook: take record versions in %s: %w", h.outbox.cfg.VersionTable, err)
		}
		for _, r := range got {
			out[r.Ref] = r.Version
		}
		for _, r := range part {
			if out[r.Ref] == 0 {
				return nil, fmt.Errorf("gormhook: take record versions in %s: no version returned for %s/%s",
					h.outbox.cfg.VersionTable, r.Collection, r.RecordID)
			}
		}
	}
	return out, nil
}

// upsertVersions runs one upsert of rows and returns their new versions.
//
//	SQLite, PostgreSQL: INSERT … ON CONFLICT (ref) DO UPDATE SET version = v.version + 1 RETURNING ref, version
//	MySQL, MariaDB:     INSERT … ON DUPLICATE KEY UPDATE version = version + 1, then SELECT
//
// MySQL has no RETURNING; its SELECT, in the same transaction, sees the
// rows the upsert just wrote (a consistent read shows the transaction's own
// changes, whatever the isolation level).
func (h *Hook) upsertVersions(ctx context.Context, tx gorm.ConnPool, rows []versionRow) ([]versionRow, error) {
	q := h.session(ctx, tx)
	table := q.Statement.Quote(h.outbox.cfg.VersionTable)
	var sb strings.Builder
	args := make([]any, 0, 3*len(rows))
	if h.dialect == "mysql" {
		sb.WriteString("INSERT INTO " + table)
	} else {
		sb.WriteString("INSERT INTO " + table + " AS v")
	}
	sb.WriteString(" (ref, collection, record_id, version) VALUES ")
	keys := make([]string, len(rows))
	for i, r := range rows {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("(?, ?, ?, 1)")
		args = append(args, r.Ref, r.Collection, r.RecordID)
		keys[i] = r.Ref
	}
	var got []versionRow
	if h.dialect == "mysql" {
		sb.WriteString(" ON DUPLICATE KEY UPDATE version = version + 1")
		if err := q.Exec(sb.String(), args...).Error; err != nil {
			return nil, err
		}
		err := h.session(ctx, tx).Table(h.outbox.cfg.VersionTable).Select("ref", "version").
			Where("ref IN ?", keys).Find(&got).Error
		return got, err
	}
	sb.WriteString(" ON CONFLICT (ref) DO UPDATE SET version = v.version + 1 RETURNING ref, version")
	err := q.Raw(sb.String(), args...).Scan(&got).Error
	return got, err
}

// readVersion returns the last version committed for a record, 0 if none.
func (h *Hook) readVersion(db *gorm.DB, collection, id string) (uint64, error) {
	var vs []uint64
	err := db.Session(&gorm.Session{NewDB: true}).Table(h.outbox.cfg.VersionTable).
		Where("ref = ?", refOf(collection, id)).Limit(1).Pluck("version", &vs).Error
	if err != nil || len(vs) == 0 {
		return 0, err
	}
	return vs[0], nil
}

// session is a statement builder on pool (nil: the database's pool),
// outside any default transaction, without the app's statement settings.
func (h *Hook) session(ctx context.Context, pool gorm.ConnPool) *gorm.DB {
	q := h.db.Session(&gorm.Session{NewDB: true, SkipDefaultTransaction: true, Context: ctx})
	if pool != nil {
		q.Statement.ConnPool = pool
	}
	return q
}
