// Command cms is a small CMS whose posts are live: a gin + GORM app (SQLite
// by default, pure Go, no cgo; PostgreSQL or MySQL with DATABASE_URL) that
// mounts the realtime plugin next to its own REST routes and turns every
// committed write into a record event through the GORM hook.
//
//	go run ./examples/cms
//
// then open the URL it prints. The REST API is under /api/v1/posts (POST,
// GET, GET /:id, PATCH /:id, DELETE /:id, every route needs a token); a
// browser follows a post with
//
//	new EventSource('/api/v1/posts/' + id + '/subscribe?token=' + token)
//
// and every REST ETag header equals the SSE id of the event of that version.
// Posts belong to the token's tenant; a private post is seen only by its author.
//
// Channels (PROTOCOL.md §8): a backend pushes with POST /api/v1/notify
// (publish scope) {"channel":"orders.new","event":"order_created","data":…};
// every channel push is kept in that channel's buffer (memory, or Redis
// Streams with REDIS_URL). Clients:
//
//	// WebSocket: resume a channel after a disconnect from the last envelopeId seen
//	ws.send(JSON.stringify({type: "subscribe", channels: ["orders.new"], since: {"orders.new": lastId}}))
//	// → the missed pushes, then live ones; or {"type":"resync","channel":"orders.new","reason":"buffer-miss"}
//
//	// SSE, wildcards allowed; with one concrete channel the EventSource resumes by itself (Last-Event-ID)
//	const es = new EventSource('/api/v1/channels/subscribe?channels=orders.*,user.' + sub + '&token=' + token)
//	es.addEventListener('order_created', (e) => JSON.parse(e.data)) // the same envelope as on the WebSocket
//
//	// History, oldest first
//	fetch('/api/v1/channels/orders.new/history?limit=50', {headers: {Authorization: 'Bearer ' + token}})
//	// → {"channel":"orders.new","messages":[{"type":"message","envelopeId":…}, …]}
//
// user.<sub> channels are private (channels.go: realtime.PrivateUserChannels):
// the token whose sub is 123 may subscribe to user.123 and read its history;
// any other is refused (a forbidden error frame on the WebSocket, 403 on SSE
// and history), and so is a pattern that could reach another user's channel
// (user.*, user.>, *.123, >). A sub with dots owns the whole rest of the
// name: user.a.b is the channel of "a.b".
//
// Tokens in URLs end up in proxy logs: a page can instead trade its token
// for an HttpOnly, SameSite=Lax cookie (Secure over TLS) with POST
// /api/v1/session (Authorization: Bearer <token>), and then open its
// EventSource and WebSocket without ?token= (session.go). A POST, PATCH or
// DELETE authenticated by that cookie is accepted from this app's own pages
// only (403 otherwise: the plugin's cross-site rule).
//
// Environment:
//
//	PORT        listen port (default 8080)
//	JWT_SECRET  HS256 key of the tokens; unset: a random key, and a dev
//	            token (sub "dev", tenant "default", scope "publish", 24 h) is
//	            printed at start
//	DATABASE_URL postgres://user:pass@host:5432/db?sslmode=disable (or
//	            postgresql://…), or mysql://user:pass@host:3306/db (MySQL,
//	            MariaDB; the driver's own form mysql://user:pass@tcp(host:3306)/db
//	            works too): a database several instances share. Unset: the
//	            SQLite file DB_PATH (one node, or several on one machine)
//	DB_PATH     SQLite database file when DATABASE_URL is unset (default cms.db)
//	DB_MAX_CONNS open database connections of this instance at most (default 10)
//	REDIS_URL   redis://host:port/db: this instance becomes one node of many
//	            sharing that Redis (events, pushes, presence and acks span
//	            every instance; run several on one DATABASE_URL or DB_PATH
//	            behind a load balancer). Unset: one node, everything in memory.
//	CORS_ORIGINS comma-separated origins whose pages may call the publish
//	            API (POST /api/v1/posts/:id/events, /notify, GET /presence)
//	            from a browser; "none" for no CORS (default
//	            http://localhost:3000, a dashboard in development)
//	ADMIN_ADDR  the admin listener: /metrics, /healthz, /readyz, and
//	            /debug/pprof/ with ADMIN_PPROF=true (default 127.0.0.1:9090;
//	            "off" for none)
//	LOG_LEVEL   debug (connection lifecycle), info, warn or error
//	RT_*        the plugin's settings (env.go; the README lists them)
//
// GET /healthz answers 200 once the app is ready. SIGINT or SIGTERM shut it
// down gracefully: open streams end cleanly and the database is closed.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
)

// envConfig is the app's environment, read by loadEnv.
type envConfig struct {
	app  appConfig
	port int
	// devToken is set when JWT_SECRET was not: a token signed with the random key.
	devToken string
	// ops is the admin listener and the log level (env.go).
	ops opsConfig
}

// defaultCORSOrigin is the origin allowed to call the publish API from a
// browser when CORS_ORIGINS is unset: a dashboard in development.
const defaultCORSOrigin = "http://localhost:3000"

// devTokenTTL is how long the printed dev token is valid.
const devTokenTTL = 24 * time.Hour

// loadEnv reads the configuration through getenv (os.Getenv in main).
func loadEnv(getenv func(string) string) (envConfig, error) {
	cfg := envConfig{port: 8080}
	if err := loadOpsEnv(getenv, &cfg); err != nil {
		return cfg, err
	}
	cfg.app.RedisURL = getenv("REDIS_URL")
	cfg.app.CORSOrigins = []string{defaultCORSOrigin}
	if v := strings.TrimSpace(getenv("CORS_ORIGINS")); v == "none" {
		cfg.app.CORSOrigins = nil
	} else if v != "" {
		cfg.app.CORSOrigins = nil
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				cfg.app.CORSOrigins = append(cfg.app.CORSOrigins, o)
			}
		}
	}
	if v := getenv("PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return cfg, fmt.Errorf("PORT must be a port number, got %q", v)
		}
		cfg.port = p
	}
	cfg.app.DatabaseURL = strings.TrimSpace(getenv("DATABASE_URL"))
	if v := getenv("DB_MAX_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return cfg, fmt.Errorf("DB_MAX_CONNS must be a positive number, got %q", v)
		}
		cfg.app.DBMaxConns = n
	}
	cfg.app.DBPath = getenv("DB_PATH")
	if cfg.app.DBPath == "" {
		cfg.app.DBPath = "cms.db"
	}
	if s := getenv("JWT_SECRET"); s != "" {
		cfg.app.JWTSecret = []byte(s)
		return cfg, nil
	}
	cfg.app.JWTSecret = make([]byte, 32)
	_, _ = rand.Read(cfg.app.JWTSecret) // never fails (crypto/rand)
	tok, err := signToken(cfg.app.JWTSecret, "dev", "default", "publish", time.Now().Add(devTokenTTL))
	if err != nil {
		return cfg, fmt.Errorf("dev token: %w", err)
	}
	cfg.devToken = tok
	return cfg, nil
}

// signToken returns an HS256 token for sub in tenant with scope, expiring at exp.
func signToken(secret []byte, sub, tenant, scope string, exp time.Time) (string, error) {
	claims := jwt.MapClaims{"sub": sub, "tenant": tenant, "iat": time.Now().Unix(), "exp": exp.Unix()}
	if scope != "" {
		claims["scope"] = scope
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}

func main() {
	var level slog.LevelVar // LOG_LEVEL, once the environment is read
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: &level}))
	slog.SetDefault(log)
	if os.Getenv(gin.EnvGinMode) == "" {
		gin.SetMode(gin.ReleaseMode)
	}

	cfg, err := loadEnv(os.Getenv)
	if err != nil {
		log.Error("cms: bad configuration", "err", err)
		os.Exit(2)
	}
	level.Set(cfg.ops.logLevel)
	cfg.app.Logger = log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		log.Error("cms: stopped", "err", err)
		os.Exit(1)
	}
}

// run listens on cfg.port and serves until ctx ends.
func run(ctx context.Context, cfg envConfig, out io.Writer) error {
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(cfg.port))
	if err != nil {
		return err
	}
	return serve(ctx, cfg, ln, out)
}

// serve runs the app on ln until ctx ends, then shuts down gracefully: the
// listener closes, every realtime stream ends cleanly, in-flight requests
// finish (10 s at most) and the database is closed.
func serve(ctx context.Context, cfg envConfig, ln net.Listener, out io.Writer) error {
	log := cfg.app.Logger
	if log == nil {
		log = slog.Default()
	}
	a, err := newApp(cfg.app)
	if err != nil {
		_ = ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           a.engine,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// No WriteTimeout and no ReadTimeout: SSE responses are long-lived
		// (the plugin bounds each write with its WriteTimeout, and the
		// bodies it reads with its BodyTimeout).
	}

	addr := ln.Addr().String()
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok {
		addr = "localhost:" + strconv.Itoa(tcp.Port)
	}
	log.Info("cms: listening", "addr", ln.Addr().String(), "db", a.dbName)
	if cfg.devToken != "" {
		// Printed, not logged: a token never appears in a log line.
		fmt.Fprintf(out, "\nJWT_SECRET is not set: using a random key. Dev token (sub \"dev\", tenant \"default\", scope \"publish\", valid %s):\n\n    http://%s/?token=%s\n\n", devTokenTTL, addr, cfg.devToken)
	}

	admin, err := startAdminFor(cfg.ops, a, log)
	if err != nil {
		_ = ln.Close()
		return errors.Join(err, a.Close(context.Background()))
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err = <-served: // the listener failed
	case <-ctx.Done():
		log.Info("cms: shutting down")
	}
	a.ready.Store(false) // healthz: 503 from now on
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// What publishes on its own (the Redis queue consumer, the outbox
	// drainer) stops first, so nothing it handles meets a closed plugin.
	// Then Shutdown closes the listener and waits for busy connections; the
	// plugin's Close, meanwhile, ends the streams they are busy with (and
	// the hijacked ones Shutdown does not see). The database goes last.
	feedErr := a.stopFeeders(sctx)
	rtClosed := make(chan error, 1)
	go func() { rtClosed <- a.rt.Close(sctx) }()
	shutErr := srv.Shutdown(sctx)
	rtErr := <-rtClosed
	closeErr := a.Close(sctx)
	if admin != nil {
		closeErr = errors.Join(closeErr, admin.Close(sctx))
	}
	if err == nil {
		err = <-served
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if err := errors.Join(err, feedErr, shutErr, rtErr, closeErr); err != nil {
		return err
	}
	log.Info("cms: stopped")
	return nil
}
