package redisbroker

import (
	"fmt"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
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

// BenchmarkAppendRecordDeliver: one broker publishes record events with
// consecutive versions (AppendRecord: the record's and the collection's
// streams), another delivers the record's; reports deliveries per second,
// end to end.
func BenchmarkAppendRecordDeliver(b *testing.B) {
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
	b.ResetTimer()
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		ev := bufEvent(key, fmt.Sprint("e", i), time.Now())
		ev.Version = uint64(i + 1)
		if dup, err := pub.AppendRecord(bctx, ev, realtime.AppendInOrder); err != nil || dup {
			b.Fatal(dup, err)
		}
	}
	r.waitDeliveries(b, key, b.N)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
}
