package redisbroker

import (
	"testing"

	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/brokertest"
)

// TestConformance runs the root's Broker conformance suite: two brokers on
// one Redis, a fresh prefix per subtest.
func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, cfg realtime.MemoryBufferConfig) (a, b realtime.Broker) {
		c := newClient(t)
		rc := Config{Prefix: testPrefix(t, c), Size: cfg.Size, MaxAge: cfg.MaxAge}
		ba, bb := newBroker(t, c, rc), newBroker(t, newClient(t), rc)
		if cfg.Now != nil {
			ba.now, bb.now = cfg.Now, cfg.Now
		}
		return ba, bb
	})
}
