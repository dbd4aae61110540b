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
// allocate nothing). allocs/op staying flat from 1 to 1,000 subscribers is
// the "allocations per publish independent of the number of subscribers"
// property. The process-level measurements (idle memory per connection,
// deliveries/s with separate client processes, latency) are in cmd/rtbench.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"runtime"
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
				s.frames.Add(int64(c))
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
		s := &benchSub{conn: conn, done: make(chan struct{})}
		go s.read(br)
		subs = append(subs, s)
	}
	benchWait(b, subs, 1)
	return subs
}

// benchWait waits until every subscriber has received at least want frames;
// it returns the smallest count seen.
func benchWait(b *testing.B, subs []*benchSub, want int64) int64 {
	deadline := time.Now().Add(30 * time.Second)
	low := int64(-1)
	for _, s := range subs {
		for s.frames.Load() < want {
			select {
			case <-s.done:
				b.Fatalf("subscriber disconnected after %d frames (want %d)", s.frames.Load(), want)
			default:
			}
			if time.Now().After(deadline) {
				b.Fatalf("subscriber stuck at %d frames (want %d)", s.frames.Load(), want)
			}
			runtime.Gosched()
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
// queue overflows (QueueSize 512) while writes still coalesce.
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run("subs="+strconv.Itoa(n), func(b *testing.B) { benchPublish(b, n) })
	}
}

func benchPublish(b *testing.B, n int) {
	const window = 128
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
	low := int64(0) // every subscriber has received this many events
	b.ReportAllocs()
	start := time.Now()
	var i int64
	for b.Loop() {
		if i-low > window {
			low = benchWait(b, subs, 1+i-window/2) - 1
		}
		if _, err := rt.Publish(ctx, pub); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.StartTimer() // the drain is part of the cost
	benchWait(b, subs, 1+i)
	b.StopTimer()
	elapsed := time.Since(start)
	b.ReportMetric(float64(i)*float64(n)/elapsed.Seconds(), "deliveries/s")
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
