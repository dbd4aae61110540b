package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestLoadEnv(t *testing.T) {
	cases := []struct {
		name   string
		env    map[string]string
		port   int
		db     string
		secret string // "" : random, with a dev token
		cors   string // CORSOrigins joined by ","
		dbURL  string
		// maxConns is DBMaxConns (0: unset, the default)
		maxConns int
		wantErr  bool
	}{
		{name: "defaults", env: nil, port: 8080, db: "cms.db", cors: "http://localhost:3000"},
		{name: "all set", env: map[string]string{"PORT": "9090", "DB_PATH": "/tmp/x.db", "JWT_SECRET": "s3cret", "REDIS_URL": "redis://localhost:6379",
			"CORS_ORIGINS": " https://a.example, https://b.example ,"}, port: 9090, db: "/tmp/x.db", secret: "s3cret", cors: "https://a.example,https://b.example"},
		{name: "no CORS", env: map[string]string{"CORS_ORIGINS": "none"}, port: 8080, db: "cms.db", cors: ""},
		{name: "a database URL", env: map[string]string{"DATABASE_URL": " postgres://db/app ", "DB_MAX_CONNS": "4"}, port: 8080, db: "cms.db", cors: "http://localhost:3000",
			dbURL: "postgres://db/app", maxConns: 4},
		{name: "bad DB_MAX_CONNS", env: map[string]string{"DB_MAX_CONNS": "0"}, wantErr: true},
		{name: "bad port", env: map[string]string{"PORT": "http"}, wantErr: true},
		{name: "port out of range", env: map[string]string{"PORT": "70000"}, wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := loadEnv(func(k string) string { return c.env[k] })
			if c.wantErr {
				if err == nil {
					t.Fatalf("loadEnv: no error, want one")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.port != c.port || cfg.app.DBPath != c.db || cfg.app.RedisURL != c.env["REDIS_URL"] || strings.Join(cfg.app.CORSOrigins, ",") != c.cors {
				t.Errorf("got port %d db %q redis %q cors %q", cfg.port, cfg.app.DBPath, cfg.app.RedisURL, cfg.app.CORSOrigins)
			}
			if cfg.app.DatabaseURL != c.dbURL || cfg.app.DBMaxConns != c.maxConns {
				t.Errorf("got DATABASE_URL %q, DB_MAX_CONNS %d; want %q, %d", cfg.app.DatabaseURL, cfg.app.DBMaxConns, c.dbURL, c.maxConns)
			}
			if c.secret != "" {
				if string(cfg.app.JWTSecret) != c.secret || cfg.devToken != "" {
					t.Errorf("JWT_SECRET set: secret %q, dev token %q; want the secret, no dev token", cfg.app.JWTSecret, cfg.devToken)
				}
				return
			}
			if len(cfg.app.JWTSecret) < 32 || cfg.devToken == "" {
				t.Fatalf("JWT_SECRET unset: want a random secret of 32 bytes and a dev token")
			}
			var claims jwt.MapClaims
			if _, err := jwt.ParseWithClaims(cfg.devToken, &claims, func(*jwt.Token) (any, error) { return cfg.app.JWTSecret, nil },
				jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired()); err != nil {
				t.Fatalf("dev token: %v", err)
			}
			exp, _ := claims.GetExpirationTime()
			if claims["sub"] != "dev" || claims["tenant"] != "default" || claims["scope"] != "publish" ||
				exp == nil || time.Until(exp.Time) < 23*time.Hour || time.Until(exp.Time) > 25*time.Hour {
				t.Errorf("dev token claims %v, want sub dev, tenant default, scope publish, 24 h", claims)
			}
		})
	}
	// Two starts without JWT_SECRET do not share a key.
	a, _ := loadEnv(func(string) string { return "" })
	b, _ := loadEnv(func(string) string { return "" })
	if bytes.Equal(a.app.JWTSecret, b.app.JWTSecret) {
		t.Error("two random secrets are equal")
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServe runs the app as main does (environment, a real listener, the
// printed dev URL), then shuts it down as on SIGTERM: the open stream ends
// cleanly and serve returns nil. No token reaches the logs.
func TestServe(t *testing.T) {
	cfg, err := loadEnv(func(k string) string {
		return map[string]string{"DB_PATH": filepath.Join(t.TempDir(), "cms.db"), "ADMIN_ADDR": "127.0.0.1:0"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cfg.app.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var out syncBuffer
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, ln, &out) }()

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: hangGuard}
	base := "http://" + ln.Addr().String()

	resp, err := client.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz %d", resp.StatusCode)
	}

	// The printed URL carries a token that works.
	m := regexp.MustCompile(`http://localhost:(\d+)/\?token=(\S+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no dev URL printed: %q", out.String())
	}
	if port := ln.Addr().(*net.TCPAddr).Port; m[1] != strconv.Itoa(port) {
		t.Errorf("dev URL port %s, want %d", m[1], port)
	}
	tok := m[2]
	req, _ := http.NewRequest("GET", base+"/api/v1/posts", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("list with the dev token: %d", resp.StatusCode)
	}

	// An open stream (token in the query, as a browser sends it).
	sctx, scancel := context.WithTimeout(context.Background(), hangGuard)
	defer scancel()
	sreq, _ := http.NewRequestWithContext(sctx, "GET", base+"/api/v1/posts/subscribe?token="+tok, nil)
	sresp, err := tr.RoundTrip(sreq)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	if sresp.StatusCode != http.StatusOK {
		t.Fatalf("subscribe: %d", sresp.StatusCode)
	}
	br := bufio.NewReader(sresp.Body)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "retry:") {
		t.Fatalf("first line %q %v, want retry:", line, err)
	}

	stop() // as on SIGINT/SIGTERM
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Errorf("stream ended with %v, want a clean end", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if resp, err := client.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("still answering after shutdown")
	}

	l := logs.String()
	if strings.Contains(l, tok) || strings.Contains(l, "token=") {
		t.Errorf("a token reached the logs:\n%s", l)
	}
	if !strings.Contains(l, "path=/api/v1/posts/subscribe") {
		t.Errorf("requests are not logged:\n%s", l)
	}
}
