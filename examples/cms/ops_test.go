package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
)

func TestLoadOpsEnv(t *testing.T) {
	env := map[string]string{
		"ADMIN_ADDR": "127.0.0.1:9191", "ADMIN_PPROF": "true", "METRICS_TENANTS": "5", "LOG_LEVEL": "debug",
		"RT_QUEUE_SIZE": "64", "RT_BUFFER_SIZE": "50", "RT_BUFFER_MAX_AGE": "10m", "RT_BUFFER_MEMORY": "1048576",
		"RT_HEARTBEAT": "15s", "RT_WS_SEND_QUEUE": "32", "RT_WS_MAX_CONNS_PER_USER": "4", "RT_DISABLE_HIJACK": "true",
		"RT_WRITERS": "3", "RT_WRITERS_AT_ONCE": "2", "RT_WS_PING_INTERVAL": "10s", "RT_WS_PONG_WAIT": "30s",
	}
	cfg, err := loadEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if o := cfg.ops; o.adminAddr != "127.0.0.1:9191" || !o.pprof || o.tenants != 5 || o.logLevel != slog.LevelDebug {
		t.Errorf("ops %+v", o)
	}
	var rc realtime.Config
	cfg.app.Tune(&rc)
	if rc.QueueSize != 64 || rc.BufferSize != 50 || rc.BufferMaxAge != 10*time.Minute || rc.BufferMemory != 1<<20 ||
		rc.Heartbeat != 15*time.Second || rc.WSSendQueue != 32 || rc.WSMaxConnsPerUser != 4 || !rc.DisableHijack ||
		rc.Writers != 3 || rc.WritersAtOnce != 2 || rc.WSPingInterval != 10*time.Second || rc.WSPongWait != 30*time.Second {
		t.Errorf("tuned config %+v", rc)
	}

	cfg, err = loadEnv(func(k string) string { return map[string]string{"ADMIN_ADDR": "off"}[k] })
	if err != nil || cfg.ops.adminAddr != "" || cfg.ops.logLevel != slog.LevelInfo {
		t.Errorf("ADMIN_ADDR=off: %+v %v", cfg.ops, err)
	}
	if cfg, _ := loadEnv(func(string) string { return "" }); cfg.ops.adminAddr != defaultAdminAddr {
		t.Errorf("default admin address %q", cfg.ops.adminAddr)
	}
	for k, v := range map[string]string{
		"RT_QUEUE_SIZE": "many", "RT_HEARTBEAT": "30", "RT_BUFFER_MEMORY": "1MiB", "RT_DISABLE_HIJACK": "perhaps",
		"ADMIN_PPROF": "yes please", "METRICS_TENANTS": "-1", "LOG_LEVEL": "loud",
	} {
		if _, err := loadEnv(func(key string) string { return map[string]string{k: v}[key] }); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: error %v, want one naming it", k, v, err)
		}
	}
	// Values out of range are the plugin's to refuse.
	a, err := newApp(appConfig{JWTSecret: testSecret, DBPath: t.TempDir() + "/x.db", Logger: slog.New(slog.DiscardHandler),
		Tune: func(c *realtime.Config) { c.QueueSize = -1 }})
	if err == nil {
		_ = a.Close(context.Background())
		t.Fatal("a negative queue size was accepted")
	}
}

// get answers GET url (no token) with its status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminListener(t *testing.T) {
	e := newEnv(t)
	for _, pprofOn := range []bool{false, true} {
		admin, err := startAdmin(opsConfig{adminAddr: "127.0.0.1:0", pprof: pprofOn, tenants: 2}, e.app, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		base := "http://" + admin.Addr()
		s := e.subscribe("/api/v1/posts/subscribe", token(t, "u1", "acme"))
		if code, body := get(t, base+"/metrics"); code != 200 ||
			!strings.Contains(body, `realtime_connections{transport="sse_collection"} 1`) ||
			!strings.Contains(body, `realtime_tenant_connections{tenant="acme"} 1`) ||
			!strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_open_fds") {
			t.Errorf("metrics: %d\n%s", code, body)
		}
		s.close()
		if code, body := get(t, base+"/healthz"); code != 200 || !strings.Contains(body, `"ok"`) {
			t.Errorf("healthz: %d %s", code, body)
		}
		if code, body := get(t, base+"/readyz"); code != 200 || !strings.Contains(body, `"ok"`) {
			t.Errorf("readyz: %d %s", code, body)
		}
		if code, _ := get(t, base+"/debug/pprof/cmdline"); (code == 200) != pprofOn {
			t.Errorf("pprof %v: cmdline answers %d", pprofOn, code)
		}
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		if err := admin.Close(ctx); err != nil {
			t.Error(err)
		}
		cancel()
	}
	admin, err := startAdmin(opsConfig{adminAddr: "127.0.0.1:0"}, e.app, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	e.app.ready.Store(false) // shutting down
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, "http://"+admin.Addr()+p); code != http.StatusServiceUnavailable {
			t.Errorf("%s while shutting down: %d, want 503", p, code)
		}
	}
}

func TestStatsEndpoint(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/api/v1/stats", token(t, "u1", ""), "")
	wantStatus(t, "stats without the publish scope", r, http.StatusForbidden)
	if r.errorCode(t) != "forbidden" {
		t.Errorf("body %s", r.body)
	}
	wantStatus(t, "stats without a token", e.do("GET", "/api/v1/stats", "", ""), http.StatusUnauthorized)

	tok := token(t, "u1", "")
	e.create(tok, "hello", "world", false)
	pub, err := signToken(testSecret, "ops", "default", "publish", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	r = e.do("GET", "/api/v1/stats", pub, "")
	wantStatus(t, "stats", r, http.StatusOK)
	var s realtime.Stats
	r.json(t, &s)
	if s.Published.Events != 1 || !s.Broker.Up || s.AuthFailures.Missing != 1 || s.Outbox.Outboxes != 1 {
		t.Errorf("stats %+v", s)
	}
	var m map[string]json.RawMessage
	r.json(t, &m)
	for _, k := range []string{"connections", "delivery", "resyncs", "disconnects", "broker", "outbox", "queue"} {
		if _, ok := m[k]; !ok {
			t.Errorf("stats JSON lacks %q", k)
		}
	}
}

// TestAdminAddressTaken: the default address taken (another instance on
// this host) is given up with a warning; one named by ADMIN_ADDR is an error.
func TestAdminAddressTaken(t *testing.T) {
	e := newEnv(t)
	taken, err := startAdmin(opsConfig{adminAddr: "127.0.0.1:0"}, e.app, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close(context.Background())
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	s, err := startAdminFor(opsConfig{adminAddr: taken.Addr()}, e.app, log)
	if s != nil || err != nil || !strings.Contains(logs.String(), "no admin listener") {
		t.Errorf("default address taken: %v %v, logs %q", s, err, logs.String())
	}
	if s, err := startAdminFor(opsConfig{adminAddr: taken.Addr(), adminSet: true}, e.app, log); s != nil || err == nil {
		t.Errorf("ADMIN_ADDR taken: %v %v, want an error", s, err)
	}
	if s, err := startAdminFor(opsConfig{}, e.app, log); s != nil || err != nil {
		t.Errorf("no address: %v %v", s, err)
	}
}
