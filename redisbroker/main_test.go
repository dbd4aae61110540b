package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/brokertest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait: a deadline for a broken implementation,
// never a timing assertion.
const waitTimeout = 30 * time.Second

// redisOptions returns the options of the test Redis: REDIS_URL, else
// 127.0.0.1:6379.
func redisOptions(t testing.TB) *redis.Options {
	t.Helper()
	if u := os.Getenv("REDIS_URL"); u != "" {
		opt, err := redis.ParseURL(u)
		if err != nil {
			t.Fatalf("REDIS_URL: %v", err)
		}
		return opt
	}
	return &redis.Options{Addr: "127.0.0.1:6379"}
}

// newClient returns a client of the test Redis (closed when t ends); it
// skips t when Redis is unreachable, or fails it when CI=true.
func newClient(t testing.TB, change ...func(*redis.Options)) *redis.Client {
	t.Helper()
	opt := redisOptions(t)
	for _, f := range change {
		f(opt)
	}
	c := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis at %s unreachable: %v", opt.Addr, err)
		}
		t.Skipf("redis at %s unreachable: %v", opt.Addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

var prefixes atomic.Int64

// testPrefix returns a Prefix no other test uses, and deletes its keys
// when t ends.
func testPrefix(t testing.TB, c redis.UniversalClient) string {
	t.Helper()
	p := fmt.Sprintf("rbtest:%d:%d:", time.Now().UnixNano(), prefixes.Add(1))
	t.Cleanup(func() {
		ctx := context.Background()
		iter := c.Scan(ctx, 0, p+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return p
}

// quietLogger drops the broker's logs (outages are expected in tests).
var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// newBroker returns a broker on c with cfg (Logger quiet unless set).
func newBroker(t testing.TB, c redis.UniversalClient, cfg Config) *Broker {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger
	}
	b, err := New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startBroker starts b with a new recorder and stops it when t ends.
func startBroker(t testing.TB, b *Broker) recorder {
	t.Helper()
	r := newRecorder()
	if err := b.Start(r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
		for _, p := range r.problems() {
			t.Errorf("node contract: %s", p)
		}
	})
	return r
}

// recorder is the conformance suite's recording Node (it also checks the
// Node contract), with the shorthands these tests use.
type recorder struct{ *brokertest.Recorder }

func newRecorder() recorder { return recorder{brokertest.NewRecorder()} }

func (r recorder) problems() []string                         { return r.Problems() }
func (r recorder) of(key realtime.StreamKey) []realtime.Entry { return r.DeliveriesOf(key) }
func (r recorder) healthReports() []error                     { return r.HealthReports() }

func (r recorder) gapsOf(key realtime.StreamKey) int {
	n := 0
	for _, k := range r.Gaps() {
		if k == key {
			n++
		}
	}
	return n
}

func (r recorder) messagesOf(topic string) []string {
	var out []string
	for _, m := range r.MessagesOf(topic) {
		out = append(out, string(m))
	}
	return out
}

func (r recorder) waitDeliveries(t testing.TB, key realtime.StreamKey, n int) []realtime.Entry {
	t.Helper()
	return r.WaitDeliveries(t, key, n)
}

// lastSeq is the position of key's last delivery (0 for none).
func (r recorder) lastSeq(key realtime.StreamKey) uint64 {
	d := r.DeliveriesOf(key)
	if len(d) == 0 {
		return 0
	}
	return d[len(d)-1].Seq
}

// waitHealth waits for a Health report, from the from-th on, matching up
// (nil) or down.
func (r recorder) waitHealth(t testing.TB, from int, up bool) {
	t.Helper()
	eventually(t, fmt.Sprintf("Health(up=%v)", up), func() bool {
		hs := r.HealthReports()
		for _, err := range hs[min(from, len(hs)):] {
			if (err == nil) == up {
				return true
			}
		}
		return false
	})
}

// eventually polls cond until it holds.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxy is a TCP proxy to Redis that can cut every connection (and refuse
// new ones) or stall the open ones (keep them open, forward nothing).
type proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[*proxyConn]struct{}
	refuse bool
	wg     sync.WaitGroup
}

type proxyConn struct {
	a, b    net.Conn
	stalled chan struct{} // closed: stop forwarding
	once    sync.Once
	closed  chan struct{}
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		close(c.closed)
		_ = c.a.Close()
		_ = c.b.Close()
	})
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: make(map[*proxyConn]struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		a, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		p.mu.Unlock()
		if refuse {
			_ = a.Close()
			continue
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = a.Close()
			continue
		}
		c := &proxyConn{a: a, b: b, stalled: make(chan struct{}), closed: make(chan struct{})}
		p.mu.Lock()
		if p.refuse {
			p.mu.Unlock()
			c.close()
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(c, a, b)
		go p.pipe(c, b, a)
	}
}

func (p *proxy) pipe(c *proxyConn, from, to net.Conn) {
	defer p.wg.Done()
	defer func() {
		c.close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			select {
			case <-c.stalled:
				<-c.closed // hold the bytes until the connection is closed
				return
			default:
			}
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cut closes every connection and refuses new ones until restore.
func (p *proxy) cut() {
	p.mu.Lock()
	p.refuse = true
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.refuse = false
	p.mu.Unlock()
}

// stall stops forwarding on every open connection (kept open); new
// connections work.
func (p *proxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		select {
		case <-c.stalled:
		default:
			close(c.stalled)
		}
	}
}

func (p *proxy) close() {
	_ = p.ln.Close()
	p.cut()
	p.wg.Wait()
}

// isUnavailable tells whether err is a broker's "unreachable" error.
func isUnavailable(err error) bool {
	return errors.Is(err, ErrUnavailable) && errors.Is(err, realtime.ErrUnavailable)
}
