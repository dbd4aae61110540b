package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/hooks/gormhook"
	"github.com/ginrealtime/realtime/redisbroker"
	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"
	gormlogger "gorm.io/gorm/logger"
)

//go:embed index.html
var indexHTML []byte

// appConfig is what newApp needs; main reads it from the environment.
type appConfig struct {
	// JWTSecret is the HS256 key of the tokens. Required.
	JWTSecret []byte
	// DatabaseURL, when set, is the database the posts live in:
	// postgres://… (or postgresql://…) or mysql://… (MySQL, MariaDB), one
	// that several instances share. Default: empty, the SQLite file DBPath.
	DatabaseURL string
	// DBPath is the SQLite database file, used when DatabaseURL is empty.
	DBPath string
	// DBMaxConns caps this instance's open database connections (a
	// shared server's max_connections is shared by every instance).
	// Default: defaultDBMaxConns.
	DBMaxConns int
	// Logger receives every log line of the app and the plugin. Default: slog.Default().
	Logger *slog.Logger
	// RedisURL, when set (redis://host:port/db), makes this instance one
	// node of many sharing that Redis: record events, pushes, presence and
	// acks span every instance. Default: empty, a single node in memory.
	RedisURL string
	// CORSOrigins may call the publish API from a browser
	// (realtime.Config.CORSAllowedOrigins). Default: none.
	CORSOrigins []string
	// Tune, when set, adjusts the plugin's settings (from the environment:
	// env.go). Default: the plugin's defaults.
	Tune func(*realtime.Config)
}

// app is the CMS: a gin engine with the posts API, the realtime plugin
// mounted next to it, and the GORM hook turning writes into events.
type app struct {
	engine *gin.Engine      // every route
	rt     *realtime.Plugin // the realtime plugin
	db     *gorm.DB
	dbName string             // which database, for logs (no password)
	redis  *redis.Client      // nil: a single node
	queue  *redisbroker.Queue // with Redis: consumes the publish queue (redisbroker "The queue")
	hook   *gormhook.Hook
	log    *slog.Logger
	ready  atomic.Bool
	closed sync.Once

	feedersOnce sync.Once
	feedersErr  error
}

// newApp opens the database, migrates it and builds the routes. It listens
// on nothing: serve a.engine, and call Close when done.
func newApp(cfg appConfig) (*app, error) {
	if len(cfg.JWTSecret) == 0 {
		return nil, errors.New("cms: a JWT secret is required")
	}
	dbase, err := openDatabase(cfg.DatabaseURL, cfg.DBPath)
	if err != nil {
		return nil, fmt.Errorf("cms: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &app{log: log, dbName: dbase.name}

	db, err := gorm.Open(dbase.dialector, &gorm.Config{
		NowFunc: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
		Logger: gormlogger.NewSlogLogger(log, gormlogger.Config{
			LogLevel:                  gormlogger.Warn,
			SlowThreshold:             500 * time.Millisecond,
			IgnoreRecordNotFoundError: true,
			ParameterizedQueries:      true, // never log what users wrote
		}),
	})
	if err != nil {
		return nil, fmt.Errorf("cms: open database %s: %w", dbase.name, err)
	}
	a.db = db
	if sqlDB, err := db.DB(); err == nil {
		n := cfg.DBMaxConns
		if n <= 0 {
			n = defaultDBMaxConns
		}
		// Beyond this, queries wait for a connection: a burst of
		// subscribers reconnecting at once (each loads its record) queues
		// here rather than exhausting the server's connections.
		sqlDB.SetMaxOpenConns(n)
		sqlDB.SetMaxIdleConns(n)
	}
	closeDB := func() {
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	}
	rtCfg := realtime.Config{
		JWTSecret: cfg.JWTSecret,
		// The stored post and its version, read in one snapshot (the
		// hook's versions): a subscriber never gets an event older than
		// its snapshot.
		Loader: func(ctx context.Context, ref realtime.Ref) (any, error) {
			return a.hook.Loader(a.loadTx)(ctx, ref)
		},
		Authorize: a.authorize,
		Logger:    log,
		// user.<sub> channels are private to their user; browsers may
		// publish on chat.<room> channels (channels.go).
		AuthorizeChannel: authorizeChannel,
		ClientPublish:    true,
		// Dashboards on these origins may publish and notify from a browser.
		CORSAllowedOrigins: cfg.CORSOrigins,
	}
	if cfg.Tune != nil {
		cfg.Tune(&rtCfg)
	}
	if cfg.RedisURL != "" {
		opts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			closeDB()
			return nil, fmt.Errorf("cms: REDIS_URL: %w", err)
		}
		a.redis = redis.NewClient(opts)
		broker, err := redisbroker.New(a.redis, redisbroker.Config{Logger: log})
		if err != nil {
			_ = a.redis.Close()
			closeDB()
			return nil, fmt.Errorf("cms: redis broker: %w", err)
		}
		rtCfg.Broker = broker
	}
	rt, err := realtime.New(rtCfg)
	if err != nil {
		if a.redis != nil {
			_ = a.redis.Close()
		}
		closeDB()
		return nil, fmt.Errorf("cms: realtime: %w", err)
	}
	a.rt = rt

	// Every committed write to posts becomes a record event with its
	// version, taken in the write's own transaction, kept exactly as
	// committed in an outbox row: published after commit, or, when it
	// cannot be then (an outage, a crash), by whichever instance drains
	// the row, in order. The hook goes on the root *gorm.DB before
	// anything else uses it.
	a.hook = gormhook.New(rt, gormhook.Watch(&Post{}, collection))
	if err := db.Use(a.hook); err != nil {
		a.hook = nil
		_ = a.Close(context.Background())
		return nil, fmt.Errorf("cms: gorm hook: %w", err)
	}
	rt.AddStatsSource(a.hook) // Stats.Outbox
	if err := db.AutoMigrate(&Post{}); err != nil {
		_ = a.Close(context.Background())
		return nil, fmt.Errorf("cms: migrate: %w", err)
	}

	if a.redis != nil {
		// Other backends' publish requests queued on the stream rt:queue.
		q, err := redisbroker.NewQueue(a.redis, rt, redisbroker.QueueConfig{Logger: log})
		if err == nil {
			err = q.Start()
		}
		if err != nil {
			_ = a.Close(context.Background())
			return nil, fmt.Errorf("cms: redis queue: %w", err)
		}
		a.queue = q
		rt.AddStatsSource(q) // Stats.Queue
	}

	a.engine = a.routes()
	a.ready.Store(true)
	return a, nil
}

// defaultDBMaxConns is appConfig.DBMaxConns' default: three instances stay
// well under PostgreSQL's default max_connections (100).
const defaultDBMaxConns = 10

// sqliteDSN adds the connection settings to a database path: WAL so that
// readers never wait for the writer, a busy timeout, and transactions that
// take the write lock up front (no upgrade deadlocks).
func sqliteDSN(path string) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&" // the path already carries driver parameters
	}
	return path + sep + "_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)&_txlock=immediate"
}

func (a *app) routes() *gin.Engine {
	r := gin.New()
	_ = r.SetTrustedProxies(nil)
	r.Use(a.recoverer(), a.accessLog())
	r.NoRoute(notFound)

	r.GET("/healthz", a.healthz)
	r.HEAD("/healthz", a.healthz)
	r.GET("/", func(c *gin.Context) {
		c.Header("Cache-Control", "no-cache")
		c.Data(http.StatusOK, "text/html; charset=utf-8", indexHTML)
	})

	// The browser client, outside the authenticated group: a page loads it
	// with <script type="module"> (no token); ETag and 304 from the plugin.
	r.GET("/api/v1/realtime.js", a.rt.ClientHandler())
	r.HEAD("/api/v1/realtime.js", a.rt.ClientHandler())

	api := r.Group("/api/v1", a.rt.Authenticate())
	// A page trades its token for an HttpOnly cookie (session.go).
	api.POST("/session", a.createSession)
	api.DELETE("/session", a.deleteSession)
	api.GET("/posts", a.listPosts)
	api.POST("/posts", a.createPost)
	api.GET("/posts/:id", a.getPost)
	api.PATCH("/posts/:id", a.updatePost)
	api.DELETE("/posts/:id", a.deletePost)
	api.GET("/stats", a.getStats) // realtime.Stats (publish scope)
	// GET /posts/subscribe, /posts/:id/subscribe, /posts/:id/poll and
	// POST /posts/:id/events, next to the app's own /posts/:id (gin's router
	// does not backtrack, so the generic rt.Register would not reach them).
	a.rt.RegisterCollection(api, collection)
	return r
}

// healthz answers 200 while the app is ready (its database reachable), 503
// once it is shutting down.
func (a *app) healthz(c *gin.Context) {
	if !a.ready.Load() {
		errorJSON(c, http.StatusServiceUnavailable, "unavailable", "shutting down")
		return
	}
	sqlDB, err := a.db.DB()
	if err == nil {
		ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
		err = sqlDB.PingContext(ctx)
		cancel()
	}
	if err != nil {
		a.log.Warn("cms: health check failed", "err", err)
		errorJSON(c, http.StatusServiceUnavailable, "unavailable", "database unavailable")
		return
	}
	if err := a.rt.Health(); err != nil {
		// Reads still work; writes answer 503 until the broker is back.
		a.log.Warn("cms: health check: degraded", "err", err)
		c.JSON(http.StatusServiceUnavailable, gin.H{"status": "degraded", "error": "realtime engine unavailable"})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// Close ends every realtime stream and closes the database. It is safe to
// call more than once; the first call's outcome is returned only then.
func (a *app) Close(ctx context.Context) error {
	var err error
	a.closed.Do(func() {
		a.ready.Store(false)
		err = errors.Join(a.stopFeeders(ctx), a.rt.Close(ctx))
		if a.redis != nil {
			err = errors.Join(err, a.redis.Close())
		}
		if sqlDB, dbErr := a.db.DB(); dbErr == nil {
			err = errors.Join(err, sqlDB.Close())
		}
	})
	return err
}

// stopFeeders stops what publishes through rt on its own, the Redis queue
// consumer and the outbox drainer, before rt closes. Once; later calls
// return the first outcome.
func (a *app) stopFeeders(ctx context.Context) error {
	a.feedersOnce.Do(func() {
		if a.queue != nil {
			a.feedersErr = a.queue.Close(ctx)
		}
		if a.hook != nil {
			a.feedersErr = errors.Join(a.feedersErr, a.hook.Close(ctx))
		}
	})
	return a.feedersErr
}

// accessLog logs each request through slog. Only the path is logged, never
// the query: browsers' EventSource carries its token in ?token=.
func (a *app) accessLog() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		level := slog.LevelInfo
		if c.Request.URL.Path == "/healthz" {
			level = slog.LevelDebug
		}
		a.log.Log(c.Request.Context(), level, "request",
			"method", c.Request.Method,
			"path", c.Request.URL.Path,
			"status", c.Writer.Status(),
			"duration", time.Since(start),
			"remote", c.ClientIP(),
		)
	}
}

// recoverer turns a panic into a logged 500 (gin's own Recovery would dump
// the request line, token included).
func (a *app) recoverer() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			a.log.Error("cms: panic", "path", c.Request.URL.Path, "panic", v, "stack", string(debug.Stack()))
			if c.Writer.Written() {
				c.Abort()
				return
			}
			errorJSON(c, http.StatusInternalServerError, "internal", "internal error")
		}()
		c.Next()
	}
}
