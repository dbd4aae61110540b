package realtime

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"
)

// TestClientHandler checks what GET /realtime.js answers: the embedded
// module with its type, a strong SHA-256 ETag, no-cache, and 304 to a
// matching If-None-Match (weak comparison, lists, *).
func TestClientHandler(t *testing.T) {
	rt, err := New(Config{JWTSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close(t.Context()) })
	r := gin.New()
	r.GET("/api/v1/realtime.js", rt.ClientHandler())
	r.HEAD("/api/v1/realtime.js", rt.ClientHandler())

	sum := sha256.Sum256(clientJS)
	wantTag := `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`
	if len(clientJS) == 0 || !bytes.Contains(clientJS, []byte("export class Realtime")) {
		t.Fatal("client/realtime.js is not embedded")
	}
	if src, tag := ClientJS(); tag != wantTag || !bytes.Equal(src, clientJS) {
		t.Fatalf("ClientJS() = %d bytes, %s; want %s", len(src), tag, wantTag)
	}

	for _, tc := range []struct {
		name, method, inm string
		status            int
		body              bool
	}{
		{"plain GET", http.MethodGet, "", http.StatusOK, true},
		{"HEAD", http.MethodHead, "", http.StatusOK, false},
		{"matching If-None-Match", http.MethodGet, wantTag, http.StatusNotModified, false},
		{"weak form matches", http.MethodGet, "W/" + wantTag, http.StatusNotModified, false},
		{"in a list", http.MethodGet, `"old", ` + wantTag, http.StatusNotModified, false},
		{"star", http.MethodGet, "*", http.StatusNotModified, false},
		{"stale tag", http.MethodGet, `"stale"`, http.StatusOK, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "/api/v1/realtime.js", nil)
			if tc.inm != "" {
				req.Header.Set("If-None-Match", tc.inm)
			}
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, req)
			res := rec.Result()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
			if got := res.Header.Get("ETag"); got != wantTag {
				t.Errorf("ETag %q, want %q", got, wantTag)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q, want no-cache", got)
			}
			if tc.status == http.StatusOK {
				if got := res.Header.Get("Content-Type"); got != "text/javascript; charset=utf-8" {
					t.Errorf("Content-Type %q", got)
				}
				if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
					t.Errorf("X-Content-Type-Options %q", got)
				}
			}
			if tc.body && !bytes.Equal(body, clientJS) {
				t.Errorf("body: %d bytes, want the %d of client/realtime.js", len(body), len(clientJS))
			}
			if !tc.body && len(body) != 0 {
				t.Errorf("body of %d bytes, want none", len(body))
			}
		})
	}
}
