package realtime

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-contrib/cors"
	"github.com/gin-gonic/gin"
)

// Plugin serves live records and pushes on a gin router. Create it with
// New, mount it with Register or RegisterCollection, publish with Publish
// (or the GORM hook) and Notify, and stop it with Close. Every method is
// safe for concurrent use.
type Plugin struct {
	cfg     Config
	log     *slog.Logger
	auth    *authenticator
	access  *access
	broker  Broker
	node    *node
	streams *recordStreams
	pushes  *pushes
	acks    *ackBoard
	pool    *writerPool
	ws      *wsServer
	stats   *statsCounters // Stats (stats.go)
	retry   []byte
	cors    gin.HandlerFunc // nil without Config.CORSAllowedOrigins

	baseCtx context.Context
	cancel  context.CancelFunc
	closed  atomic.Bool
	stop    chan struct{}
	wg      sync.WaitGroup // one per tracked conn, until untrack
	bg      sync.WaitGroup // heartbeat loop

	liveMu sync.Mutex
	live   map[*conn]string // each tracked conn, with its client IP slot ("": none)
	ips    *ipSlots         // Config.MaxConnsPerIP
	expiry expiryHeap       // the tracked conns with a deadline (expiry.go)

	mountMu sync.Mutex
	mounted map[any]bool
}

// New validates cfg, applies its defaults and starts the plugin: its
// writer goroutines, its heartbeat loop and its node of the Broker (an
// in-process engine of its own without Config.Broker).
func New(cfg Config) (*Plugin, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Plugin{
		cfg:     c,
		log:     c.Logger,
		auth:    newAuthenticator(&c),
		stats:   newStatsCounters(),
		access:  &access{authorize: c.Authorize, channel: c.AuthorizeChannel, clientPublish: c.ClientPublish},
		retry:   retryFrame(c.Retry),
		baseCtx: ctx,
		cancel:  cancel,
		stop:    make(chan struct{}),
		live:    make(map[*conn]string),
		ips:     newIPSlots(c.MaxConnsPerIP),
		mounted: make(map[any]bool),
	}
	if len(c.CORSAllowedOrigins) > 0 {
		cc, _ := corsConfig(c.CORSAllowedOrigins) // validated by withDefaults
		p.cors = cors.New(cc)
	}
	p.pool = newWriterPool(c.Writers, c.WritersAtOnce, c.writeCoalesce())
	p.pool.checks = c.Authorize != nil
	p.broker = c.Broker
	if p.broker == nil {
		p.broker = newLocalBroker(c.Buffer)
	}
	p.node = newNode(p, p.broker)
	p.acks = newAckBoard()
	p.acks.node = p.node
	p.acks.stats = p.stats
	p.pushes = newPushes(p)
	p.streams = &recordStreams{
		hub: newHub(), broker: p.broker, buf: c.Buffer,
		loader: c.Loader, etagOf: p.etagOf, access: p.access, pool: p.pool, log: p.log,
		async: p.node.async, stats: p.stats,
		down: func() bool { return p.node.healthErr() != nil },
	}
	p.streams.resumer = newResumer(ctx, c.Writers, c.ResumeWait)
	p.streams.resumer.rs = p.streams
	p.ws = newWSServer(p)
	p.bg.Add(1)
	go p.heartbeats()
	if err := p.node.start(); err != nil {
		_ = p.Close(context.Background())
		return nil, err
	}
	return p, nil
}

// Health reports whether the plugin can publish: nil, or why not (its
// Broker's engine is unreachable; ErrClosed once closed). A single node is
// healthy until closed.
func (p *Plugin) Health() error {
	if p.closed.Load() {
		return fmt.Errorf("realtime: health: %w", ErrClosed)
	}
	if err := p.node.healthErr(); err != nil {
		return fmt.Errorf("realtime: health: %w: %w", ErrUnavailable, err)
	}
	return nil
}

// HealthHandler answers 200 {"status":"ok"} while Health is nil, else 503
// {"status":"degraded"} (the reason is logged, not shown). Mount it where
// the load balancer checks, e.g. router.GET("/healthz", rt.HealthHandler()).
func (p *Plugin) HealthHandler() gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := p.Health(); err != nil {
			c.JSON(http.StatusServiceUnavailable, gin.H{"status": "degraded"})
			return
		}
		c.JSON(http.StatusOK, gin.H{"status": "ok"})
	}
}

// track registers a live conn, counted in p.wg until untrack; false once
// the plugin is closed. Every successful track is matched by exactly one
// untrack.
func (p *Plugin) track(c *conn) bool { return p.trackSlot(c, "") }

// trackSlot is track for a conn holding the client IP slot ipKey (admit),
// which untrack gives back.
func (p *Plugin) trackSlot(c *conn, ipKey string) bool {
	p.liveMu.Lock()
	defer p.liveMu.Unlock()
	if p.closed.Load() {
		return false
	}
	p.live[c] = ipKey
	p.wg.Add(1)
	p.expiry.add(c, deadlineOf(c.ident, p.cfg.JWTLeeway))
	p.connOpened(c)
	return true
}

// untrack ends the tracking of c (once its connection is gone) and gives
// back its client IP slot.
func (p *Plugin) untrack(c *conn) {
	p.liveMu.Lock()
	ipKey, ok := p.live[c]
	delete(p.live, c)
	p.liveMu.Unlock()
	if !ok {
		return
	}
	p.ips.release(ipKey)
	p.expiry.remove(c)
	p.connClosed(c)
	p.wg.Done()
}

func (p *Plugin) liveConns() []*conn {
	p.liveMu.Lock()
	defer p.liveMu.Unlock()
	out := make([]*conn, 0, len(p.live))
	for c := range p.live {
		out = append(out, c)
	}
	return out
}

// Subscribers returns the number of open streams and long polls, plus the
// records followed over WebSockets (one per connection and record).
func (p *Plugin) Subscribers() int {
	p.liveMu.Lock()
	defer p.liveMu.Unlock()
	n := 0
	for c := range p.live {
		if c.solo {
			n++
		}
	}
	return n + int(p.streams.multiplexed.Load())
}

// heartbeats sends keepalive comments to every SSE stream at the
// configured interval, pings every WebSocket, ends connections whose token
// has expired (expiry.go, every expiryTick), and renews presence: one
// ticker each for all connections, no timer per connection.
func (p *Plugin) heartbeats() {
	defer p.bg.Done()
	t := time.NewTicker(p.cfg.Heartbeat)
	defer t.Stop()
	pt := time.NewTicker(p.cfg.WSPingInterval)
	defer pt.Stop()
	et := time.NewTicker(expiryTick)
	defer et.Stop()
	ct := time.NewTicker(presenceTTL / 3)
	defer ct.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.beat()
		case <-pt.C:
			p.ping()
		case now := <-et.C:
			p.expireDue(now)
		case now := <-ct.C:
			p.acks.expire(now)
			p.node.refreshPresence(p.pushes.reg.socketsNow())
		}
	}
}

// heartbeater is a transport that sends keepalives (SSE).
type heartbeater interface{ heartbeat(c *conn) }

// pinger is a transport that pings (WebSocket).
type pinger interface{ ping(c *conn) }

func (p *Plugin) beat() {
	for _, c := range p.liveConns() {
		if hb, ok := c.t.(heartbeater); ok {
			hb.heartbeat(c)
		}
	}
}

func (p *Plugin) ping() {
	for _, c := range p.liveConns() {
		if pg, ok := c.t.(pinger); ok {
			pg.ping(c)
		}
	}
}

// Close ends every stream and long poll cleanly, closes every WebSocket
// with 1001, refuses new ones and publishes, and waits for every goroutine
// the plugin started. When ctx ends first, the remaining connections are
// closed at once and Close returns ctx's error after they are gone.
func (p *Plugin) Close(ctx context.Context) error {
	p.liveMu.Lock()
	already := p.closed.Swap(true)
	p.liveMu.Unlock()
	if already {
		return nil
	}
	close(p.stop)
	p.bg.Wait()
	p.pushes.reg.close()
	for _, c := range p.liveConns() {
		c.end()
	}
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("realtime: close: %w", ctx.Err())
		for _, c := range p.liveConns() {
			c.close(ErrClosed)
		}
		<-done
	}
	if wsErr := p.ws.close(ctx); err == nil {
		err = wsErr
	}
	p.streams.resumer.close()
	if nerr := p.node.stop(ctx); err == nil {
		err = nerr
	}
	p.cancel()
	p.pool.close()
	p.acks.close()
	return err
}
