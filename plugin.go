package realtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-contrib/cors"
	"github.com/gin-gonic/gin"
)

// Plugin serves live records on a gin router. Create it with New, mount it
// with Register or RegisterCollection, publish with Publish (or the GORM
// hook), and stop it with Close.
type Plugin struct {
	cfg     Config
	log     *slog.Logger
	auth    *authenticator
	hub     *hub
	writers *writerPool
	retry   []byte
	ws      *wsServer
	cluster *cluster        // nil without a Broker
	cors    gin.HandlerFunc // nil without Config.CORSAllowedOrigins

	baseCtx context.Context
	cancel  context.CancelFunc
	closed  atomic.Bool
	stop    chan struct{}
	wg      sync.WaitGroup // one per tracked subscriber: its reader goroutine or handler
	bg      sync.WaitGroup // heartbeat loop

	liveMu sync.Mutex
	live   map[*subscriber]struct{}
}

// New validates cfg, applies its defaults and starts the plugin's writer
// goroutines and heartbeat loop.
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
		hub:     newHub(),
		retry:   retryFrame(c.Retry),
		baseCtx: ctx,
		cancel:  cancel,
		stop:    make(chan struct{}),
		live:    make(map[*subscriber]struct{}),
	}
	if len(c.CORSAllowedOrigins) > 0 {
		cc, _ := corsConfig(c.CORSAllowedOrigins) // validated by withDefaults
		p.cors = cors.New(cc)
	}
	p.writers = newWriterPool(p, c.Writers)
	p.ws = newWSServer(p)
	if c.Broker != nil {
		p.cluster = newCluster(p, c.Broker)
	}
	p.bg.Add(1)
	go p.heartbeats()
	if p.cluster != nil {
		if err := p.cluster.start(); err != nil {
			_ = p.Close(context.Background())
			return nil, err
		}
	}
	return p, nil
}

// detach removes s from its stream's subscribers and, with a Broker,
// undoes its watch.
func (p *Plugin) detach(s *subscriber) {
	if s.stream != nil {
		p.dropChannelStream(s.stream)
		return
	}
	p.hub.detach(s)
	if s.watched.Swap(false) && p.cluster != nil {
		p.cluster.unwatch(s.key)
	}
}

// Health reports whether the plugin can publish: nil, or why not (its
// Broker's engine is unreachable; ErrClosed once closed). A single node is
// always healthy until closed.
func (p *Plugin) Health() error {
	if p.closed.Load() {
		return fmt.Errorf("realtime: health: %w", ErrClosed)
	}
	if p.cluster != nil {
		if err := p.cluster.healthErr(); err != nil {
			return fmt.Errorf("realtime: health: %w: %w", ErrUnavailable, err)
		}
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

// Register mounts the generic routes on rg, for every collection:
//
//	GET  /:collection/subscribe       collection stream (SSE)
//	GET  /:collection/:id/subscribe   record stream (SSE)
//	GET  /:collection/:id/poll        long poll
//	POST /:collection/:id/events      publish (publish scope)
//	GET  /ws                          WebSocket (pushes, channels, presence)
//	POST /notify                      push to users (publish scope)
//	GET  /presence, /presence/:user   presence (publish scope)
//	GET  /channels/subscribe          channel pushes as SSE (?channels=…)
//	GET  /channels/:channel/history   a channel's buffered pushes
//
// The last six are mounted once per group, whether by Register or by
// RegisterCollection (which may be called several times on one group);
// "channels" is therefore not usable as a collection name with Register.
//
// gin's router does not backtrack: when the app has its own routes under rg
// such as GET /posts/:id, use RegisterCollection for those collections.
func (p *Plugin) Register(rg gin.IRoutes) {
	rg.GET("/:collection/subscribe", p.handleSubscribe("", false))
	rg.GET("/:collection/:id/subscribe", p.handleSubscribe("", true))
	rg.GET("/:collection/:id/poll", p.handlePoll(""))
	p.publishRoute(rg, http.MethodPost, "/:collection/:id/events", p.handlePublish(""))
	p.ws.mount(rg)
}

// RegisterCollection mounts the routes of Register for the named
// collections, next to the app's own routes (GET /posts/:id coexists with
// GET /posts/:id/subscribe), and the WebSocket routes once per group.
func (p *Plugin) RegisterCollection(rg gin.IRoutes, collections ...string) {
	p.ws.mount(rg)
	for _, name := range collections {
		base := "/" + name
		rg.GET(base+"/subscribe", p.handleSubscribe(name, false))
		rg.GET(base+"/:id/subscribe", p.handleSubscribe(name, true))
		rg.GET(base+"/:id/poll", p.handlePoll(name))
		p.publishRoute(rg, http.MethodPost, base+"/:id/events", p.handlePublish(name))
	}
}

// track registers a live subscriber, counted in p.wg until untrack; false
// once the plugin is closed. Every successful track is matched by exactly
// one untrack.
func (p *Plugin) track(s *subscriber) bool {
	p.liveMu.Lock()
	defer p.liveMu.Unlock()
	if p.closed.Load() {
		return false
	}
	p.live[s] = struct{}{}
	p.wg.Add(1)
	return true
}

func (p *Plugin) untrack(s *subscriber) {
	p.liveMu.Lock()
	delete(p.live, s)
	p.liveMu.Unlock()
	s.mu.Lock()
	cause := s.cause
	s.mu.Unlock()
	if errors.Is(cause, ErrSlowSubscriber) {
		p.log.Info("realtime: disconnected a subscriber that could not keep up; it resumes on reconnect",
			"tenant", s.key.Tenant, "collection", s.key.Collection, "id", s.key.ID, "user", s.ident.User)
	}
	p.wg.Done()
}

func (p *Plugin) liveSubscribers() []*subscriber {
	p.liveMu.Lock()
	defer p.liveMu.Unlock()
	out := make([]*subscriber, 0, len(p.live))
	for s := range p.live {
		out = append(out, s)
	}
	return out
}

// Subscribers returns the number of open streams, long polls and records
// followed over WebSockets (one per connection and record).
func (p *Plugin) Subscribers() int {
	p.liveMu.Lock()
	defer p.liveMu.Unlock()
	return len(p.live)
}

// heartbeats sends keepalive comments to every stream at the configured
// interval (one ticker for all), and ends streams and WebSockets whose
// token has expired.
func (p *Plugin) heartbeats() {
	defer p.bg.Done()
	t := time.NewTicker(p.cfg.Heartbeat)
	defer t.Stop()
	pt := time.NewTicker(p.cfg.WSPingInterval)
	defer pt.Stop()
	var presence <-chan time.Time // with a Broker: presence refresh, remote acks expiry
	if p.cluster != nil {
		ct := time.NewTicker(presenceTTL / 3)
		defer ct.Stop()
		presence = ct.C
	}
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.beat(now)
		case <-pt.C:
			p.ws.ping()
		case now := <-presence:
			p.cluster.expireAcks(now)
			p.cluster.refreshPresence()
		}
	}
}

func (p *Plugin) beat(now time.Time) {
	var sched []*subscriber
	for _, s := range p.liveSubscribers() {
		if s.poll || s.transport == viaSocket {
			continue // the WebSocket has its pings and its own expiry (1008)
		}
		if s.expired(now) {
			s.end()
			continue
		}
		sched = s.offer(item{ev: keepaliveEvent}, sched)
	}
	p.writers.addMany(sched)
	p.ws.expire(now)
}

// Close ends every stream and long poll cleanly, refuses new ones and
// publishes, and waits for every goroutine the plugin started. When ctx
// ends first, the remaining connections are closed at once and Close
// returns ctx's error after they are gone.
func (p *Plugin) Close(ctx context.Context) error {
	p.liveMu.Lock()
	already := p.closed.Swap(true)
	p.liveMu.Unlock()
	if already {
		return nil
	}
	close(p.stop)
	p.bg.Wait()
	wsDone := make(chan error, 1)
	go func() { wsDone <- p.ws.close(ctx) }()
	for _, s := range p.liveSubscribers() {
		s.end()
	}
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("realtime: close: %w", ctx.Err())
		for _, s := range p.liveSubscribers() {
			s.close(ErrClosed)
		}
		<-done
	}
	if wsErr := <-wsDone; err == nil {
		err = wsErr
	}
	if p.cluster != nil {
		if cerr := p.cluster.stop(ctx); err == nil {
			err = cerr
		}
	}
	p.cancel()
	p.writers.close()
	return err
}
