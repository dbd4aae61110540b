package realtime

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dialStalled opens a raw TCP connection with a small receive buffer that
// sends req and never reads: once the server has written a few MiB to it,
// every write to it blocks.
func dialStalled(t *testing.T, addr, req string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		_ = rc.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return err
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	return nc
}

// TestStalledPeersDoNotHoldUpOthers: peers that stop reading (more of them
// than there are writers) must not delay delivery to a subscriber that
// reads: the writer pool starts extra workers while every worker is blocked
// in a write. WriteTimeout is far longer than the test, so without them the
// reader would wait for it. The same with one writer writing at a time
// (WritersAtOnce): a worker blocked in a write no longer counts against it.
func TestStalledPeersDoNotHoldUpOthers(t *testing.T) {
	for _, atOnce := range []int{0, 1} {
		t.Run(fmt.Sprintf("atOnce=%d", atOnce), func(t *testing.T) { testStalledPeers(t, atOnce) })
	}
}

func testStalledPeers(t *testing.T, atOnce int) {
	const stalled = 4
	pad := strings.Repeat("x", 64<<10)
	const events = 300 // ~19 MiB to each peer: far more than its socket buffers

	t.Run("sse", func(t *testing.T) {
		rt, srv := newTestServer(t, Config{Writers: 2, WritersAtOnce: atOnce, QueueSize: 1000, WriteTimeout: 10 * time.Minute})
		tok := userToken(t, "u1")
		addr := srv.Listener.Addr().String()
		for range stalled {
			dialStalled(t, addr, fmt.Sprintf("GET /api/v1/posts/42/subscribe HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", addr, tok))
		}
		waitFor(t, "the stalled subscribers", func() bool { return rt.Subscribers() == stalled })
		s := openStream(t, srv.Client(), recordURL(srv, "42"), tok, nil)
		defer s.close()
		waitFor(t, "the reader", func() bool { return rt.Subscribers() == stalled+1 })
		lr := &lineReader{br: bufio.NewReaderSize(s.resp.Body, 256<<10)}
		for n := range events {
			data, _ := json.Marshal(map[string]any{"id": "42", "n": n, "pad": pad})
			etag, err := rt.Publish(context.Background(), Publication{Collection: "posts", ID: "42", Event: EventChanged, Data: data})
			if err != nil {
				t.Fatal(err)
			}
			guard := timeGuard(s.resp.Body)
			f, err := lr.next(false)
			guard.Stop()
			if err != nil || f.ID != etag {
				t.Fatalf("event %d: got %q (%v), want %s", n, f.ID, err, etag)
			}
		}
		if got := rt.Subscribers(); got != stalled+1 {
			t.Fatalf("subscribers: %d, want the stalled ones still connected", got)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		rt, srv := newTestServer(t, Config{Writers: 2, WritersAtOnce: atOnce, WSSendQueue: 1000, WriteTimeout: 10 * time.Minute})
		tok := userToken(t, "u1")
		addr := srv.Listener.Addr().String()
		for range stalled {
			dialStalled(t, addr, "GET /api/v1/ws HTTP/1.1\r\nHost: "+addr+
				"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer "+tok+"\r\n\r\n")
		}
		c, _ := connectWS(t, srv, tok)
		defer c.Close()
		waitFor(t, "every connection", func() bool { _, n, _ := rt.UserPresence(context.Background(), "", "u1"); return n == stalled+1 })
		for n := range events {
			res, err := rt.Notify(context.Background(), Notification{Event: "big", Data: map[string]any{"n": n, "pad": pad}})
			if err != nil || res.Delivered != stalled+1 {
				t.Fatalf("push %d: %+v %v", n, res, err)
			}
			f := expectType(t, c, "message")
			var d struct{ N int }
			if err := json.Unmarshal(f.Data, &d); err != nil || d.N != n {
				t.Fatalf("push %d: got %s (%v)", n, f.Data, err)
			}
		}
		if _, n, _ := rt.UserPresence(context.Background(), "", "u1"); n != stalled+1 {
			t.Fatalf("connections: %d, want the stalled ones still open", n)
		}
	})
}

// TestWritersAtOnceDefault: a node with a Broker leaves one P to the
// network (at least one writer writes); a single node lets every writer
// write; an explicit limit above Writers is Writers.
func TestWritersAtOnceDefault(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	for _, tc := range []struct {
		name string
		cfg  Config
		want int
	}{
		{"single node", Config{JWTSecret: testSecret}, 4 * procs},
		{"with a broker", Config{JWTSecret: testSecret, Broker: NewMemoryBroker(MemoryBufferConfig{}).Node()}, max(1, procs-1)},
		{"explicit", Config{JWTSecret: testSecret, Writers: 8, WritersAtOnce: 3}, 3},
		{"above Writers", Config{JWTSecret: testSecret, Writers: 2, WritersAtOnce: 5}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.cfg.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			if c.WritersAtOnce != tc.want {
				t.Errorf("WritersAtOnce %d, want %d", c.WritersAtOnce, tc.want)
			}
		})
	}
}

// TestWritersAtOnceLimit: with one worker writing, a second may not start
// under a limit of one; it may while a connection's queue is more than
// half full, and once the writer has been blocked for stallAfter.
func TestWritersAtOnceLimit(t *testing.T) {
	w := newWriterPool(2, 1, 0)
	defer w.close()
	limited := func() bool { // press takes the pool's lock: checks take it each
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.limitedLocked()
	}
	if limited() {
		t.Fatal("limited with no worker writing")
	}
	w.busy[0].since.Store(w.now())
	if !limited() {
		t.Fatal("a second worker may write beside the first under a limit of one")
	}
	w.press(1)
	if limited() {
		t.Error("still limited while a queue is more than half full")
	}
	w.press(-1)
	if !limited() {
		t.Error("not limited once the queue was taken")
	}
	w.busy[0].since.Store(w.now() - int64(stallAfter) - 1)
	if limited() {
		t.Error("a worker blocked for stallAfter still counts against the limit")
	}
	w.busy[0].since.Store(0)
}

// TestConnPressure: a conn whose queue passes half its bound presses its
// pool once, until the queue is taken or dropped.
func TestConnPressure(t *testing.T) {
	w := newWriterPool(1, 1, 0)
	defer w.close()
	c := newConn(nopTransport{}, w, 4, true)
	c.ready = true
	ev := &Event{Type: "x"}
	c.mu.Lock()
	for i := range 3 {
		c.pushLocked(out{ev: ev})
		if want := int64(min(max(i-1, 0), 1)); w.pressed.Load() != want {
			t.Fatalf("after %d frames of 4: pressed %d, want %d", i+1, w.pressed.Load(), want)
		}
	}
	c.mu.Unlock()
	c.take()
	if w.pressed.Load() != 0 {
		t.Fatalf("after take: pressed %d", w.pressed.Load())
	}
	c.mu.Lock()
	for range 3 {
		c.pushLocked(out{ev: ev})
	}
	c.closeLocked(nil)
	c.mu.Unlock()
	if w.pressed.Load() != 0 {
		t.Fatalf("after close: pressed %d", w.pressed.Load())
	}
}

type nopTransport struct{}

func (nopTransport) write(*conn, []out, bool, bool) error { return nil }
func (nopTransport) overflow(c *conn)                     { c.closeLocked(nil) }
func (nopTransport) closed(*conn)                         {}
