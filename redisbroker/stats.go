package redisbroker

import (
	"sync/atomic"
	"time"

	"github.com/ginrealtime/realtime"
)

// Counters for realtime.Plugin.Stats: a Queue's requests and a Broker's
// catch-ups, each counted once per event (a batch's outcome, a link that
// came back), read with atomic loads.

// queueCounts are a Queue's outcomes.
type queueCounts struct {
	consumed, retried, deadLettered atomic.Uint64
}

var _ realtime.StatsSource = (*Queue)(nil)

// Stats returns the queue's counts since NewQueue: requests consumed
// (delivered and acknowledged), left to be retried after a passing
// failure, and dead-lettered. Safe for concurrent use.
func (q *Queue) Stats() realtime.QueueStats {
	return realtime.QueueStats{
		Queues:       1,
		Consumed:     q.counts.consumed.Load(),
		Retried:      q.counts.retried.Load(),
		DeadLettered: q.counts.deadLettered.Load(),
	}
}

// ReportStats implements realtime.StatsSource: it adds the queue's counts
// to s.Queue (rt.AddStatsSource(q) makes rt.Stats report them).
func (q *Queue) ReportStats(s *realtime.Stats) {
	st := q.Stats()
	s.Queue.Queues += st.Queues
	s.Queue.Consumed += st.Consumed
	s.Queue.Retried += st.Retried
	s.Queue.DeadLettered += st.DeadLettered
}

// linkCounts are the Pub/Sub link's catch-ups (under Broker.mu).
type linkCounts struct {
	downSince time.Time // the link's last loss (zero: up since it was last caught up)
	catchUps  atomic.Uint64
	lag       atomic.Int64 // the last catch-up's lag, nanoseconds
}

// down records the link's loss (Broker.mu held).
func (c *linkCounts) down(now time.Time) {
	if c.downSince.IsZero() {
		c.downSince = now
	}
}

// caughtUp records the end of a catch-up after a loss (Broker.mu held):
// every watched stream is read back.
func (c *linkCounts) caughtUp(now time.Time) {
	if c.downSince.IsZero() {
		return
	}
	c.lag.Store(int64(now.Sub(c.downSince)))
	c.catchUps.Add(1)
	c.downSince = time.Time{}
}

var _ realtime.StatsSource = (*Broker)(nil)

// ReportStats implements realtime.StatsSource (the plugin reads it from
// its Broker): the catch-ups after the link came back, and the last one's
// lag, from the link's loss to every watched stream read back.
func (b *Broker) ReportStats(s *realtime.Stats) {
	s.Broker.CatchUps += b.counts.catchUps.Load()
	s.Broker.CatchUpLag = max(s.Broker.CatchUpLag, time.Duration(b.counts.lag.Load()))
}
