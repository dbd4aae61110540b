package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	goleak.VerifyTestMain(m)
}

var testSecret = []byte("cms-test-secret-0123456789abcdef")

// hangGuard bounds every request and stream of a test: it only turns a hang
// into a failure, no assertion depends on it.
const hangGuard = 20 * time.Second

// env is the app served by an httptest server, with a client of its own.
type env struct {
	t      *testing.T
	app    *app
	srv    *httptest.Server
	client *http.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, appConfig{DBPath: filepath.Join(t.TempDir(), "cms.db")})
}

// newEnvWith is newEnv on cfg's database (DatabaseURL or DBPath); the
// secret and a silent logger are set here.
func newEnvWith(t *testing.T, cfg appConfig) *env {
	t.Helper()
	cfg.JWTSecret = testSecret
	cfg.Logger = slog.New(slog.DiscardHandler)
	a, err := newApp(cfg)
	if err != nil {
		t.Fatalf("newApp: %v", err)
	}
	srv := httptest.NewServer(a.engine)
	tr := &http.Transport{}
	e := &env{t: t, app: a, srv: srv, client: &http.Client{Transport: tr}}
	// Cleanups run last-registered first: end the streams, then the server.
	t.Cleanup(srv.Close)
	t.Cleanup(tr.CloseIdleConnections)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		if err := a.Close(ctx); err != nil {
			t.Errorf("app.Close: %v", err)
		}
	})
	return e
}

// token signs an HS256 token for sub in tenant (empty: no tenant claim), valid for an hour.
func token(t *testing.T, sub, tenant string) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
	if tenant != "" {
		claims["tenant"] = tenant
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// response is a REST answer, body read.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("body %q is not the expected JSON: %v", r.body, err)
	}
}

// errorCode returns the code of the contract's error JSON.
func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	r.json(t, &e)
	if e.Error.Message == "" {
		t.Errorf("error body %s has no message", r.body)
	}
	return e.Error.Code
}

// do sends a request with the token as a bearer (none when tok is empty).
func (e *env) do(method, path, tok, body string, hdr ...string) response {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// wantStatus fails the test unless r has status want.
func wantStatus(t *testing.T, what string, r response, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("%s: status %d, want %d (body %s)", what, r.status, want, r.body)
	}
}

// create posts a post and returns it with its ETag.
func (e *env) create(tok, title, body string, private bool) (Post, string) {
	e.t.Helper()
	in, _ := json.Marshal(createInput{Title: title, Body: body, Private: private})
	r := e.do("POST", "/api/v1/posts", tok, string(in))
	wantStatus(e.t, "create", r, http.StatusCreated)
	var p Post
	r.json(e.t, &p)
	tag := r.header.Get("ETag")
	if p.ID == "" || tag == "" {
		e.t.Fatalf("create: id %q, ETag %q: want both", p.ID, tag)
	}
	return p, tag
}

// frame is one SSE event as read off the wire.
type frame struct {
	event string
	id    string
	hasID bool
	data  string
}

// recordID is the "id" field of the frame's JSON data (the post's id).
func (f frame) recordID(t *testing.T) string {
	t.Helper()
	var v struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(f.data), &v); err != nil {
		t.Fatalf("%s frame data %q: %v", f.event, f.data, err)
	}
	return v.ID
}

// stream is an SSE response read with a plain line reader.
type stream struct {
	t      *testing.T
	resp   *http.Response
	br     *bufio.Reader
	cancel context.CancelFunc
	once   sync.Once
}

// open sends GET path with the token in ?token= (as a browser's EventSource
// does) and extra header pairs; the response is not checked.
func (e *env) open(path, tok string, hdr ...string) *http.Response {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	u := e.srv.URL + path
	if tok != "" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		u += sep + "token=" + tok
	}
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		cancel()
		e.t.Fatalf("GET %s: %v", path, err)
	}
	e.t.Cleanup(cancel) // the request's context lives as long as its body
	return resp
}

// subscribe opens an SSE stream and requires 200 text/event-stream.
func (e *env) subscribe(path, tok string, hdr ...string) *stream {
	e.t.Helper()
	resp := e.open(path, tok, hdr...)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		e.t.Fatalf("subscribe %s: %d %s, body %s; want 200 text/event-stream", path, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s := &stream{t: e.t, resp: resp, br: bufio.NewReader(resp.Body)}
	e.t.Cleanup(s.close)
	return s
}

// refused opens a stream that must be refused: it returns the answer.
func (e *env) refused(path, tok string, hdr ...string) response {
	e.t.Helper()
	resp := e.open(path, tok, hdr...)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		e.t.Fatalf("subscribe %s: 200 %s, want a refusal", path, b)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (s *stream) close() { s.once.Do(func() { s.resp.Body.Close() }) }

// next returns the next event frame (comments and retry-only blocks are
// skipped); it fails the test if the stream ends first.
func (s *stream) next() frame {
	s.t.Helper()
	f, err := s.read()
	if err != nil {
		s.t.Fatalf("stream %s ended before the next event: %v", s.resp.Request.URL.Path, err)
	}
	return f
}

// read parses the next event frame per the SSE format: fields until a blank line.
func (s *stream) read() (frame, error) {
	var (
		f    frame
		data []string
		any  bool
	)
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			if err == io.EOF && line == "" {
				return f, io.EOF
			}
			return f, err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			if any {
				f.data = strings.Join(data, "\n")
				return f, nil
			}
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // comment (keepalive)
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "event":
			f.event, any = value, true
		case "id":
			f.id, f.hasID, any = value, true, true
		case "data":
			data, any = append(data, value), true
		}
	}
}

// expectEnd reads the stream to its end and fails if an event frame comes first.
func (s *stream) expectEnd() {
	s.t.Helper()
	f, err := s.read()
	if err == nil {
		s.t.Fatalf("got %s %s %s, want the stream to end", f.event, f.id, f.data)
	}
	if !errors.Is(err, io.EOF) {
		s.t.Fatalf("stream ended with %v, want a clean end (EOF)", err)
	}
}

// sameJSON reports whether a and b hold equal JSON values.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%q: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}
