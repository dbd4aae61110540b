package redisbroker

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/ginrealtime/realtime"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// BenchmarkNotifyAcrossNodes: pushes across two nodes sharing one Redis.
// Node B holds subs WebSockets (one user each) subscribed to one channel; a publisher on
// node A calls Notify on that channel (one at a time: "sequential"; or 8
// at once: "concurrent"), each call waiting for the nodes' delivery counts
// as PROTOCOL.md §7 answers them. It reports the Notify calls per second
// and the deliveries per second until the last push reached its last
// socket, and fails if a count is wrong or a push is lost.
//
//	go test -run '^$' -bench NotifyAcrossNodes -benchtime 2000x ./redisbroker/
func BenchmarkNotifyAcrossNodes(b *testing.B) {
	gin.SetMode(gin.ReleaseMode)
	for _, subs := range []int{1, 1000} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) { benchNotifyAcrossNodes(b, subs) })
	}
}

func benchNotifyAcrossNodes(b *testing.B, subs int) {
	secret := []byte("bench-secret-bench-secret-bench!")
	prefix := testPrefix(b, newClient(b))
	node := func() (*realtime.Plugin, *httptest.Server) { return pluginNode(b, secret, prefix) }
	a, _ := node()
	_, srvB := node()

	var got atomic.Int64
	var wg sync.WaitGroup
	conns := make([]*websocket.Conn, subs)
	for i := range conns {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": fmt.Sprintf("u%d", i), "exp": time.Now().Add(time.Hour).Unix(),
		}).SignedString(secret)
		if err != nil {
			b.Fatal(err)
		}
		url := "ws" + strings.TrimPrefix(srvB.URL, "http") + "/api/ws?token=" + tok
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","channels":["orders.new"]}`)); err != nil {
			b.Fatal(err)
		}
		for {
			_, m, err := c.ReadMessage()
			if err != nil {
				b.Fatal(err)
			}
			if strings.HasPrefix(string(m), `{"type":"subscribed"`) {
				break
			}
		}
		wg.Go(func() {
			for {
				_, m, err := c.ReadMessage()
				if err != nil {
					return
				}
				if strings.HasPrefix(string(m), `{"type":"message"`) {
					got.Add(1)
				}
			}
		})
	}
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	})

	notify := func() {
		res, err := a.Notify(bctx, realtime.Notification{Channel: "orders.new", Event: "order_created", Data: map[string]int{"order_id": 123}})
		if err != nil {
			b.Error(err)
			return
		}
		if res.Delivered != subs || res.Users != subs {
			b.Errorf("Notify answered delivered %d users %d, want %d each", res.Delivered, res.Users, subs)
		}
	}
	for _, mode := range []struct {
		name       string
		publishers int
	}{{"sequential", 1}, {"concurrent", 8}} {
		b.Run(mode.name, func(b *testing.B) {
			got.Store(0)
			var next atomic.Int64
			start := time.Now()
			var pubs sync.WaitGroup
			for range mode.publishers {
				pubs.Go(func() {
					for next.Add(1) <= int64(b.N) {
						notify()
					}
				})
			}
			pubs.Wait()
			published := time.Since(start)
			want := int64(b.N) * int64(subs)
			deadline := time.Now().Add(time.Minute)
			for got.Load() < want && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if n := got.Load(); n != want {
				b.Fatalf("%d of %d pushes delivered", n, want)
			}
			b.ReportMetric(float64(b.N)/published.Seconds(), "notifies/s")
			b.ReportMetric(float64(want)/time.Since(start).Seconds(), "deliveries/s")
		})
	}
}
