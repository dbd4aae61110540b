package realtime

// Benchmarks of the hot paths. Run them with
//
//	go test -run '^$' -bench . -benchmem .
//
// BenchmarkPublish measures one publish delivered to every subscriber over
// real hijacked HTTP/1.1 connections (loopback, httptest server), so its
// ns/op is the end-to-end cost of a publish on this machine, readers
// included, and its allocs/op counts every allocation the process makes per
// publish: the publisher's, the writer pool's and the readers' (which
// allocate nothing). allocs/op and B/op staying flat from 1 to 1,000
// subscribers (window=1) is the "allocations per publish independent of the
// number of subscribers" property; window=128 shows the residue when the
// publisher runs ahead and subscriber queues grow. The process-level
// measurements (idle memory per connection, deliveries/s with separate client
// processes, latency) are in cmd/rtbench; results in BENCHMARKS.md.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
)

var benchSecret = []byte("bench-secret-0123456789abcdef")

// benchRecord is a typical record of ~120 bytes of JSON.
var benchRecord = json.RawMessage(`{"id":"1","title":"A benchmark post","body":"Lorem ipsum dolor sit amet, consectetur adipiscing elit.","private":false,"author":"u1"}`)

func benchToken(b *testing.B) string {
	b.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "bench", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(benchSecret)
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

// benchSub is one raw SSE client: it reads its connection and counts the
// frames it receives (every "\n\n"), discarding the bytes.
type benchSub struct {
	conn   net.Conn
	frames atomic.Int64
	want   atomic.Int64  // a waiter's target, 0 when none waits
	ready  chan struct{} // signalled when frames reaches want
	done   chan struct{}
}

func (s *benchSub) read(br *bufio.Reader) {
	defer close(s.done)
	buf := make([]byte, 32<<10)
	var prevLF bool
	for {
		n, err := br.Read(buf)
		if n > 0 {
			p := buf[:n]
			c := bytes.Count(p, []byte("\n\n"))
			if prevLF && p[0] == '\n' {
				c++
			}
			prevLF = p[n-1] == '\n'
			if c > 0 {
				total := s.frames.Add(int64(c))
				if w := s.want.Load(); w > 0 && total >= w && s.want.CompareAndSwap(w, 0) {
					select {
					case s.ready <- struct{}{}:
					default:
					}
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// benchSubscribe opens n raw subscriptions of url's record and waits until
// each has received its first frame (retry:).
func benchSubscribe(b *testing.B, addr, path string, n int) []*benchSub {
	b.Helper()
	subs := make([]*benchSub, 0, n)
	for range n {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", path, addr); err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReaderSize(conn, 4096)
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		status, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
			b.Fatalf("subscribe: %q %v", status, err)
		}
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			if l == "\r\n" {
				break
			}
		}
		_ = conn.SetReadDeadline(time.Time{})
		s := &benchSub{conn: conn, ready: make(chan struct{}, 1), done: make(chan struct{})}
		go s.read(br)
		subs = append(subs, s)
	}
	benchWait(b, subs, 1)
	return subs
}

// benchWait waits until every subscriber has received at least want frames;
// it returns the smallest count seen.
func benchWait(b *testing.B, subs []*benchSub, want int64) int64 {
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	low := int64(-1)
	for _, s := range subs {
		if s.frames.Load() < want {
			select { // a stale signal
			case <-s.ready:
			default:
			}
			s.want.Store(want)
			if s.frames.Load() < want { // else the reader may have missed want
				select {
				case <-s.ready:
				case <-s.done:
					b.Fatalf("subscriber disconnected after %d frames (want %d)", s.frames.Load(), want)
				case <-timeout.C:
					b.Fatalf("subscriber stuck at %d frames (want %d)", s.frames.Load(), want)
				}
			}
			s.want.Store(0)
		}
		if c := s.frames.Load(); low < 0 || c < low {
			low = c
		}
	}
	return low
}

// BenchmarkPublish publishes a changed event of one record to n subscribers
// of that record and waits for the readers to have received it. The
// publisher keeps at most window events ahead of the slowest reader, so no
// queue overflows (QueueSize 4096). With window=1 every publish is delivered
// before the next one (nothing to coalesce: ns/op is the fan-out time of one
// event); with window=128 the publisher runs ahead and writes coalesce.
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		for _, w := range []int64{1, 128} {
			b.Run(fmt.Sprintf("subs=%d/window=%d", n, w), func(b *testing.B) { benchPublish(b, n, w) })
		}
	}
}

func benchPublish(b *testing.B, n int, window int64) {
	gin.SetMode(gin.TestMode)
	rt, err := New(Config{JWTSecret: benchSecret})
	if err != nil {
		b.Fatal(err)
	}
	r := gin.New()
	rt.RegisterCollection(r.Group("/api/v1"), "posts")
	srv := httptest.NewServer(r)
	subs := benchSubscribe(b, srv.Listener.Addr().String(), "/api/v1/posts/1/subscribe?token="+benchToken(b), n)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Close(ctx); err != nil {
			b.Error(err)
		}
		for _, s := range subs {
			_ = s.conn.Close()
			<-s.done
		}
		srv.Close()
	}()
	ctx := context.Background()
	pub := Publication{Collection: "posts", ID: "1", Event: EventChanged, Data: benchRecord}
	var i, low int64 // events published; events every subscriber has received
	publish := func() {
		if i-low >= window {
			low = benchWait(b, subs, 1+i-window/2) - 1
		}
		if _, err := rt.Publish(ctx, pub); err != nil {
			b.Fatal(err)
		}
		i++
	}
	// Warm up (not measured): every subscriber's queue and the writers'
	// buffers get their working size, as in a running server.
	for range 2 * window {
		publish()
	}
	low = benchWait(b, subs, 1+i) - 1
	warm := i
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		publish()
	}
	b.StartTimer() // the drain is part of the cost
	benchWait(b, subs, 1+i)
	b.StopTimer()
	elapsed := time.Since(start)
	b.ReportMetric(float64(i-warm)*float64(n)/elapsed.Seconds(), "deliveries/s")
}

// BenchmarkPublishNoSubscribers is the publish path alone: event, ETag,
// buffers, hub lookup.
func BenchmarkPublishNoSubscribers(b *testing.B) {
	rt, err := New(Config{JWTSecret: benchSecret})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = rt.Close(context.Background()) }()
	ctx := context.Background()
	pub := Publication{Collection: "posts", ID: "1", Event: EventChanged, Data: benchRecord}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rt.Publish(ctx, pub); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendSSEFrame(b *testing.B) {
	etag := DefaultETag("posts", "1", benchRecord)
	multi := []byte("line one\nline two\r\nline three\rline four")
	for _, bc := range []struct {
		name string
		data []byte
	}{{"record", benchRecord}, {"multiline", multi}} {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, 512)
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.data)))
			for b.Loop() {
				var err error
				buf, err = AppendSSEFrame(buf[:0], EventChanged, etag, bc.data)
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchEvents returns n distinct events of one record.
func benchEvents(n int) []*Event {
	evs := make([]*Event, n)
	now := time.Now()
	for i := range evs {
		data := json.RawMessage(fmt.Sprintf(`{"id":"1","n":%d,"title":"A benchmark post"}`, i))
		evs[i] = &Event{Type: EventChanged, Ref: Ref{Tenant: DefaultTenant, Collection: "posts", ID: "1"},
			ETag: DefaultETag("posts", "1", data), Data: data, Time: now}
	}
	return evs
}

func BenchmarkMemoryBufferAppend(b *testing.B) {
	ctx := context.Background()
	b.Run("one-record", func(b *testing.B) {
		buf := NewMemoryBuffer(MemoryBufferConfig{})
		key := StreamKey{Tenant: DefaultTenant, Collection: "posts", ID: "1"}
		evs := benchEvents(256)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := buf.Append(ctx, key, evs[i%len(evs)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("10k-records", func(b *testing.B) {
		// Memory cap small enough that streams are evicted as it runs.
		buf := NewMemoryBuffer(MemoryBufferConfig{MaxBytes: 4 << 20})
		keys := make([]StreamKey, 10000)
		for i := range keys {
			keys[i] = StreamKey{Tenant: DefaultTenant, Collection: "posts", ID: strconv.Itoa(i)}
		}
		evs := benchEvents(256)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := buf.Append(ctx, keys[i%len(keys)], evs[i%len(evs)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

func BenchmarkMemoryBufferSince(b *testing.B) {
	ctx := context.Background()
	buf := NewMemoryBuffer(MemoryBufferConfig{})
	key := StreamKey{Tenant: DefaultTenant, Collection: "posts", ID: "1"}
	evs := benchEvents(100) // exactly the default size: all are buffered
	for _, ev := range evs {
		if _, err := buf.Append(ctx, key, ev); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name, last string
		want       LookupStatus
	}{
		{"up-to-date", evs[99].ETag, LookupUpToDate},
		{"found-10-behind", evs[89].ETag, LookupFound},
		{"found-50-behind", evs[49].ETag, LookupFound},
		{"unknown", `"not-buffered"`, LookupUnknown},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				lk, err := buf.Since(ctx, key, bc.last)
				if err != nil || lk.Status != bc.want {
					b.Fatalf("Since: %v %v", lk.Status, err)
				}
			}
		})
	}
}
