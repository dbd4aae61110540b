package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/ginrealtime/realtime/realtimeprom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The admin listener (ADMIN_ADDR, default 127.0.0.1:9090): what operators
// and their tools read, kept off the public port.
//
//	GET /metrics        Prometheus: the plugin's series (realtimeprom), Go and process
//	GET /healthz        liveness: 200 while the process serves (503 once shutting down)
//	GET /readyz         readiness: 200 when the database answers and the realtime
//	                    engine is reachable, else 503 (take the instance out of the
//	                    load balancer; don't restart it)
//	GET /debug/pprof/   profiles, only with ADMIN_PPROF=true

// adminServer is the running admin listener.
type adminServer struct {
	srv    *http.Server
	ln     net.Listener
	served chan error
}

// startAdmin listens on cfg.adminAddr and serves the admin routes of a.
func startAdmin(cfg opsConfig, a *app, log *slog.Logger) (*adminServer, error) {
	ln, err := net.Listen("tcp", cfg.adminAddr)
	if err != nil {
		return nil, fmt.Errorf("cms: admin listener %s: %w", cfg.adminAddr, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		realtimeprom.New(a.rt, realtimeprom.WithTenants(cfg.tenants)),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			writeStatus(w, http.StatusServiceUnavailable, "shutting down")
			return
		}
		writeStatus(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		status, state := a.readiness(r.Context())
		writeStatus(w, status, state)
	})
	if cfg.pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	s := &adminServer{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		ln:     ln,
		served: make(chan error, 1),
	}
	go func() { s.served <- s.srv.Serve(ln) }()
	log.Info("cms: admin listening", "addr", ln.Addr().String(), "pprof", cfg.pprof)
	return s, nil
}

// startAdminFor starts the admin listener cfg asks for: none without an
// address; the default address taken (another instance on this host) is
// logged and given up, an address named by ADMIN_ADDR that cannot be
// listened on is an error.
func startAdminFor(cfg opsConfig, a *app, log *slog.Logger) (*adminServer, error) {
	if cfg.adminAddr == "" {
		return nil, nil
	}
	s, err := startAdmin(cfg, a, log)
	if err != nil && !cfg.adminSet {
		log.Warn("cms: no admin listener: its default address is taken; set ADMIN_ADDR", "addr", cfg.adminAddr, "err", err)
		return nil, nil
	}
	return s, err
}

// Addr is the admin listener's address.
func (s *adminServer) Addr() string { return s.ln.Addr().String() }

// Close stops the admin listener (after the app: a scrape during the
// shutdown still sees it).
func (s *adminServer) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if serr := <-s.served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// readiness tells whether the app should get traffic: its database
// answers and the realtime engine is reachable.
func (a *app) readiness(ctx context.Context) (int, string) {
	if !a.ready.Load() {
		return http.StatusServiceUnavailable, "shutting down"
	}
	sqlDB, err := a.db.DB()
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = sqlDB.PingContext(pctx)
		cancel()
	}
	if err != nil {
		return http.StatusServiceUnavailable, "database unavailable"
	}
	if a.rt.Health() != nil {
		return http.StatusServiceUnavailable, "degraded"
	}
	return http.StatusOK, "ok"
}

func writeStatus(w http.ResponseWriter, status int, state string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"status": state})
}
