package gormhook

import (
	"context"
	"time"

	"github.com/ginrealtime/realtime"
)

// The outbox's backlog: the rows committed more than Grace ago and not yet
// published. The drainer counts them after each tick's drains (one COUNT
// on a table that is normally near empty), so that Stats reads a number
// and runs no query; a backlog that stays after a drain is logged at Warn
// once, and its end at Info.

// countBacklog counts the backlog (drainer goroutine).
func (h *Hook) countBacklog(ctx context.Context) {
	o := h.outbox
	var n int64
	old := time.Now().UTC().Add(-o.cfg.Grace)
	if err := h.outboxSession(ctx, nil).Where("created_at < ?", old).Count(&n).Error; err != nil {
		if ctx.Err() == nil {
			h.dbFailed("count the outbox backlog", err)
		}
		return
	}
	was := o.backlog.Swap(n)
	switch {
	case n > 0 && was == 0:
		h.log.Warn("gormhook: outbox backlog: committed events not yet published", "backlog", n, "table", o.cfg.Table)
	case n == 0 && was > 0:
		h.log.Info("gormhook: outbox backlog published", "table", o.cfg.Table)
	}
}

var _ realtime.StatsSource = (*Hook)(nil)

// Stats returns the outbox's backlog as its drainer last counted it (once
// per Interval): the events committed more than Grace ago and not yet
// published. Zero for a hook not installed. Safe for concurrent use.
func (h *Hook) Stats() realtime.OutboxStats {
	if h == nil || h.outbox == nil {
		return realtime.OutboxStats{}
	}
	return realtime.OutboxStats{Outboxes: 1, Backlog: h.outbox.backlog.Load()}
}

// ReportStats implements realtime.StatsSource: it adds the backlog to
// s.Outbox (rt.AddStatsSource(hook) makes rt.Stats report it).
func (h *Hook) ReportStats(s *realtime.Stats) {
	st := h.Stats()
	s.Outbox.Outboxes += st.Outboxes
	s.Outbox.Backlog += st.Backlog
}
