package realtime

// WebSocket test helpers: dialing /api/v1/ws of a newTestServer with
// gorilla's client, reading JSON frames with a hang guard, and tokens for
// other tenants.

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// wsURL is the WebSocket URL of srv's plugin.
func wsURL(srv *httptest.Server) string {
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/v1/ws"
}

// tenantToken is a valid testSecret token for sub in tenant.
func tenantToken(t testing.TB, sub, tenant string) string {
	t.Helper()
	c := validClaims(sub)
	c["tenant"] = tenant
	return mintToken(t, testSecret, c)
}

// dialWS opens a WebSocket to srv with tok in the query (when query) or in
// the Authorization header, and extra headers. It returns the connection
// (nil on failure) and the handshake response (body read into the error
// body for failures).
func dialWS(t testing.TB, srv *httptest.Server, tok string, query bool, hdr http.Header) (*websocket.Conn, *http.Response, string) {
	t.Helper()
	u := wsURL(srv)
	h := http.Header{}
	for k, v := range hdr {
		h[k] = v
	}
	if tok != "" {
		if query {
			u += "?token=" + tok
		} else {
			h.Set("Authorization", "Bearer "+tok)
		}
	}
	d := websocket.Dialer{HandshakeTimeout: hangGuard}
	conn, resp, err := d.Dial(u, h)
	if err != nil {
		if resp == nil {
			t.Fatalf("dial %s: %v", u, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, resp, string(b)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, resp, ""
}

// wsFrame is a server → client frame, decoded loosely.
type wsFrame struct {
	Type         string          `json:"type"`
	ConnectionID string          `json:"connectionId"`
	User         string          `json:"user"`
	Tenant       string          `json:"tenant"`
	Channels     []string        `json:"channels"`
	Code         string          `json:"code"`
	Message      string          `json:"message"`
	EnvelopeID   string          `json:"envelopeId"`
	Channel      string          `json:"channel"`
	Event        string          `json:"event"`
	Data         json.RawMessage `json:"data"`
	Timestamp    string          `json:"timestamp"`
	raw          []byte
}

// readWS reads the next text frame (hang guarded).
func readWS(t testing.TB, c *websocket.Conn) wsFrame {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(hangGuard))
	typ, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if typ != websocket.TextMessage {
		t.Fatalf("frame type %d, want text", typ)
	}
	var f wsFrame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame %q is not JSON: %v", b, err)
	}
	f.raw = b
	return f
}

// expectType reads the next frame and checks its type.
func expectType(t testing.TB, c *websocket.Conn, typ string) wsFrame {
	t.Helper()
	f := readWS(t, c)
	if f.Type != typ {
		t.Fatalf("frame %s, want type %q", f.raw, typ)
	}
	return f
}

// connectWS dials with a header token and reads the connected frame.
func connectWS(t testing.TB, srv *httptest.Server, tok string) (*websocket.Conn, wsFrame) {
	t.Helper()
	c, resp, body := dialWS(t, srv, tok, false, nil)
	if c == nil {
		t.Fatalf("dial: %d %s", resp.StatusCode, body)
	}
	return c, expectType(t, c, "connected")
}

// sendWS writes one text frame.
func sendWS(t testing.TB, c *websocket.Conn, s string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(hangGuard))
	if err := c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

// closeCode reads until the connection ends and returns the close code the
// server sent (-1 when the connection ended without a close frame).
func closeCode(t testing.TB, c *websocket.Conn) int {
	t.Helper()
	for {
		c.SetReadDeadline(time.Now().Add(hangGuard))
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		t.Logf("connection ended without a close frame: %v", err)
		return -1
	}
}

// closeCodeOf is the close code of a read error (-1: no close frame).
func closeCodeOf(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

// errorCode decodes the contract's JSON error body.
func errorCode(t testing.TB, body string) string {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e.Error.Code
}
