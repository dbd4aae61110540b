package realtime

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// BenchmarkPushDeliver measures a node's part of a push to its WebSockets:
// finding the targets, queueing the frame to each, counting them and their
// users (pushes.deliver, which a push from another node runs on the
// broker's delivery goroutine before its count is answered). The sockets'
// readers run meanwhile, as they would.
//
//	go test -run '^$' -bench PushDeliver .
func BenchmarkPushDeliver(b *testing.B) {
	for _, n := range []int{1000} {
		b.Run(fmt.Sprintf("sockets=%d", n), func(b *testing.B) {
			p, srv := newTestServer(b, Config{})
			for i := range n {
				c, _, _ := dialWS(b, srv, userToken(b, fmt.Sprintf("u%d", i)), true, nil)
				if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","channels":["orders.*"]}`)); err != nil {
					b.Fatal(err)
				}
				for {
					_, m, err := c.ReadMessage()
					if err != nil {
						b.Fatal(err)
					}
					if strings.Contains(string(m), `"subscribed"`) {
						break
					}
				}
				go func() {
					for {
						if _, _, err := c.ReadMessage(); err != nil {
							return
						}
					}
				}()
			}
			m := &nodeMsg{Type: "notify", Origin: p.node.id, Envelope: "e", Tenant: DefaultTenant,
				Channel: "orders.new", Event: "x", Data: []byte(`{"i":1}`),
				Frame: []byte(`{"type":"message","envelopeId":"e","channel":"orders.new","event":"x","data":{"i":1}}`)}
			b.ResetTimer()
			for range b.N {
				p.pushes.deliver(m)
			}
			b.StopTimer()
			time.Sleep(100 * time.Millisecond)
		})
	}
}
