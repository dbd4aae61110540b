package realtime

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

func corsRequest(t *testing.T, method, url, origin, tok, body string, preflight bool) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if preflight {
		req.Header.Set("Access-Control-Request-Method", http.MethodPost)
		req.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// The publish endpoints answer CORS for the allowed origins only
// (PROTOCOL.md §8): a preflight from a dashboard's origin succeeds, one from
// another origin gets no CORS headers.
func TestCORSPublishEndpoints(t *testing.T) {
	_, srv := newTestServer(t, Config{CORSAllowedOrigins: []string{"https://dash.example"}})
	_, plain := newTestServer(t, Config{})
	events := "/api/v1/posts/1/events"
	body := `{"event":"changed","data":{"id":"1"}}`
	pub := publisherToken(t)
	type corsCase struct {
		name      string
		srv       string
		method    string
		origin    string
		tok       string
		preflight bool
		status    int // 0: anything but 403
		acao      string
	}
	cases := []corsCase{
		{"preflight from an allowed origin", srv.URL, http.MethodOptions, "https://dash.example", "", true, http.StatusNoContent, "https://dash.example"},
		{"preflight from another origin", srv.URL, http.MethodOptions, "https://evil.example", "", true, http.StatusForbidden, ""},
		{"publish from an allowed origin", srv.URL, http.MethodPost, "https://dash.example", pub, false, 0, "https://dash.example"},
		{"publish from another origin", srv.URL, http.MethodPost, "https://evil.example", pub, false, http.StatusForbidden, ""},
		{"publish without Origin (a backend)", srv.URL, http.MethodPost, "", pub, false, 0, ""},
		{"no CORS configured: preflight", plain.URL, http.MethodOptions, "https://dash.example", "", true, http.StatusNotFound, ""},
	}
	for _, path := range []string{"/api/v1/notify", "/api/v1/presence", "/api/v1/presence/u1"} {
		cases = append(cases, corsCase{"preflight of " + path, srv.URL, http.MethodOptions, "https://dash.example", "", true, http.StatusNoContent, "https://dash.example"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url := c.srv + events
			if p, ok := strings.CutPrefix(c.name, "preflight of "); ok {
				url = c.srv + p
			}
			resp := corsRequest(t, c.method, url, c.origin, c.tok, body, c.preflight)
			if c.status != 0 && resp.StatusCode != c.status {
				t.Errorf("status %d, want %d", resp.StatusCode, c.status)
			}
			if c.status == 0 && (resp.StatusCode == http.StatusForbidden || resp.StatusCode >= 300) {
				t.Errorf("status %d, want success", resp.StatusCode)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != c.acao {
				t.Errorf("Access-Control-Allow-Origin %q, want %q", got, c.acao)
			}
			if c.acao == "" {
				for k := range resp.Header {
					if strings.HasPrefix(k, "Access-Control-") {
						t.Errorf("CORS header %s on a refused request", k)
					}
				}
			}
			if c.preflight && c.acao != "" {
				if m := resp.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "POST") {
					t.Errorf("Access-Control-Allow-Methods %q", m)
				}
				if h := strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers")); !strings.Contains(h, "authorization") {
					t.Errorf("Access-Control-Allow-Headers %q", h)
				}
				if resp.Header.Get("Access-Control-Allow-Credentials") != "" {
					t.Error("credentials allowed")
				}
			}
		})
	}
}

func TestCORSConfig(t *testing.T) {
	for _, origins := range [][]string{{"dash.example"}, {""}, {"ftp://dash.example"}} {
		if _, err := New(Config{JWTSecret: testSecret, CORSAllowedOrigins: origins}); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%q: %v, want ErrInvalidConfig", origins, err)
		}
	}
	for _, origins := range [][]string{{"*"}, {"https://a.example", "http://localhost:3000"}} {
		rt, err := New(Config{JWTSecret: testSecret, CORSAllowedOrigins: origins})
		if err != nil {
			t.Errorf("%q: %v", origins, err)
			continue
		}
		if err := rt.Close(t.Context()); err != nil {
			t.Error(err)
		}
	}
}

// Behind the app's Authenticate middleware (as in examples/cms), a
// preflight carries no credentials and must still reach the CORS handler;
// any other request without a token stays 401.
func TestCORSPreflightThroughAuthenticate(t *testing.T) {
	rt, err := New(Config{JWTSecret: testSecret, CORSAllowedOrigins: []string{"https://dash.example"}})
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	api := r.Group("/api/v1", rt.Authenticate())
	rt.RegisterCollection(api, "posts")
	srv := httptest.NewServer(r)
	defer closeAll(t, rt, srv)
	if resp := corsRequest(t, http.MethodOptions, srv.URL+"/api/v1/notify", "https://dash.example", "", "", true); resp.StatusCode != http.StatusNoContent ||
		resp.Header.Get("Access-Control-Allow-Origin") != "https://dash.example" {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := corsRequest(t, http.MethodOptions, srv.URL+"/api/v1/notify", "https://dash.example", "", "", false); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("OPTIONS that is no preflight: %d, want 401", resp.StatusCode)
	}
	if resp := corsRequest(t, http.MethodPost, srv.URL+"/api/v1/notify", "https://dash.example", "", `{"event":"e"}`, false); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("POST without token: %d, want 401", resp.StatusCode)
	}
}
