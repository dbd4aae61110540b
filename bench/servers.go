package main

import (
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

	"github.com/centrifugal/centrifuge"
	"github.com/dunglas/mercure"
	"github.com/gin-gonic/gin"
	"github.com/ginrealtime/realtime"
	"github.com/google/uuid"
	"github.com/olahol/melody"
)

// serverReady is the line a server prints on stdout once it listens.
type serverReady struct {
	Impl   string   `json:"impl"`
	Addrs  []string `json:"addrs"`
	Ctl    string   `json:"ctl"`
	PID    int      `json:"pid"`
	Config string   `json:"config"`
}

// serverStats is the answer of GET /stats (RSS and CPU are read from /proc
// by the orchestrator).
type serverStats struct {
	Goroutines  int    `json:"goroutines"`
	Subscribers int64  `json:"subscribers"`
	HeapInuse   uint64 `json:"heap_inuse"`
	StackInuse  uint64 `json:"stack_inuse"`
}

// publishResult is the answer of POST /publish.
type publishResult struct {
	Published int    `json:"published"`
	Errors    int    `json:"errors"`
	FirstErr  string `json:"first_err,omitempty"`
	StartNs   int64  `json:"start_ns"`
	EndNs     int64  `json:"end_ns"`
	// Checked is the number of answers checked against the expected
	// delivery counts (a push's NotifyResult), Wrong those that differed.
	Checked    int    `json:"checked"`
	Wrong      int    `json:"wrong"`
	FirstWrong string `json:"first_wrong,omitempty"`
}

// wantCounts is what a publish that answers with delivery counts must
// answer (PROTOCOL.md §7: delivered, users); negative: not checked.
type wantCounts struct{ delivered, users int }

// countedPublisher is an implementation whose publish answers with the
// delivery counts (the plugin's Notify): counts reports whether it does.
type countedPublisher interface {
	counts() bool
	publishCounted(ctx context.Context, data []byte) (delivered, users int, err error)
}

// impl is one server implementation under test.
type impl interface {
	handler() http.Handler
	// publish sends one event with data to every subscriber of the topic.
	publish(ctx context.Context, data []byte) error
	// subscribers is the number of subscribed connections the server counts.
	subscribers() int64
	// config describes the configuration, for the report.
	config() string
	close()
}

func newImpl(name string, rc redisConf) (impl, error) {
	if sp, ok := specOf(name); ok && sp.twoNode() {
		return newTwoNodeImpl(sp.base, rc)
	}
	switch name {
	case "realtime-sse":
		return newRealtime(realtime.Config{}, false, false)
	case "realtime-ws":
		return newRealtime(wsCaps(realtime.Config{}), true, true)
	case "realtime-ws-rec":
		return newRealtime(wsCaps(realtime.Config{}), false, true)
	case "centrifuge-sse":
		return newCentrifuge(false, nil)
	case "centrifuge-ws":
		return newCentrifuge(true, nil)
	case "mercure-sse":
		return newMercure()
	case "nethttp-sse":
		return newPlain(512), nil
	case "melody-ws":
		return newMelody(), nil
	}
	return nil, fmt.Errorf("unknown implementation %q", name)
}

// discard is the logger every server gets: logging 10,000 connections to
// stderr would measure the terminal. BENCH_SERVER_LOG=1 logs to stderr
// instead (info level), to find out why a server closes connections.
var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

var serverLog = os.Getenv("BENCH_SERVER_LOG") == "1"

func init() {
	if serverLog {
		discard = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
}

func serverMain(args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	name := fs.String("impl", "realtime-sse", "implementation")
	addrs := fs.String("addr", "127.0.0.1:0", "comma-separated listen addresses")
	ctl := fs.String("ctl", "127.0.0.1:0", "control listen address (stats, publish, pprof)")
	var rc redisConf
	fs.StringVar(&rc.url, "redis", "", "Redis URL of a two-node implementation's broker")
	fs.StringVar(&rc.prefix, "prefix", "", "key prefix of a two-node implementation's broker (fresh per run)")
	_ = fs.Parse(args)

	im, err := newImpl(*name, rc)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: im.handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	ready := serverReady{Impl: *name, PID: os.Getpid(), Config: im.config()}
	for _, a := range strings.Split(*addrs, ",") {
		ln, err := net.Listen("tcp", strings.TrimSpace(a))
		if err != nil {
			return err
		}
		ready.Addrs = append(ready.Addrs, ln.Addr().String())
		go func() { _ = srv.Serve(ln) }()
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gc") == "1" {
			runtime.GC()
		}
		if r.URL.Query().Get("free") == "1" {
			debug.FreeOSMemory() // returns freed pages to the OS
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		writeJSON(w, serverStats{Goroutines: runtime.NumGoroutine(), Subscribers: im.subscribers(),
			HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse})
	})
	mux.HandleFunc("POST /publish", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		n, _ := strconv.Atoi(q.Get("n"))
		rate, _ := strconv.ParseFloat(q.Get("rate"), 64)
		size, _ := strconv.Atoi(q.Get("size"))
		maxDur, _ := time.ParseDuration(q.Get("max"))
		want := wantCounts{-1, -1}
		if v := q.Get("delivered"); v != "" {
			want.delivered, _ = strconv.Atoi(v)
			want.users, _ = strconv.Atoi(q.Get("users"))
		}
		if n <= 0 || n > 1_000_000 {
			http.Error(w, "n must be in 1..1000000", http.StatusBadRequest)
			return
		}
		if maxDur <= 0 || maxDur > 5*time.Minute {
			maxDur = time.Minute
		}
		writeJSON(w, publishLoop(r.Context(), im, n, rate, size, maxDur, want))
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
	_ = csrv.Close()
	im.close()
	_ = srv.Close()
	return nil
}

// publishLoop publishes n events at rate per second (0: as fast as it
// can), for at most maxDur, from one goroutine, each call waiting for its
// answer. Each event's data carries its send time in Unix nanoseconds
// ("t"), padded to size bytes. With want.delivered >= 0, an implementation
// that answers with delivery counts has every answer checked against want.
func publishLoop(ctx context.Context, im impl, n int, rate float64, size int, maxDur time.Duration, want wantCounts) publishResult {
	var res publishResult
	var counted countedPublisher
	if cp, ok := im.(countedPublisher); ok && cp.counts() && want.delivered >= 0 {
		counted = cp
	}
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
		data := eventData(i, now.UnixNano(), size)
		var err error
		if counted != nil {
			var d, u int
			if d, u, err = counted.publishCounted(ctx, data); err == nil {
				res.Checked++
				if d != want.delivered || u != want.users {
					res.Wrong++
					if res.FirstWrong == "" {
						res.FirstWrong = fmt.Sprintf("delivered %d users %d, want %d and %d", d, u, want.delivered, want.users)
					}
				}
			}
		} else {
			err = im.publish(ctx, data)
		}
		if err != nil {
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
func eventData(i int, t int64, size int) []byte {
	b := make([]byte, 0, max(size, 64)+16)
	b = append(b, `{"id":"`+recordID+`","i":`...)
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

// --- the plugin ---

// realtimeImpl is the plugin as an app mounts it: gin in release mode
// without middleware, an app route GET /api/v1/posts/:id and
// RegisterCollection(api, "posts") next to it (which mounts the record
// streams and GET /api/v1/ws).
type realtimeImpl struct {
	rt     *realtime.Plugin
	engine *gin.Engine
	push   bool // publish = Notify on wsChannel (else Publish of posts/1)
	ws     bool // count WebSockets (else stream subscribers)
	cfg    realtime.Config
	// two nodes (servers_redis.go): the broker's description, whether each
	// client is its own user, and what to close after the plugin.
	broker  string
	perUser bool
	closers []func()
}

// wsCaps lifts the per-user (16) and per-tenant (10,000) WebSocket caps
// above the benchmark's connection counts: every client uses the same
// token. Nothing else changes.
func wsCaps(c realtime.Config) realtime.Config {
	c.WSMaxConnsPerUser = 50_000
	c.WSMaxConnsPerTenant = 50_000
	return c
}

func newRealtime(cfg realtime.Config, push, ws bool) (*realtimeImpl, error) {
	gin.SetMode(gin.ReleaseMode)
	cfg.JWTSecret = benchSecret
	cfg.Logger = discard
	// BENCH_RT_WRITE_COALESCE sets Config.WriteCoalesce ("off":
	// DisableWriteCoalesce), for comparing runs.
	if v := os.Getenv("BENCH_RT_WRITE_COALESCE"); v == "off" {
		cfg.DisableWriteCoalesce = true
	} else if v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("BENCH_RT_WRITE_COALESCE: %w", err)
		}
		cfg.WriteCoalesce = d
	}
	rt, err := realtime.New(cfg)
	if err != nil {
		return nil, err
	}
	e := gin.New()
	api := e.Group("/api/v1")
	api.GET("/posts/:id", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"id": c.Param("id")}) })
	rt.RegisterCollection(api, "posts")
	return &realtimeImpl{rt: rt, engine: e, push: push, ws: ws, cfg: cfg}, nil
}

func (r *realtimeImpl) handler() http.Handler { return r.engine }

func (r *realtimeImpl) publish(ctx context.Context, data []byte) error {
	if r.push {
		_, err := r.rt.Notify(ctx, realtime.Notification{
			Tenant: realtime.DefaultTenant, Channel: wsChannel, Event: wsEvent, Data: json.RawMessage(data),
		})
		return err
	}
	_, err := r.rt.Publish(ctx, realtime.Publication{Collection: "posts", ID: recordID, Event: realtime.EventChanged, Data: data})
	return err
}

func (r *realtimeImpl) counts() bool { return r.push }

func (r *realtimeImpl) publishCounted(ctx context.Context, data []byte) (int, int, error) {
	res, err := r.rt.Notify(ctx, realtime.Notification{
		Tenant: realtime.DefaultTenant, Channel: wsChannel, Event: wsEvent, Data: json.RawMessage(data),
	})
	return res.Delivered, res.Users, err
}

func (r *realtimeImpl) subscribers() int64 {
	if r.ws && r.push {
		_, n, _ := r.rt.Presence(context.Background(), realtime.DefaultTenant)
		return int64(n)
	}
	return int64(r.rt.Subscribers())
}

// coalesce describes the WebSocket write coalescing of the run.
func (r *realtimeImpl) coalesce() string {
	switch {
	case r.cfg.DisableWriteCoalesce:
		return "DisableWriteCoalesce (BENCH_RT_WRITE_COALESCE=off)"
	case r.cfg.WriteCoalesce != 0:
		return "WriteCoalesce " + r.cfg.WriteCoalesce.String() + " (BENCH_RT_WRITE_COALESCE)"
	}
	return "WriteCoalesce 100ms"
}

func (r *realtimeImpl) config() string {
	buf := ", in-memory buffer of 100 events per record/channel)"
	if r.broker != "" {
		buf = ")"
	}
	s := "gin release mode, no middleware; realtime.New(Config{JWTSecret, Logger: discard}) with every other field at its default " +
		"(QueueSize 4096, Writers 4×GOMAXPROCS, WSSendQueue 4096, " + r.coalesce() + ", WriteTimeout 10s, Heartbeat 30s, WSPingInterval 25s" + buf
	if r.broker != "" {
		s += ", except Broker: " + r.broker
	}
	switch {
	case r.ws && r.perUser:
		s += "; WSMaxConnsPerUser and WSMaxConnsPerTenant raised to 50,000 (as on one node; here each client has its own user, bench-<i>)"
	case r.ws:
		s += ", except WSMaxConnsPerUser and WSMaxConnsPerTenant raised to 50,000 (every client has the same token)"
	}
	s += "; RegisterCollection(api, \"posts\") beside an app route GET /api/v1/posts/:id. "
	switch {
	case r.push:
		s += "Clients: GET /api/v1/ws?token=JWT, then {\"type\":\"subscribe\",\"channels\":[\"" + wsChannel + "\"]}; a publish is rt.Notify(Notification{Channel: \"" + wsChannel + "\", Event, Data})."
	case r.ws:
		s += "Clients: GET /api/v1/ws?token=JWT, then {\"type\":\"subscribe\",\"records\":[{\"collection\":\"posts\",\"id\":\"1\"}]}; a publish is rt.Publish(Publication{posts/1, changed, Data}) (record frames)."
	default:
		s += "Clients: GET /api/v1/posts/1/subscribe?token=JWT (SSE record stream); a publish is rt.Publish(Publication{posts/1, changed, Data})."
	}
	return s
}

func (r *realtimeImpl) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = r.rt.Close(ctx)
	for _, f := range r.closers {
		f()
	}
}

// --- centrifuge ---

// centrifugeImpl is a centrifuge Node with its in-memory broker and
// presence manager (the defaults), connections authenticated in
// OnConnecting (a fixed user, as an auth middleware would set) and
// subscribed on the server side to one channel; a publish is node.Publish.
// SSE: NewSSEHandler (bidirectional emulation: the client's pongs come
// through NewEmulationHandler, as centrifuge-js sends them). WebSocket:
// NewWebsocketHandler. Both handler configs are zero: the defaults.
type centrifugeImpl struct {
	node *centrifuge.Node
	ws   bool
	mux  *http.ServeMux
	// two nodes (servers_redis.go): the Redis broker's description and shard.
	broker string
	shard  *centrifuge.RedisShard
}

// newCentrifuge returns the node; with rc set (two nodes) its broker and
// presence manager are Redis ones, set up by useRedis before node.Run.
func newCentrifuge(ws bool, rc *redisConf) (*centrifugeImpl, error) {
	cfg := centrifuge.Config{LogLevel: centrifuge.LogLevelNone}
	if serverLog {
		cfg.LogLevel = centrifuge.LogLevelDebug
		cfg.LogHandler = func(e centrifuge.LogEntry) {
			fmt.Fprintf(os.Stderr, "centrifuge: %s %v %v\n", e.Message, e.Error, e.Fields)
		}
	}
	node, err := centrifuge.New(cfg)
	if err != nil {
		return nil, err
	}
	node.OnConnecting(func(ctx context.Context, e centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		return centrifuge.ConnectReply{
			Credentials:   &centrifuge.Credentials{UserID: "bench"},
			Subscriptions: map[string]centrifuge.SubscribeOptions{centrifugeChan: {}},
		}, nil
	})
	node.OnConnect(func(client *centrifuge.Client) {})
	c := &centrifugeImpl{node: node, ws: ws}
	if rc != nil {
		if err := c.useRedis(*rc); err != nil {
			return nil, err
		}
	}
	if err := node.Run(); err != nil {
		c.close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(centrifugeWS, centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{}))
	mux.Handle(centrifugeSSE, centrifuge.NewSSEHandler(node, centrifuge.SSEConfig{}))
	mux.Handle(centrifugeEmul, centrifuge.NewEmulationHandler(node, centrifuge.EmulationConfig{}))
	c.mux = mux
	return c, nil
}

func (c *centrifugeImpl) handler() http.Handler { return c.mux }

func (c *centrifugeImpl) publish(_ context.Context, data []byte) error {
	_, err := c.node.Publish(centrifugeChan, data)
	return err
}

func (c *centrifugeImpl) subscribers() int64 {
	return int64(c.node.Hub().NumSubscribers(centrifugeChan))
}

func (c *centrifugeImpl) config() string {
	mem := "memory broker and presence manager, "
	if c.broker != "" {
		mem = ""
	}
	s := "centrifuge v0.38.0: centrifuge.New(Config{LogLevel: None}) with every other field at its default (" + mem +
		"ClientQueueMaxSize 1 MiB, MaxMessagesInFrame 16, no WriteDelay, ping every 25 s with a 10 s pong timeout), node.Run(); " +
		"OnConnecting answers Credentials{UserID: \"bench\"} and a server-side subscription to \"" + centrifugeChan + "\"; a publish is node.Publish(\"" + centrifugeChan + "\", data). "
	if c.broker != "" {
		s += c.broker + " "
	}
	if c.ws {
		s += "NewWebsocketHandler(node, WebsocketConfig{}) (defaults: buffer sizes 0, i.e. its gorilla fork reuses the HTTP server's 4 KiB buffers; no write buffer pool, WriteTimeout 1 s, no compression, same-host origin check) on " + centrifugeWS +
			"; clients send {\"id\":1,\"connect\":{}} and answer the {} pings with {}."
	} else {
		s += "NewSSEHandler(node, SSEConfig{}) on " + centrifugeSSE + " and NewEmulationHandler(node, EmulationConfig{}) on " + centrifugeEmul +
			"; clients open GET " + centrifugeSSE + "?cf_connect={\"id\":1,\"connect\":{}} and post their pongs to " + centrifugeEmul + "."
	}
	return s
}

func (c *centrifugeImpl) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.node.Shutdown(ctx)
	if c.shard != nil {
		c.shard.Close()
	}
}

// --- Mercure ---

// mercureImpl is a Mercure hub without Caddy, created as its package
// example does: mercure.NewHub with a publisher and a subscriber JWT key
// (HS256), every other option at its default (local transport without
// history, heartbeat 40 s, write timeout 600 s, dispatch timeout 5 s), on
// /.well-known/mercure. Subscribers pass a JWT allowed every topic in the
// authorization query parameter; a publish is hub.Publish of a public
// update of one topic.
type mercureImpl struct {
	hub    *mercure.Hub
	open   atomic.Int64 // subscribe requests in progress
	cancel context.CancelFunc
}

func newMercure() (*mercureImpl, error) {
	ctx, cancel := context.WithCancel(context.Background())
	h, err := mercure.NewHub(ctx,
		mercure.WithPublisherJWT(benchSecret, "HS256"),
		mercure.WithSubscriberJWT(benchSecret, "HS256"),
		mercure.WithLogger(discard),
	)
	if err != nil {
		cancel()
		return nil, err
	}
	return &mercureImpl{hub: h, cancel: cancel}, nil
}

func (m *mercureImpl) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == mercurePath {
			m.open.Add(1)
			defer m.open.Add(-1)
		}
		m.hub.ServeHTTP(w, r)
	})
}

func (m *mercureImpl) publish(ctx context.Context, data []byte) error {
	return m.hub.Publish(ctx, &mercure.Update{Topics: []string{mercureTopic}, Event: mercure.Event{Data: string(data)}})
}

func (m *mercureImpl) subscribers() int64 { return m.open.Load() }

func (m *mercureImpl) config() string {
	return "Mercure v0.24.2 without Caddy: mercure.NewHub(ctx, WithPublisherJWT(key, \"HS256\"), WithSubscriberJWT(key, \"HS256\"), WithLogger(discard)) " +
		"with every other option at its default (local transport, no history, heartbeat 40 s, write timeout 600 s, dispatch timeout 5 s, " +
		"1,000 updates buffered per subscriber), served on " + mercurePath + "; clients open GET " + mercurePath + "?topic=" + mercureTopic +
		"&authorization=JWT (subscribe [\"*\"]); a publish is hub.Publish(&Update{Topics: [topic], Event: {Data}}) (public update)."
}

func (m *mercureImpl) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = m.hub.Stop(ctx)
	m.cancel()
}

// --- references ---

// plainImpl is the reference: a minimal net/http SSE handler. Each
// subscriber has a buffered channel and its handler goroutine writes and
// flushes every event; the publisher encodes the frame once and sends it to
// every channel without waiting (a full channel disconnects the
// subscriber). No token check, no buffer, no resume.
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

func newPlain(queue int) *plainImpl {
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
	w.WriteHeader(http.StatusOK)
	if _, err := io.WriteString(w, "retry: 2000\n\n"); err != nil {
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

func (p *plainImpl) publish(_ context.Context, data []byte) error {
	select {
	case <-p.stop:
		return errPlainClosed
	default:
	}
	etag := realtime.DefaultETag("posts", recordID, data)
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

func (p *plainImpl) config() string {
	return fmt.Sprintf("reference: net/http ServeMux, one handler goroutine per subscriber that writes and flushes each event; "+
		"a buffered channel of %d frames per subscriber (full: disconnected); the publisher encodes the frame once (realtime.AppendSSEFrame) "+
		"and sends it to every channel. No auth, no buffer, no resume.", p.queue)
}

func (p *plainImpl) close() { close(p.stop) }

// melodyImpl is the reference: melody.New() with its defaults on /ws
// (MessageBufferSize 256: a full buffer drops the message), pushing with
// m.Broadcast. The pushed frame has the plugin's envelope shape, marshalled
// once per push.
type melodyImpl struct {
	m *melody.Melody
}

type melodyEnvelope struct {
	Type       string          `json:"type"`
	EnvelopeID string          `json:"envelopeId"`
	Channel    string          `json:"channel"`
	Event      string          `json:"event"`
	Data       json.RawMessage `json:"data"`
	Timestamp  string          `json:"timestamp"`
}

func newMelody() *melodyImpl { return &melodyImpl{m: melody.New()} }

func (mi *melodyImpl) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+melodyPath, func(w http.ResponseWriter, r *http.Request) { _ = mi.m.HandleRequest(w, r) })
	return mux
}

func (mi *melodyImpl) publish(_ context.Context, data []byte) error {
	frame, err := json.Marshal(melodyEnvelope{
		Type: "message", EnvelopeID: uuid.NewString(), Channel: wsChannel, Event: wsEvent, Data: data,
		Timestamp: time.Now().UTC().Format(time.RFC3339Nano),
	})
	if err != nil {
		return err
	}
	return mi.m.Broadcast(frame)
}

func (mi *melodyImpl) subscribers() int64 { return int64(mi.m.Len()) }

func (mi *melodyImpl) config() string {
	c := mi.m.Config
	return fmt.Sprintf("reference: melody v1.3.0, melody.New() with its defaults (MessageBufferSize %d, a full buffer drops the message; "+
		"MaxMessageSize %d, PingPeriod %v, PongWait %v, WriteWait %v, gorilla's upgrader with its default buffers) on net/http; "+
		"a push marshals an envelope of the plugin's shape once and calls m.Broadcast.",
		c.MessageBufferSize, c.MaxMessageSize, c.PingPeriod, c.PongWait, c.WriteWait)
}

func (mi *melodyImpl) close() { _ = mi.m.Close() }
