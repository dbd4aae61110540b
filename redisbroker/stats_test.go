package redisbroker

import (
	"fmt"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
)

// TestQueueStats drives each counter of Queue.Stats with real requests:
// delivered, failed once then delivered, malformed.
func TestQueueStats(t *testing.T) {
	c := newClient(t)
	cfg := queueCfg(t, c)
	f := newFakeTarget()
	f.fail = func(event string, call int) error {
		if event == "flaky" && call == 1 {
			return fmt.Errorf("fake: %w", realtime.ErrUnavailable)
		}
		return nil
	}
	q := startQueue(t, c, f, cfg)
	if s := q.Stats(); s != (realtime.QueueStats{Queues: 1}) {
		t.Fatalf("stats %+v before any request", s)
	}
	enqueue(t, c, cfg.Stream, `{"type":"notify","event":"fine"}`)
	enqueue(t, c, cfg.Stream, `{"type":"notify","event":"flaky"}`)
	enqueue(t, c, cfg.Stream, `{"type":"unknown"}`)
	eventually(t, "every request processed", func() bool { return q.Stats().Consumed == 2 })
	settled(t, c, cfg)
	if s := q.Stats(); s != (realtime.QueueStats{Queues: 1, Consumed: 2, Retried: 1, DeadLettered: 1}) {
		t.Errorf("stats %+v, want 2 consumed, 1 retried, 1 dead-lettered", s)
	}
	var s realtime.Stats
	q.ReportStats(&s)
	q.ReportStats(&s)
	if s.Queue.Queues != 2 || s.Queue.Consumed != 4 {
		t.Errorf("two reports %+v, want them summed", s.Queue)
	}
}

// TestBrokerCatchUpStats: a cut of the link is one catch-up, whose lag
// covers the cut.
func TestBrokerCatchUpStats(t *testing.T) {
	pc, p := proxied(t)
	cfg := fastProbe
	cfg.Prefix = testPrefix(t, newClient(t))
	b := newBroker(t, pc, cfg)
	r := startBroker(t, b)
	key := recKey("k")
	if err := b.Watch(bctx, key); err != nil {
		t.Fatal(err)
	}
	var s realtime.Stats
	b.ReportStats(&s)
	if s.Broker.CatchUps != 0 || s.Broker.CatchUpLag != 0 {
		t.Fatalf("catch-ups %+v before any outage", s.Broker)
	}
	p.cut()
	r.waitHealth(t, 0, false)
	const cut = 300 * time.Millisecond
	time.Sleep(cut)
	p.restore()
	r.waitHealth(t, 1, true)
	s = realtime.Stats{}
	b.ReportStats(&s)
	if s.Broker.CatchUps != 1 || s.Broker.CatchUpLag < cut {
		t.Errorf("broker stats %+v, want one catch-up lagging at least %v", s.Broker, cut)
	}
}
