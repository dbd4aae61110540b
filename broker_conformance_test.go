package realtime_test

import (
	"testing"

	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/brokertest"
)

// TestMemoryBrokerConformance runs the Broker conformance suite against
// the in-process MemoryBroker: two node handles of one engine per subtest.
func TestMemoryBrokerConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, cfg realtime.MemoryBufferConfig) (a, b realtime.Broker) {
		m := realtime.NewMemoryBroker(cfg)
		return m.Node(), m.Node()
	})
}
