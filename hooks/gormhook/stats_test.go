package gormhook_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/hooks/gormhook"
)

// TestOutboxBacklogStats: commits while the publisher is down leave a
// backlog the drainer counts (Stats, StatsSource) and logs once at Warn;
// once the publisher is back and the drainer published it, it is 0 again.
func TestOutboxBacklogStats(t *testing.T) {
	db := openFile(t, filepath.Join(t.TempDir(), "db.sqlite"))
	pub := downPub()
	var logs logBuffer
	h := useOutbox(t, db, pub, fastOutbox, gormhook.WithLogger(newLogger(&logs)))
	if s := h.Stats(); s != (realtime.OutboxStats{Outboxes: 1}) {
		t.Fatalf("stats %+v before any write", s)
	}
	for _, p := range posts("a", "b", "c") {
		mustNoErr(t, db.Create(&p).Error)
	}
	waitUntil(t, "the backlog counted", func() bool { return h.Stats().Backlog == 3 })
	var s realtime.Stats
	h.ReportStats(&s)
	if s.Outbox != (realtime.OutboxStats{Outboxes: 1, Backlog: 3}) {
		t.Errorf("reported %+v", s.Outbox)
	}
	pub.down.Store(false)
	waitUntil(t, "the backlog published", func() bool { return h.Stats().Backlog == 0 })
	waitUntil(t, "the backlog's end logged", func() bool { return strings.Contains(logs.String(), "outbox backlog published") })
	l := logs.String()
	if strings.Count(l, "gormhook: outbox backlog: committed events not yet published") != 1 ||
		!strings.Contains(l, "backlog=") || !strings.Contains(l, "gormhook: outbox backlog published") {
		t.Errorf("logs:\n%s", l)
	}
	var none *gormhook.Hook
	if s := none.Stats(); s != (realtime.OutboxStats{}) {
		t.Errorf("a nil hook reports %+v", s)
	}
}

// waitUntil polls cond until it holds (10 s at most).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
