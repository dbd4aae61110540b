package realtime

// Helpers of the streaming behaviour tests (resume, hand-over, fan-out,
// HTTP/2, buffer). They build on helpers_test.go (mintToken, newTestServer,
// recordStore, frameReader).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

// rec is the record the streaming tests publish: distinct (id, n) give
// distinct JSON, hence distinct ETags.
type rec struct {
	ID string `json:"id"`
	N  int    `json:"n"`
}

func recJSON(id string, n int) string { return fmt.Sprintf(`{"id":%q,"n":%d}`, id, n) }

// env is a running plugin with its record store.
type env struct {
	rt    *Plugin
	srv   *httptest.Server
	store *recordStore
	tok   string
}

// newEnv starts newTestServer with cfg; with loader, cfg.Loader is the
// env's record store.
func newEnv(t *testing.T, cfg Config, loader bool) *env {
	t.Helper()
	e := &env{store: newRecordStore()}
	if loader {
		cfg.Loader = e.store.Load
	}
	e.rt, e.srv = newTestServer(t, cfg)
	e.tok = userToken(t, "u1")
	return e
}

// put stores version n of posts/id and publishes it as changed, as an app
// does after a committed write; it returns the version's ETag.
func (e *env) put(t testing.TB, id string, n int) string {
	t.Helper()
	r := rec{ID: id, N: n}
	e.store.put(Ref{Collection: "posts", ID: id}, r)
	etag, err := e.rt.Changed(context.Background(), "posts", id, r)
	if err != nil {
		t.Fatalf("Changed(%s, %d): %v", id, n, err)
	}
	return etag
}

// del removes posts/id and publishes its deletion; it returns the tombstone ETag.
func (e *env) del(t testing.TB, id string) string {
	t.Helper()
	e.store.del(Ref{Collection: "posts", ID: id})
	etag, err := e.rt.Deleted(context.Background(), "posts", id)
	if err != nil {
		t.Fatalf("Deleted(%s): %v", id, err)
	}
	return etag
}

func recordURL(srv *httptest.Server, id string) string {
	return srv.URL + "/api/v1/posts/" + id + "/subscribe"
}

func collectionURL(srv *httptest.Server) string { return srv.URL + "/api/v1/posts/subscribe" }

// stream is an open SSE response.
type stream struct {
	resp   *http.Response
	fr     *frameReader
	cancel context.CancelFunc
}

// close drops the connection from the client side.
func (s *stream) close() {
	s.cancel()
	s.resp.Body.Close()
}

// dial sends an SSE GET with a bearer token and optional Last-Event-ID
// (none when ""), without failing a test: for goroutines.
func dial(ctx context.Context, client *http.Client, url, tok, lastID string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	return client.Do(req)
}

// openStream subscribes and requires a 200 text/event-stream answer whose
// first block is the retry field. Cleanup closes it.
func openStream(t testing.TB, client *http.Client, url, tok string, hdr http.Header) *stream {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	s := &stream{resp: resp, fr: newFrameReader(resp.Body), cancel: cancel}
	t.Cleanup(s.close)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q, want text/event-stream", ct)
	}
	guard := time.AfterFunc(hangGuard, func() { resp.Body.Close() })
	f, err := s.fr.next()
	guard.Stop()
	if err != nil || f.Retry == "" || f.isEvent() {
		t.Fatalf("first block = %+v, %v; want the retry field alone", f, err)
	}
	return s
}

// frame is an expected SSE event block; Data "" is not compared.
type frame struct {
	Event, ID, Data string
}

func (f frame) String() string { return fmt.Sprintf("{%s id=%s %s}", f.Event, f.ID, f.Data) }

func framesOf(fs []sseFrame) []frame {
	out := make([]frame, len(fs))
	for i, f := range fs {
		out[i] = frame{Event: f.Event, ID: f.ID, Data: f.Data}
	}
	return out
}

// sameFrames compares got with want (Data only where want has it), and
// requires a resync to have no id line.
func sameFrames(got []sseFrame, want []frame) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %d frames %v, want %v", len(got), framesOf(got), want)
	}
	for i, w := range want {
		g := got[i]
		if g.Event != w.Event || g.ID != w.ID || (w.Data != "" && g.Data != w.Data) {
			return fmt.Errorf("frame %d = %v, want %v (all: %v)", i, framesOf(got[i : i+1])[0], w, framesOf(got))
		}
		if w.Event == EventResync && g.HasID {
			return fmt.Errorf("frame %d: resync carries an id line", i)
		}
	}
	return nil
}

// expectFrames reads len(want) event blocks and compares them.
func expectFrames(t testing.TB, s *stream, want ...frame) {
	t.Helper()
	if len(want) == 0 {
		return
	}
	if err := sameFrames(readFrames(t, s.fr, len(want)), want); err != nil {
		t.Fatal(err)
	}
}

const resyncData = `{"reason":"buffer-miss"}`

var resyncFrame = frame{Event: EventResync, Data: resyncData}

// killListener wraps a listener so a test can cut every connection it
// accepted (the server side of a network loss) and hold new ones back.
type killListener struct {
	net.Listener
	mu      sync.Mutex
	conns   []net.Conn
	accepts int
	gate    chan struct{} // closed: accepting; nil channel state handled by hold/release
}

func newKillListener(l net.Listener) *killListener {
	g := make(chan struct{})
	close(g)
	return &killListener{Listener: l, gate: g}
}

func (l *killListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	gate := l.gate
	l.mu.Unlock()
	<-gate // hold: the client's connection waits in the accept queue
	l.mu.Lock()
	l.conns = append(l.conns, c)
	l.accepts++
	l.mu.Unlock()
	return c, nil
}

// hold makes the next accepted connections wait until release.
func (l *killListener) hold() {
	l.mu.Lock()
	l.gate = make(chan struct{})
	l.mu.Unlock()
}

func (l *killListener) release() {
	l.mu.Lock()
	select {
	case <-l.gate:
	default:
		close(l.gate)
	}
	l.mu.Unlock()
}

// kill closes every connection accepted so far.
func (l *killListener) kill() {
	l.mu.Lock()
	cs := l.conns
	l.conns = nil
	l.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
}

func (l *killListener) Close() error {
	l.release()
	return l.Listener.Close()
}

func (l *killListener) accepted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepts
}

// newPluginServer starts a plugin with cfg (JWTSecret defaults to
// testSecret) on the same routes as newTestServer, on an unstarted server
// that setup may adjust (listener, TLS, HTTP/2) and then starts; wrap, when
// set, wraps the router. Cleanup closes the plugin, then the server.
func newPluginServer(t testing.TB, cfg Config, wrap func(http.Handler) http.Handler, start func(*httptest.Server)) (*Plugin, *httptest.Server) {
	t.Helper()
	if len(cfg.JWTSecret) == 0 && cfg.JWTKeyfunc == nil {
		cfg.JWTSecret = testSecret
	}
	rt, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r := gin.New()
	api := r.Group("/api/v1")
	api.GET("/posts/:id", appPostHandler)
	rt.RegisterCollection(api, "posts")
	var h http.Handler = r
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewUnstartedServer(h)
	if start == nil {
		srv.Start()
	} else {
		start(srv)
	}
	t.Cleanup(func() { closeAll(t, rt, srv) })
	return rt, srv
}

// waitFor polls cond until it holds, failing t after hangGuard. It waits for
// a state the test cannot be told about through a channel; no timing is
// asserted.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// lineReader reads SSE event blocks fast (bufio lines, LF only, as the
// plugin writes them) for goroutines that must not call t.Fatal: big
// payloads and many subscribers.
type lineReader struct {
	br *bufio.Reader
}

// next returns the next event block (retry-only and comment-only blocks are
// skipped unless comments is set).
func (r *lineReader) next(comments bool) (sseFrame, error) {
	var f sseFrame
	var data []string
	started := false
	for {
		l, err := r.br.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && (started || l != "") {
				err = io.ErrUnexpectedEOF
			}
			return f, err
		}
		l = strings.TrimSuffix(l, "\n")
		if l == "" {
			if !started {
				continue
			}
			if f.isEvent() || (comments && len(f.Comments) > 0) {
				f.Data = strings.Join(data, "\n")
				return f, nil
			}
			f, data, started = sseFrame{}, nil, false
			continue
		}
		started = true
		f.addLine(l, &data)
	}
}
