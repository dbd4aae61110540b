package realtime

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"
)

// TestMaxConnsPerIP: one client IP holds at most MaxConnsPerIP
// connections across record, collection and channel streams, long polls
// and WebSockets (429, or 4429 on the WebSocket); every slot is given back
// exactly once when its connection ends, on every transport.
func TestMaxConnsPerIP(t *testing.T) {
	for _, hijack := range []bool{true, false} {
		name := "hijacked"
		if !hijack {
			name = "on the handler"
		}
		t.Run(name, func(t *testing.T) {
			rt, srv := newTestServer(t, Config{MaxConnsPerIP: 3, DisableHijack: !hijack, Loader: identityEcho})
			tok := userToken(t, "u1")
			held := func() int { return rt.ips.count("127.0.0.1") }
			refusedPoll := func() {
				t.Helper()
				code, _, body := pollGet(t, srv.URL, pollPath("1", "timeout", "0"), tok, "")
				if code != http.StatusTooManyRequests || errorCode(t, body) != "too_many_connections" {
					t.Fatalf("poll over the cap: %d %s", code, body)
				}
			}
			for round := range 3 {
				rec := openStream(t, nil, recordURL(srv, "1"), tok, nil)
				col := openStream(t, nil, collectionURL(srv), tok, nil)
				ch := openStream(t, nil, chanSSEURL(srv, "news"), tok, nil)
				if held() != 3 {
					t.Fatalf("round %d: %d slots held, want 3", round, held())
				}
				refusedPoll()
				for _, u := range []string{chanSSEURL(srv, "news"), pushesURL(srv, ""), srv.URL + "/api/v1/pushes/poll?timeout=0"} {
					resp := getWith(t, u, tok, nil)
					resp.Body.Close()
					if resp.StatusCode != http.StatusTooManyRequests {
						t.Fatalf("a fourth stream (%s): %d", u, resp.StatusCode)
					}
				}
				expectRefusal(t, srv, tok, nil, closeTooManyConnections, "too_many_connections")
				// One stream ends: a poll and then a WebSocket fit again.
				rec.close()
				waitFor(t, "the record stream's slot", func() bool { return held() == 2 })
				if code, _, body := pollGet(t, srv.URL, pollPath("1", "timeout", "0"), tok, ""); code != 200 {
					t.Fatalf("poll: %d %s", code, body)
				}
				if held() != 2 {
					t.Fatalf("after a poll: %d slots held, want 2", held())
				}
				ws, _ := connectWS(t, srv, tok)
				if held() != 3 {
					t.Fatalf("with a WebSocket: %d slots held, want 3", held())
				}
				refusedPoll()
				ws.Close()
				col.close()
				ch.close()
				waitFor(t, "every slot back", func() bool { return held() == 0 })
			}
			rt.ips.mu.Lock()
			n := len(rt.ips.n)
			rt.ips.mu.Unlock()
			if n != 0 {
				t.Fatalf("%d addresses still counted", n)
			}
		})
	}
}

// TestMaxConnsPerIPTrustedProxies: the client IP is gin's ClientIP, so an
// X-Forwarded-For counts only from a proxy the engine trusts.
func TestMaxConnsPerIPTrustedProxies(t *testing.T) {
	for _, tc := range []struct {
		name    string
		proxies []string
		perIP   bool // each forwarded address has a cap of its own
	}{
		{"trusted proxy", []string{"127.0.0.1"}, true},
		{"no trusted proxy", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt, err := New(Config{JWTSecret: testSecret, MaxConnsPerIP: 1})
			if err != nil {
				t.Fatal(err)
			}
			r := gin.New()
			if err := r.SetTrustedProxies(tc.proxies); err != nil {
				t.Fatal(err)
			}
			rt.RegisterCollection(r.Group("/api/v1"), "posts")
			srv := httptest.NewServer(r)
			t.Cleanup(func() { closeAll(t, rt, srv) })
			tok := userToken(t, "u1")
			openStream(t, nil, chanSSEURL(srv, "news"), tok, http.Header{"X-Forwarded-For": {"203.0.113.1"}})
			resp := getWith(t, chanSSEURL(srv, "news"), tok, http.Header{"X-Forwarded-For": {"203.0.113.2"}})
			if got := resp.StatusCode == http.StatusOK; got != tc.perIP {
				t.Fatalf("another forwarded address: %d", resp.StatusCode)
			}
			resp = getWith(t, chanSSEURL(srv, "news"), tok, http.Header{"X-Forwarded-For": {"203.0.113.1"}})
			if resp.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("the same forwarded address: %d", resp.StatusCode)
			}
		})
	}
}

// TestMaxConnsPerIPConfig: off by default, never negative.
func TestMaxConnsPerIPConfig(t *testing.T) {
	if _, err := newNoPanic(Config{JWTSecret: testSecret, MaxConnsPerIP: -1}); err == nil {
		t.Error("a negative MaxConnsPerIP accepted")
	}
	rt, err := New(Config{JWTSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(context.Background())
	if rt.cfg.MaxConnsPerIP != 0 || rt.ips.max != 0 {
		t.Fatalf("default MaxConnsPerIP %d", rt.cfg.MaxConnsPerIP)
	}
}
