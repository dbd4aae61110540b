package realtime

import (
	"bufio"
	"context"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// TestWSIdleMemory measures the server-side memory of idle WebSockets
// (heap in use + goroutine stacks, after GC, per connection), with raw TCP
// clients whose own cost is small. It runs only with RT_WS_MEM=<n>:
//
//	RT_WS_MEM=2000 go test -run TestWSIdleMemory -v .
func TestWSIdleMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("RT_WS_MEM"))
	if n <= 0 {
		t.Skip("set RT_WS_MEM=<connections> to measure")
	}
	for _, q := range []int{0, 32} {
		rt, srv := newTestServer(t, Config{WSSendQueue: q})
		addr := strings.TrimPrefix(srv.URL, "http://")
		tok := userToken(t, "u")
		rt.cfg.WSMaxConnsPerUser = n + 20
		var stack uint64
		measure := func() uint64 {
			runtime.GC()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			stack = ms.StackInuse
			return ms.HeapInuse + ms.StackInuse
		}
		conns := make([]net.Conn, 0, n)
		dialOne := func() net.Conn {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			req := "GET /api/v1/ws HTTP/1.1\r\nHost: " + addr +
				"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer " + tok + "\r\n\r\n"
			nc.Write([]byte(req))
			br := bufio.NewReaderSize(nc, 16)
			for { // the 101 head
				l, err := br.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				if l == "\r\n" {
					break
				}
			}
			return nc
		}
		// warm up pools and stacks
		for range 10 {
			conns = append(conns, dialOne())
		}
		waitFor(t, "warm-up connections", func() bool { _, c, _ := rt.UserPresence(context.Background(), "", "u"); return c == 10 })
		before := measure()
		stackBefore := stack
		for range n {
			conns = append(conns, dialOne())
		}
		waitFor(t, "all connections", func() bool { _, c, _ := rt.UserPresence(context.Background(), "", "u"); return c == n+10 })
		after := measure()
		stackPer := float64(stack-stackBefore) / float64(n)
		// The raw clients' sockets are in the same process: measure them alone.
		var cl []net.Conn
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				cl = append(cl, c)
			}
		}()
		b2 := measure()
		var dl []net.Conn
		for range n {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			dl = append(dl, c)
		}
		a2 := measure()
		ln.Close()
		for _, c := range dl {
			c.Close()
		}
		clientCost := float64(a2-b2) / float64(n) / 2 // one of the two ends, roughly
		per := float64(after-before)/float64(n) - clientCost
		t.Logf("WSSendQueue=%d (0 = default 256): %.1f KiB per idle connection (server side, Go heap + stacks; raw client socket ≈ %.1f KiB subtracted); of which stacks %.1f KiB; goroutines %d",
			q, per/1024, clientCost/1024, stackPer/1024, runtime.NumGoroutine())
		for _, c := range conns {
			c.Close()
		}
		waitFor(t, "connections gone", func() bool { _, c, _ := rt.UserPresence(context.Background(), "", "u"); return c == 0 })
	}
}
