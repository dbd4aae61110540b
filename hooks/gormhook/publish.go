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
	refused                      // out of order: an earlier version is not published yet; keep the row
	down                         // the publisher is unreachable: keep the row, stop publishing
	failed                       // another failure: keep the row, retry later
)

// publishRow publishes one outbox row exactly as it was committed: its
// event, version, ETag and data; a resync row resyncs its collection.
func (h *Hook) publishRow(ctx context.Context, r *outboxRow, gap bool) outcome {
	ctx = realtime.WithTenant(ctx, r.Tenant)
	var err error
	if r.Event == eventResync {
		err = h.pub.Resync(ctx, r.Collection)
		h.published(err, "resync", "collection", r.Collection, "tenant", r.Tenant)
	} else {
		pub := realtime.Publication{Tenant: r.Tenant, Collection: r.Collection, ID: r.RecordID,
			Event: r.Event, ETag: r.ETag, Version: r.Version, Gap: gap}
		if r.Data != "" {
			pub.Data = json.RawMessage(r.Data)
		}
		_, err = h.pub.Publish(ctx, pub)
		h.published(err, "publish", "collection", r.Collection, "id", r.RecordID, "event", r.Event,
			"version", r.Version, "tenant", r.Tenant, "gap", gap)
	}
	return classify(err)
}

func classify(err error) outcome {
	switch {
	case err == nil:
		return published
	case errors.Is(err, realtime.ErrOutOfOrder):
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
		switch h.publishRow(ctx, &rows[i], false) {
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
			switch h.publishRow(ctx, r, false) {
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
		var n int64
		err := h.outboxSession(ctx, pool).Where("ref = ? AND version < ? AND created_at < ?", r.Ref, r.Version, old).
			Limit(1).Count(&n).Error
		if err == nil && n == 0 {
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
