package realtime

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Resyncs caused by the broker: each gap is counted (BrokerStats.Gaps,
// ResyncStats.Gap per subscription) and logged at Warn, at most
// gapLogBurst lines per second; the lines held back are counted in the
// next one's "suppressed".

// startsWithResync reports whether a subscription's first frames tell it
// to resync (its resume point was not in the buffer).
func startsWithResync(st start) bool {
	for _, o := range st.first {
		if o.ev != nil && o.ev.Type == EventResync {
			return true
		}
	}
	return false
}

// gapped counts and logs a gap of key that resynced n subscriptions.
func (rs *recordStreams) gapped(key StreamKey, n int) {
	rs.stats.gap()
	rs.stats.resync(resyncGap, n)
	if n == 0 {
		return
	}
	if rs.stats == nil {
		return
	}
	if ok, suppressed := rs.stats.gapLog.allow(time.Now()); ok {
		rs.log.LogAttrs(context.Background(), slog.LevelWarn, "realtime: broker gap: subscribers resync",
			slog.String("tenant", key.Tenant), slog.String("collection", key.Collection), slog.String("id", key.ID),
			slog.Int("subscriptions", n), slog.Int("suppressed", suppressed))
	}
}

// gapLogBurst is the most gap lines logged per second.
const gapLogBurst = 10

// logLimiter lets burst lines a second through and counts the others.
type logLimiter struct {
	mu         sync.Mutex
	second     int64
	n          int
	suppressed int
}

// allow reports whether a line may be logged at now, and how many were
// held back since the last one logged.
func (l *logLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := now.Unix(); s != l.second {
		l.second, l.n = s, 0
	}
	if l.n >= gapLogBurst {
		l.suppressed++
		return false, 0
	}
	l.n++
	sup := l.suppressed
	l.suppressed = 0
	return true, sup
}
