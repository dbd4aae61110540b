package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/redisbroker"
	"github.com/redis/go-redis/v9"
)

// Paths of the SSE endpoints. The realtime server takes any record id; the
// plain server has a single stream (every subscriber gets every event).
const (
	realtimePath = "/api/v1/posts/%s/subscribe"
	plainPath    = "/sse/%s"
)

// serverReady is the line a server prints on stdout once it listens.
type serverReady struct {
	Impl string   `json:"impl"`
	SSE  []string `json:"sse"`
	Ctl  string   `json:"ctl"`
	PID  int      `json:"pid"`
}

// serverStats is the answer of GET /stats.
type serverStats struct {
	RSSKiB      int64   `json:"rss_kib"`
	Goroutines  int     `json:"goroutines"`
	Subscribers int64   `json:"subscribers"`
	HeapAlloc   uint64  `json:"heap_alloc"`
	HeapInuse   uint64  `json:"heap_inuse"`
	StackInuse  uint64  `json:"stack_inuse"`
	HeapSys     uint64  `json:"heap_sys"`
	Sys         uint64  `json:"sys"`
	NumGC       uint32  `json:"num_gc"`
	CPUSeconds  float64 `json:"cpu_seconds"` // user + system time of the process so far
}

// publishResult is the answer of POST /publish.
type publishResult struct {
	Published int    `json:"published"`
	Errors    int    `json:"errors"`
	FirstErr  string `json:"first_err,omitempty"`
	StartNs   int64  `json:"start_ns"`
	EndNs     int64  `json:"end_ns"`
}

// impl is one SSE server implementation under test.
type impl interface {
	handler() http.Handler
	// publish sends one event with data to the subscribers of record id.
	publish(ctx context.Context, id string, data []byte) error
	subscribers() int64
	close()
}

func serverMain(args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	implName := fs.String("impl", "realtime", "implementation: realtime (the plugin on gin), plain (net/http, flush per event), realtime-ws (the plugin's WebSocket, rt.Notify) or melody (melody.New(), m.Broadcast)")
	addrs := fs.String("addr", "127.0.0.1:0", "comma-separated SSE listen addresses")
	ctl := fs.String("ctl", "127.0.0.1:0", "control listen address (stats, publish, pprof)")
	queue := fs.Int("queue", 0, "subscriber queue bound in events (0: the default: 512 for SSE; realtime-ws: Config.WSSendQueue, 256; melody: MessageBufferSize, 256)")
	writers := fs.Int("writers", 0, "realtime: Config.Writers (0: the plugin's default, 4 × GOMAXPROCS)")
	redisURL := fs.String("redis", "", "realtime: a Redis URL: the plugin is one node of several sharing it (redisbroker)")
	redisPrefix := fs.String("redis-prefix", "rtbench:", "realtime with -redis: the broker's key and channel prefix")
	_ = fs.Parse(args)

	var im impl
	switch *implName {
	case "realtime":
		r, err := newRealtimeImpl(*queue, *writers, *redisURL, *redisPrefix)
		if err != nil {
			return err
		}
		im = r
	case "plain":
		q := *queue
		if q == 0 {
			q = 512
		}
		im = newPlainImpl(q)
	case "realtime-ws":
		r, err := newRealtimeWSImpl(*queue)
		if err != nil {
			return err
		}
		im = r
	case "melody":
		im = newMelodyImpl(*queue)
	default:
		return fmt.Errorf("unknown -impl %q", *implName)
	}

	srv := &http.Server{Handler: im.handler(), ReadHeaderTimeout: 10 * time.Second}
	ready := serverReady{Impl: *implName, PID: os.Getpid()}
	for _, a := range strings.Split(*addrs, ",") {
		ln, err := net.Listen("tcp", strings.TrimSpace(a))
		if err != nil {
			return err
		}
		ready.SSE = append(ready.SSE, ln.Addr().String())
		go func() { _ = srv.Serve(ln) }()
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gc") != "0" {
			runtime.GC()
		}
		if r.URL.Query().Get("free") == "1" {
			debug.FreeOSMemory()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		writeJSON(w, serverStats{
			RSSKiB: readRSSKiB(), Goroutines: runtime.NumGoroutine(), Subscribers: im.subscribers(),
			HeapAlloc: ms.HeapAlloc, HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse,
			HeapSys: ms.HeapSys, Sys: ms.Sys, NumGC: ms.NumGC, CPUSeconds: cpuSeconds(),
		})
	})
	mux.HandleFunc("POST /publish", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		n, _ := strconv.Atoi(q.Get("n"))
		rate, _ := strconv.ParseFloat(q.Get("rate"), 64)
		size, _ := strconv.Atoi(q.Get("size"))
		maxDur, _ := time.ParseDuration(q.Get("max"))
		id := q.Get("id")
		if id == "" {
			id = "1"
		}
		if n <= 0 || n > 10_000_000 {
			http.Error(w, "n must be in 1..10000000", http.StatusBadRequest)
			return
		}
		if maxDur <= 0 || maxDur > 5*time.Minute {
			maxDur = time.Minute
		}
		writeJSON(w, publishLoop(r.Context(), im, id, n, rate, size, maxDur))
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	cln, err := net.Listen("tcp", *ctl)
	if err != nil {
		return err
	}
	ready.Ctl = cln.Addr().String()
	csrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = csrv.Serve(cln) }()

	b, _ := json.Marshal(ready)
	fmt.Println(string(b))

	// Run until stdin closes (the parent is gone) or a signal arrives.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	eof := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(eof) }()
	select {
	case <-sig:
	case <-eof:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = csrv.Close()
	im.close()
	_ = srv.Shutdown(ctx)
	return nil
}

// publishLoop publishes n events to record id at rate per second (0: as
// fast as it can), for at most maxDur. Each event's data carries its send
// time in Unix nanoseconds ("t") and its index ("i"), padded to size bytes.
func publishLoop(ctx context.Context, im impl, id string, n int, rate float64, size int, maxDur time.Duration) publishResult {
	var res publishResult
	start := time.Now()
	res.StartNs = start.UnixNano()
	deadline := start.Add(maxDur)
	var period time.Duration
	if rate > 0 {
		period = time.Duration(float64(time.Second) / rate)
	}
	for i := range n {
		if period > 0 {
			if d := time.Until(start.Add(time.Duration(i) * period)); d > 0 {
				time.Sleep(d)
			}
		}
		now := time.Now()
		if now.After(deadline) || ctx.Err() != nil {
			break
		}
		if err := im.publish(ctx, id, eventData(id, i, now.UnixNano(), size)); err != nil {
			res.Errors++
			if res.FirstErr == "" {
				res.FirstErr = err.Error()
			}
			continue
		}
		res.Published++
	}
	res.EndNs = time.Now().UnixNano()
	return res
}

// eventData is a record's JSON with the send time t, padded to size bytes.
func eventData(id string, i int, t int64, size int) []byte {
	b := make([]byte, 0, max(size, 64)+16)
	b = append(b, `{"id":"`...)
	b = append(b, id...)
	b = append(b, `","i":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, t, 10)
	b = append(b, `,"title":"`...)
	for len(b) < size-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// cpuSeconds returns the process's user + system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// readRSSKiB returns VmRSS from /proc/self/status.
func readRSSKiB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

// realtimeImpl is the plugin on gin, as an app mounts it.
type realtimeImpl struct {
	rt     *realtime.Plugin
	engine *gin.Engine
	redis  *redis.Client // with -redis
}

func newRealtimeImpl(queue, writers int, redisURL, redisPrefix string) (*realtimeImpl, error) {
	cfg := realtime.Config{QueueSize: queue, Writers: writers}
	var client *redis.Client
	if redisURL != "" {
		opts, err := redis.ParseURL(redisURL)
		if err != nil {
			return nil, err
		}
		client = redis.NewClient(opts)
		b, err := redisbroker.New(client, redisbroker.Config{Prefix: redisPrefix})
		if err != nil {
			_ = client.Close()
			return nil, err
		}
		cfg.Broker = b
	}
	rt, e, err := newPluginApp(cfg)
	if err != nil {
		if client != nil {
			_ = client.Close()
		}
		return nil, err
	}
	return &realtimeImpl{rt: rt, engine: e, redis: client}, nil
}

// newPluginApp is the plugin as an app mounts it: gin in release mode
// without middleware, an app route GET /api/v1/posts/:id and
// RegisterCollection(api, "posts") next to it (which also mounts /ws). cfg
// gets the benchmark's secret and a silent logger.
func newPluginApp(cfg realtime.Config) (*realtime.Plugin, *gin.Engine, error) {
	gin.SetMode(gin.ReleaseMode)
	cfg.JWTSecret = benchSecret
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	rt, err := realtime.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	e := gin.New()
	api := e.Group("/api/v1")
	api.GET("/posts/:id", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"id": c.Param("id")}) })
	rt.RegisterCollection(api, "posts")
	return rt, e, nil
}

func (r *realtimeImpl) handler() http.Handler { return r.engine }

func (r *realtimeImpl) publish(ctx context.Context, id string, data []byte) error {
	_, err := r.rt.Publish(ctx, realtime.Publication{Collection: "posts", ID: id, Event: realtime.EventChanged, Data: data})
	return err
}

func (r *realtimeImpl) subscribers() int64 { return int64(r.rt.Subscribers()) }

func (r *realtimeImpl) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = r.rt.Close(ctx)
	if r.redis != nil {
		_ = r.redis.Close()
	}
}

// plainImpl is the reference: a minimal net/http SSE handler. Each
// subscriber has a buffered channel and its handler goroutine writes and
// flushes every event; the publisher encodes the frame once and sends it to
// every channel without waiting (a full channel disconnects the subscriber,
// the plugin's policy too). No JWT check, no buffer, no resume.
type plainImpl struct {
	queue int
	mu    sync.Mutex
	subs  map[*plainSub]struct{}
	n     atomic.Int64
	stop  chan struct{}
}

type plainSub struct {
	ch chan *[]byte
}

var plainRetry = []byte("retry: 2000\n\n")

func newPlainImpl(queue int) *plainImpl {
	return &plainImpl{queue: queue, subs: make(map[*plainSub]struct{}), stop: make(chan struct{})}
}

func (p *plainImpl) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sse/{id}", p.serve)
	return mux
}

func (p *plainImpl) serve(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	s := &plainSub{ch: make(chan *[]byte, p.queue)}
	p.mu.Lock()
	p.subs[s] = struct{}{}
	p.mu.Unlock()
	p.n.Add(1)
	defer func() {
		p.mu.Lock()
		delete(p.subs, s)
		p.mu.Unlock()
		p.n.Add(-1)
	}()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(plainRetry); err != nil {
		return
	}
	fl.Flush()
	for {
		select {
		case f, ok := <-s.ch:
			if !ok {
				return // overflowed: disconnected
			}
			if _, err := w.Write(*f); err != nil {
				return
			}
			fl.Flush()
		case <-r.Context().Done():
			return
		case <-p.stop:
			return
		}
	}
}

var errPlainClosed = errors.New("plain: closed")

func (p *plainImpl) publish(_ context.Context, id string, data []byte) error {
	select {
	case <-p.stop:
		return errPlainClosed
	default:
	}
	etag := realtime.DefaultETag("posts", id, data)
	frame, err := realtime.AppendSSEFrame(make([]byte, 0, len(data)+len(etag)+32), realtime.EventChanged, etag, data)
	if err != nil {
		return err
	}
	p.mu.Lock()
	for s := range p.subs {
		select {
		case s.ch <- &frame:
		default:
			delete(p.subs, s)
			close(s.ch)
		}
	}
	p.mu.Unlock()
	return nil
}

func (p *plainImpl) subscribers() int64 { return p.n.Load() }

func (p *plainImpl) close() { close(p.stop) }
