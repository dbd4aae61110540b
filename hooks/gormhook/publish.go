package gormhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ginrealtime/realtime"
	"gorm.io/gorm"
)

// outcome is what a publish of an outbox row means for the row.
type outcome int

const (
	published outcome = iota + 1 // published, or a duplicate the publisher dropped: delete the row
	dropped                      // can never be published (the publisher refuses it as bad): delete the row
	refused                      // an earlier version is not published yet; keep the row
	down                         // the publisher is unreachable: keep the row, stop publishing
	failed                       // another failure: keep the row, retry later
)

// publishRow publishes one outbox row exactly as it was committed: its
// event, version, ETag and data; a resync row resyncs its collection. pool
// is the connection pool of the outbox reads (nil: the hook's database).
//
// A version above 1 is published with RequireLast (unless with gap): if
// the publisher does not know the record's last version (its engine
// restarted empty, or forgot the record), taking this version as the first
// would make an earlier version still waiting in the outbox a duplicate,
// dropped, and the record's subscribers would see a jump. The row is then
// refused while an earlier version of its record is in the outbox (the
// drainer publishes them in version order), and published without
// RequireLast when none is: versions are taken under the record's version
// row lock and committed in that order, so every version before a
// committed one is committed too, and none in the outbox means all were
// published (their rows are deleted only after).
func (h *Hook) publishRow(ctx context.Context, pool gorm.ConnPool, r *outboxRow, gap bool) outcome {
	ctx = realtime.WithTenant(ctx, r.Tenant)
	if r.Event == eventResync {
		err := h.pub.Resync(ctx, r.Collection)
		h.published(err, "resync", "collection", r.Collection, "tenant", r.Tenant)
		return classify(err)
	}
	pub := realtime.Publication{Tenant: r.Tenant, Collection: r.Collection, ID: r.RecordID,
		Event: r.Event, ETag: r.ETag, Version: r.Version, PrevETag: r.PrevETag, Gap: gap,
		RequireLast: !gap && r.Version > 1}
	if r.Data != "" {
		pub.Data = json.RawMessage(r.Data)
	}
	_, err := h.pub.Publish(ctx, pub)
	if errors.Is(err, realtime.ErrLastUnknown) {
		switch waiting, qerr := h.earlierWaiting(ctx, pool, r, time.Time{}); {
		case qerr != nil:
			h.dbFailed("look for earlier versions in the outbox", qerr)
		case !waiting:
			pub.RequireLast = false
			_, err = h.pub.Publish(ctx, pub)
		}
	}
	h.published(err, "publish", "collection", r.Collection, "id", r.RecordID, "event", r.Event,
		"version", r.Version, "tenant", r.Tenant, "gap", gap)
	return classify(err)
}

// earlierWaiting reports whether an earlier version of r's record is in
// the outbox (committed and not yet published, or published and its row
// not deleted yet), with a non-zero before: created before it.
func (h *Hook) earlierWaiting(ctx context.Context, pool gorm.ConnPool, r *outboxRow, before time.Time) (bool, error) {
	q := h.outboxSession(ctx, pool).Where("ref = ? AND version < ?", r.Ref, r.Version)
	if !before.IsZero() {
		q = q.Where("created_at < ?", before)
	}
	var n int64
	err := q.Limit(1).Count(&n).Error
	return n > 0, err
}

func classify(err error) outcome {
	switch {
	case err == nil:
		return published
	case errors.Is(err, realtime.ErrOutOfOrder), errors.Is(err, realtime.ErrLastUnknown):
		return refused
	case outage(err):
		return down
	case errors.Is(err, realtime.ErrBadRequest):
		return dropped
	}
	return failed
}

// refusedRetries are the pauses between a committing process's tries of a
// row refused as out of order: its predecessor is usually being published
// by another goroutine or node that committed just before. About 0.25 s in
// all; then the row is left to the drainer.
var refusedRetries = []time.Duration{
	time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 8 * time.Millisecond,
	16 * time.Millisecond, 32 * time.Millisecond, 64 * time.Millisecond, 128 * time.Millisecond,
}

// publishCommitted publishes the rows a transaction has just committed, in
// order, on the committing goroutine, and deletes those published. A row
// refused as out of order is tried again a few times (refusedRetries),
// unless its record has a backlog in the outbox (notBacklogged); rows that
// still cannot be published stay for the drainer, which publishes them in
// version order. While the publisher reports itself down nothing is
// tried: the commit does not wait for its failures.
func (h *Hook) publishCommitted(ctx context.Context, pool gorm.ConnPool, rows []outboxRow) {
	if len(rows) == 0 || h.publisherDown() {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("gormhook: panic while publishing committed events; they stay in the outbox", "panic", fmt.Sprint(r))
		}
	}()
	done := make([]int64, 0, len(rows))
	var later []*outboxRow
publish:
	for i := range rows {
		switch h.publishRow(ctx, pool, &rows[i], false) {
		case published, dropped:
			done = append(done, rows[i].ID)
		case refused:
			later = append(later, &rows[i])
		case down:
			break publish
		}
	}
	later = h.notBacklogged(ctx, pool, later)
	for _, pause := range refusedRetries {
		if len(later) == 0 {
			break
		}
		time.Sleep(pause)
		still := later[:0]
		for _, r := range later {
			switch h.publishRow(ctx, pool, r, false) {
			case published, dropped:
				done = append(done, r.ID)
			case refused:
				still = append(still, r)
			}
		}
		later = still
	}
	h.deleteRows(ctx, pool, done)
}

// notBacklogged returns the refused rows worth retrying: those whose
// record has no earlier version waiting in the outbox for longer than
// Grace. Such a backlog (left by an outage) is the drainer's to publish
// first; the commit leaves its row to it at once rather than retry in vain.
// Younger earlier rows are commits still publishing: worth the wait.
func (h *Hook) notBacklogged(ctx context.Context, pool gorm.ConnPool, rows []*outboxRow) []*outboxRow {
	if len(rows) == 0 {
		return rows
	}
	old := time.Now().UTC().Add(-h.outbox.cfg.Grace)
	keep := rows[:0]
	for _, r := range rows {
		if backlog, err := h.earlierWaiting(ctx, pool, r, old); err == nil && !backlog {
			keep = append(keep, r)
		}
	}
	return keep
}

// healthReporter is the optional ability of a Publisher to tell whether it
// can publish now (*realtime.Plugin's Health).
type healthReporter interface{ Health() error }

var _ healthReporter = (*realtime.Plugin)(nil)

// publisherDown reports whether the publisher says it cannot publish now.
func (h *Hook) publisherDown() bool {
	hr, ok := h.pub.(healthReporter)
	return ok && hr.Health() != nil
}
