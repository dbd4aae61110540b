package redisbroker

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkAppendDeliver: one broker appends, another (its own client)
// delivers; reports deliveries per second, end to end.
func BenchmarkAppendDeliver(b *testing.B) {
	c := newClient(b)
	cfg := Config{Prefix: testPrefix(b, c)}
	pub := newBroker(b, c, cfg)
	sub := newBroker(b, newClient(b), cfg)
	startBroker(b, pub)
	r := startBroker(b, sub)
	key := recKey("bench")
	if err := sub.Watch(bctx, key); err != nil {
		b.Fatal(err)
	}
	ev := bufEvent(key, "e", time.Now())
	b.ResetTimer()
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		ev.ETag = fmt.Sprintf(`"e%d"`, i)
		if _, err := pub.Append(bctx, key, ev); err != nil {
			b.Fatal(err)
		}
	}
	r.waitDeliveries(b, key, b.N)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
}
