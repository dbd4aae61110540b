package redisbroker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/redis/go-redis/v9"
)

// countingTarget counts what reaches next (nil: nothing behind it).
type countingTarget struct {
	next Target
	n    atomic.Int64
	ch   chan struct{} // signalled at each delivery
}

func (c *countingTarget) done() {
	c.n.Add(1)
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

func (c *countingTarget) Publish(ctx context.Context, p realtime.Publication) (string, error) {
	if c.next != nil {
		if _, err := c.next.Publish(ctx, p); err != nil {
			return "", err
		}
	}
	c.done()
	return "", nil
}

func (c *countingTarget) Notify(ctx context.Context, n realtime.Notification) (realtime.NotifyResult, error) {
	if c.next != nil {
		if _, err := c.next.Notify(ctx, n); err != nil {
			return realtime.NotifyResult{}, err
		}
	}
	c.done()
	return realtime.NotifyResult{}, nil
}

// BenchmarkQueueIngest: a producer XADDs requests (pipelined, half record
// events on 100 records, half pushes), a Queue with the default Batch and
// Concurrency consumes them; reports requests/s end to end (from the first
// XADD to the last delivery). Targets: a fake that only counts; a
// *realtime.Plugin in memory with no subscribers; the same with this
// package's Broker (every record event appended to Redis and fanned out
// through it).
func BenchmarkQueueIngest(b *testing.B) {
	b.Run("target=fake", func(b *testing.B) { benchQueue(b, func(b *testing.B, c *redis.Client) Target { return nil }) })
	b.Run("target=plugin", func(b *testing.B) {
		benchQueue(b, func(b *testing.B, c *redis.Client) Target { return benchPlugin(b, nil) })
	})
	b.Run("target=plugin+broker", func(b *testing.B) {
		benchQueue(b, func(b *testing.B, c *redis.Client) Target {
			return benchPlugin(b, newBroker(b, c, Config{Prefix: testPrefix(b, c)}))
		})
	})
}

func benchPlugin(b *testing.B, br realtime.Broker) *realtime.Plugin {
	b.Helper()
	cfg := realtime.Config{JWTSecret: []byte("bench-secret-bench-secret-bench!"), Logger: quietLogger}
	if br != nil {
		cfg.Broker = br
	}
	p, err := realtime.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

func benchQueue(b *testing.B, target func(*testing.B, *redis.Client) Target) {
	producer := newClient(b)
	consumer := newClient(b)
	cfg := queueCfg(b, producer)
	cfg.RetryAfter = 30 * time.Second
	ct := &countingTarget{next: target(b, consumer), ch: make(chan struct{}, 1)}
	startQueue(b, consumer, ct, cfg)
	reqs := make([]string, 200)
	for i := range reqs {
		if i%2 == 0 {
			reqs[i] = fmt.Sprintf(`{"type":"publish","tenant":"t1","collection":"posts","id":"%d","event":"changed","data":{"id":"%d","title":"hello"}}`, i/2, i/2)
		} else {
			reqs[i] = `{"type":"notify","tenant":"t1","channel":"orders.new","event":"order_created","data":{"order_id":123}}`
		}
	}
	b.ResetTimer()
	start := time.Now()
	const chunk = 1000
	for sent := 0; sent < b.N; sent += chunk {
		p := producer.Pipeline()
		for i := sent; i < min(sent+chunk, b.N); i++ {
			p.XAdd(bctx, &redis.XAddArgs{Stream: cfg.Stream, Values: []any{"request", reqs[i%len(reqs)]}})
		}
		if _, err := p.Exec(bctx); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.After(5 * time.Minute)
	for ct.n.Load() < int64(b.N) {
		select {
		case <-ct.ch:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			b.Fatalf("%d of %d delivered", ct.n.Load(), b.N)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "requests/s")
}
