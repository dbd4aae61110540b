package realtime

// Shared test helpers: token minting, a test server with the app's own
// GET /api/v1/posts/:id next to the plugin's routes, a record store usable as
// Config.Loader, and a raw SSE frame reader. Other test files rely on these
// signatures: keep them stable.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
)

// testSecret is the HS256 key newTestServer configures when cfg has no key.
var testSecret = []byte("test-secret-0123456789abcdef")

// hangGuard bounds every blocking read of a test. It is a guard against a
// hung test, never an asserted timing.
const hangGuard = 10 * time.Second

func init() { gin.SetMode(gin.TestMode) }

// mintToken signs claims with HS256 and secret, exactly as given (no claim is
// added: a token without exp is possible).
func mintToken(t testing.TB, secret []byte, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		t.Fatalf("mintToken: %v", err)
	}
	return s
}

// validClaims returns claims of a valid token for user sub: sub and an exp
// one hour ahead. Add tenant, scope, iss, aud as needed.
func validClaims(sub string) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
}

// userToken is a valid testSecret token for sub in the default tenant, no scope.
func userToken(t testing.TB, sub string) string {
	t.Helper()
	return mintToken(t, testSecret, validClaims(sub))
}

// publisherToken is a valid testSecret token with the publish scope in the
// default tenant.
func publisherToken(t testing.TB) string {
	t.Helper()
	c := validClaims("backend")
	c["scope"] = "read publish"
	return mintToken(t, testSecret, c)
}

// appPostHandler is the app's own GET /api/v1/posts/:id: it answers
// {"handler":"app","id":<id>} with the header X-Handler: app.
func appPostHandler(c *gin.Context) {
	c.Header("X-Handler", "app")
	c.JSON(http.StatusOK, gin.H{"handler": "app", "id": c.Param("id")})
}

// newTestServer starts a plugin with cfg (JWTSecret defaults to testSecret)
// on a gin router with the app's GET /api/v1/posts/:id and
// rt.RegisterCollection(api, "posts") on /api/v1. Cleanup closes the plugin
// (ending every stream), then the server.
func newTestServer(t testing.TB, cfg Config) (*Plugin, *httptest.Server) {
	t.Helper()
	return newPluginServer(t, cfg, nil, nil)
}

// closeAll closes rt (bounded by hangGuard) and then srv.
func closeAll(t testing.TB, rt *Plugin, srv *httptest.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	srv.Close()
}

// recordStore is an in-memory record table; its Load method is a RecordLoader.
type recordStore struct {
	mu   sync.Mutex
	recs map[Ref]any
}

func newRecordStore() *recordStore { return &recordStore{recs: make(map[Ref]any)} }

// put stores rec as the current version of ref (Tenant "" means DefaultTenant).
func (s *recordStore) put(ref Ref, rec any) {
	if ref.Tenant == "" {
		ref.Tenant = DefaultTenant
	}
	s.mu.Lock()
	s.recs[ref] = rec
	s.mu.Unlock()
}

// del removes ref (Tenant "" means DefaultTenant).
func (s *recordStore) del(ref Ref) {
	if ref.Tenant == "" {
		ref.Tenant = DefaultTenant
	}
	s.mu.Lock()
	delete(s.recs, ref)
	s.mu.Unlock()
}

// Load implements RecordLoader: ErrNotFound for an absent record.
func (s *recordStore) Load(_ context.Context, ref Ref) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.recs[ref]
	if !ok {
		return nil, ErrNotFound
	}
	return rec, nil
}

// getWith sends GET url with a Bearer token (none when tok is "") and the
// extra headers, through the default client. Cleanup closes the body.
func getWith(t testing.TB, url, tok string, hdr http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// postJSON sends POST url with body as JSON and a Bearer token (none when
// tok is ""). Cleanup closes the response body.
func postJSON(t testing.TB, url, tok, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// timeGuard closes body after hangGuard, unblocking a read that would hang;
// Stop it when the read is done.
func timeGuard(body io.Closer) *time.Timer {
	return time.AfterFunc(hangGuard, func() { body.Close() })
}

// sseFrame is one block of an SSE stream (the lines up to a blank line),
// parsed with the WHATWG field rules but without an EventSource's state: ID
// is this block's id field only.
type sseFrame struct {
	Event    string   // the event field ("" when absent)
	ID       string   // the id field ("" when absent)
	HasID    bool     // an id field was present
	Data     string   // the data lines joined with "\n"
	HasData  bool     // at least one data field was present
	Retry    string   // the retry field, raw
	Comments []string // comment lines, without the leading ':'
}

// isEvent reports whether the block carries an event (not only retry or
// comments).
func (f sseFrame) isEvent() bool { return f.HasData || f.Event != "" || f.HasID }

// frameReader reads SSE blocks from a response body. Lines may end in LF,
// CR or CRLF.
type frameReader struct {
	body io.ReadCloser
	br   *bufio.Reader
}

func newFrameReader(body io.ReadCloser) *frameReader {
	return &frameReader{body: body, br: bufio.NewReader(body)}
}

// line reads one line without its terminator.
func (r *frameReader) line() (string, error) {
	var sb strings.Builder
	for {
		b, err := r.br.ReadByte()
		if err != nil {
			if err == io.EOF && sb.Len() > 0 {
				err = io.ErrUnexpectedEOF
			}
			return sb.String(), err
		}
		switch b {
		case '\n':
			return sb.String(), nil
		case '\r':
			if nb, err := r.br.Peek(1); err == nil && nb[0] == '\n' {
				_, _ = r.br.ReadByte()
			}
			return sb.String(), nil
		}
		sb.WriteByte(b)
	}
}

// addLine applies one non-empty line of a block to f, by the WHATWG field
// rules (a comment, or a field name, a colon and one optional space).
func (f *sseFrame) addLine(l string, data *[]string) {
	if c, ok := strings.CutPrefix(l, ":"); ok {
		f.Comments = append(f.Comments, strings.TrimPrefix(c, " "))
		return
	}
	name, val, _ := strings.Cut(l, ":")
	val = strings.TrimPrefix(val, " ")
	switch name {
	case "event":
		f.Event = val
	case "id":
		f.ID, f.HasID = val, true
	case "data":
		*data = append(*data, val)
		f.HasData = true
	case "retry":
		f.Retry = val
	}
}

// next returns the next block (possibly a retry-only or comment-only one).
// It returns io.EOF at a clean end of stream between blocks.
func (r *frameReader) next() (sseFrame, error) {
	var f sseFrame
	var data []string
	started := false
	for {
		l, err := r.line()
		if err != nil {
			if err == io.EOF && started {
				err = io.ErrUnexpectedEOF
			}
			return f, err
		}
		if l == "" {
			if !started {
				continue
			}
			f.Data = strings.Join(data, "\n")
			return f, nil
		}
		started = true
		f.addLine(l, &data)
	}
}

// readFrames reads until n event blocks (see isEvent) have arrived, skipping
// retry-only and comment-only blocks, and returns them. It fails t on an
// error or end of stream before that, and after hangGuard (closing the body).
func readFrames(t testing.TB, r *frameReader, n int) []sseFrame {
	t.Helper()
	guard := timeGuard(r.body)
	defer guard.Stop()
	out := make([]sseFrame, 0, n)
	for len(out) < n {
		f, err := r.next()
		if err != nil {
			t.Fatalf("readFrames: got %d of %d frames %+v, then: %v", len(out), n, out, err)
		}
		if f.isEvent() {
			out = append(out, f)
		}
	}
	return out
}

// readToEnd reads event blocks until the stream ends cleanly and returns
// them. It fails t on a read error and after hangGuard (closing the body).
func readToEnd(t testing.TB, r *frameReader) []sseFrame {
	t.Helper()
	guard := timeGuard(r.body)
	defer guard.Stop()
	var out []sseFrame
	for {
		f, err := r.next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("readToEnd: after %+v: %v", out, err)
		}
		if f.isEvent() {
			out = append(out, f)
		}
	}
}
