package gormhook

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"
)

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
		h.countBacklog(ctx)
	}
}

// drain claims and publishes one batch of rows older than Grace, with the
// younger rows of their records. It reports whether the batch was full and
// published at least in part, without an outage. While the publisher is
// down it claims one row, as a probe.
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
	full := len(cand) == limit
	if limit > 1 {
		// A record's younger rows follow its older ones in this drain:
		// they were refused by their committers, which gave up on them
		// because of that backlog (notBacklogged), and would otherwise
		// wait for Grace while subscribers resuming from a version the
		// database has do not find it in the broker. A row still being
		// published by its committer is published twice at worst: the
		// publisher drops the duplicate.
		var refs []string
		err := h.outboxSession(ctx, nil).Where("id IN ? AND ref <> ''", cand).Distinct("ref").Pluck("ref", &refs).Error
		if err == nil && len(refs) > 0 {
			var younger []int64
			err = h.outboxSession(ctx, nil).
				Where("ref IN ? AND id NOT IN ? AND (claimed_at IS NULL OR claimed_at < ?)", refs, cand, expired).
				Order("id").Limit(limit).Pluck("id", &younger).Error
			cand = append(cand, younger...)
		}
		if err != nil {
			if ctx.Err() == nil {
				h.dbFailed("read the outbox", err)
			}
			return false
		}
	}
	done, ok := h.claimAndPublish(ctx, cand)
	progress := len(done) > 0
	// Rows of the records just published, committed during this drain by
	// processes that left them to it (their record had a backlog:
	// notBacklogged), follow at once: the next drains would leave them for
	// Grace, and the record's later commits, refused behind them, with
	// them, while subscribers resuming from a version the database has do
	// not find it in the broker. The published rows are deleted before the
	// look, so a commit that saw them (and left its row) is seen by it.
	for round := 0; ok && len(done) > 0 && round < followRounds; round++ {
		refs := make([]string, 0, len(done))
		for _, r := range done {
			if r.Ref != "" && r.Event != eventResync && !slices.Contains(refs, r.Ref) {
				refs = append(refs, r.Ref)
			}
		}
		if len(refs) == 0 {
			break
		}
		var next []int64
		err := h.outboxSession(ctx, nil).
			Where("ref IN ? AND (claimed_at IS NULL OR claimed_at < ?)", refs, time.Now().UTC().Add(-o.cfg.ClaimTTL)).
			Order("id").Limit(limit).Pluck("id", &next).Error
		if err != nil || len(next) == 0 {
			break
		}
		done, ok = h.claimAndPublish(ctx, next)
	}
	// Another batch at once only after progress: a full batch refused
	// (waiting for versions another process holds) waits for the next tick.
	return ok && full && progress
}

// followRounds bounds the rounds of a drain that follow the rows committed
// during it (drain).
const followRounds = 4

// claimAndPublish claims the rows cand (those not claimed by another
// process), publishes them (drainRows), deletes those done with and gives
// the others back. It returns the rows published or dropped, and false
// when the database or the publisher failed.
func (h *Hook) claimAndPublish(ctx context.Context, cand []int64) (published []outboxRow, ok bool) {
	o := h.outbox
	now := time.Now().UTC()
	expired := now.Add(-o.cfg.ClaimTTL)
	// Claim: one UPDATE whose WHERE is re-checked per row under the row's
	// write lock (PostgreSQL, MySQL) or the database lock (SQLite), so two
	// processes never both claim a row. The token is unique to this claim.
	// Claims only spare work: two processes publishing one row publish it
	// once (the publisher drops a version it has).
	token := fmt.Sprintf("%s#%d", o.owner, o.drains.Add(1))
	err := h.outboxSession(ctx, nil).
		Where("id IN ? AND (claimed_at IS NULL OR claimed_at < ?)", cand, expired).
		Updates(map[string]any{"claimed_by": token, "claimed_at": now}).Error
	if err != nil {
		if ctx.Err() == nil {
			h.dbFailed("claim outbox rows", err)
		}
		return nil, false
	}
	var rows []outboxRow
	err = h.outboxSession(ctx, nil).Where("id IN ? AND claimed_by = ?", cand, token).Order("id").Find(&rows).Error
	if err != nil {
		if ctx.Err() == nil {
			h.dbFailed("read claimed outbox rows", err)
		}
		return nil, false // the claims expire
	}
	h.dbOK()
	if len(rows) == 0 {
		return nil, true // all taken by another process
	}
	done, held, ok := h.drainRows(ctx, rows)
	bg := context.WithoutCancel(ctx)
	h.deleteRows(bg, nil, done)
	// Give the rest back rather than holding it until the claims expire,
	// but for the rows held: a failure other than an outage or a refusal
	// is tried again once its claim expires, without holding up the other
	// records.
	keep := make(map[int64]bool, len(done)+len(held))
	for _, id := range done {
		keep[id] = true
	}
	for _, r := range rows {
		if keep[r.ID] {
			published = append(published, r)
		}
	}
	for _, id := range held {
		keep[id] = true
	}
	rest := make([]int64, 0, len(rows))
	for _, r := range rows {
		if !keep[r.ID] {
			rest = append(rest, r.ID)
		}
	}
	if len(rest) > 0 {
		_ = h.outboxSession(bg, nil).Where("id IN ? AND claimed_by = ?", rest, token).
			Updates(map[string]any{"claimed_by": "", "claimed_at": nil}).Error
	}
	return published, ok
}

// drainRows publishes claimed rows: each record's rows in version order,
// stopping at the first that cannot be published (the later ones would be
// refused as out of order); resync rows on their own. It returns the rows
// done with (published, or never publishable), the rows to leave claimed
// (from a failure other than an outage or a refusal on, per record), and
// false when the publisher is down.
func (h *Hook) drainRows(ctx context.Context, rows []outboxRow) (done, held []int64, ok bool) {
	groups := map[string][]*outboxRow{}
	var order []string
	for i := range rows {
		r := &rows[i]
		k := r.Ref
		if r.Event == eventResync || k == "" {
			k = fmt.Sprint("#", r.ID)
		}
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	for _, k := range order {
		g := groups[k]
		slices.SortStableFunc(g, func(a, b *outboxRow) int { return cmp.Compare(a.Version, b.Version) })
	record:
		for i, r := range g {
			out := h.publishRow(ctx, nil, r, false)
			if out == refused {
				out = h.refusedRow(ctx, r)
			}
			switch out {
			case published, dropped:
				done = append(done, r.ID)
			case down:
				return done, held, false
			case failed:
				for _, r := range g[i:] {
					held = append(held, r.ID)
				}
				break record
			default:
				break record
			}
		}
	}
	return done, held, true
}

// refusedRow decides about a row the publisher refused as out of order: the
// version before it is not published. That version is normally in the
// outbox, published before this one in a later drain. If the row stays
// refused for GapAfter (counted from the first refusal, stored in
// refused_at) and no earlier version of the record is left in the outbox,
// the missing versions can never be published: the row is published with
// Gap, and subscribers are told to resync.
func (h *Hook) refusedRow(ctx context.Context, r *outboxRow) outcome {
	now := time.Now().UTC()
	if r.RefusedAt == nil {
		err := h.outboxSession(ctx, nil).Where("id = ? AND refused_at IS NULL", r.ID).
			Update("refused_at", now).Error
		if err != nil {
			h.dbFailed("mark a refused outbox row", err)
		}
		return refused
	}
	if now.Sub(*r.RefusedAt) < h.outbox.cfg.GapAfter {
		return refused
	}
	earlier, err := h.earlierWaiting(ctx, nil, r, time.Time{})
	if err != nil {
		h.dbFailed("look for earlier versions in the outbox", err)
		return refused
	}
	if earlier {
		return refused
	}
	// An earlier version published (and its row deleted) since the first
	// try needs no gap.
	if out := h.publishRow(ctx, nil, r, false); out != refused {
		return out
	}
	h.log.Warn("gormhook: publishing a record version whose predecessors can never be published; subscribers resync",
		"collection", r.Collection, "id", r.RecordID, "version", r.Version, "tenant", r.Tenant)
	return h.publishRow(ctx, nil, r, true)
}
