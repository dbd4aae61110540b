package realtime

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// expectRefusal dials srv's WebSocket with tok in the Authorization header
// (none when "") and hdr, and checks a refusal a browser can read
// (PROTOCOL.md §6): the upgrade accepted, one error frame with the code
// name, then a close frame with code.
func expectRefusal(t testing.TB, srv *httptest.Server, tok string, hdr http.Header, code int, name string) {
	t.Helper()
	c, resp, body := dialWS(t, srv, tok, false, hdr)
	if c == nil {
		t.Fatalf("dial: %d %s, want the upgrade then close %d", resp.StatusCode, body, code)
	}
	f := readWS(t, c)
	if f.Type != "error" || f.Code != name || f.Message == "" {
		t.Fatalf("first frame %s, want an error frame with code %q", f.raw, name)
	}
	if got := closeCode(t, c); got != code {
		t.Fatalf("close code %d, want %d", got, code)
	}
}

// TestWSRefusalCloseCodes: by default a handshake refused for its
// credentials, its identity or a cap is upgraded, answered with one error
// frame and closed with 4401, 4403 or 4429; a foreign Origin and a request
// that is not a handshake stay plain HTTP answers. With
// WSRefuseBeforeUpgrade every refusal is plain HTTP.
func TestWSRefusalCloseCodes(t *testing.T) {
	identify := func(r *http.Request) (*Identity, error) {
		switch r.URL.Query().Get("who") {
		case "banned":
			return nil, ErrForbidden
		case "nobody":
			return nil, errors.New("no session")
		}
		return &Identity{User: "u1"}, nil
	}
	type tcase struct {
		name  string
		srv   *httptest.Server
		tok   string
		hdr   http.Header
		path  string // query of the ws URL
		code  int    // close code, or the HTTP status when plain
		cname string
	}
	cfgJWT := Config{WSMaxConnsPerUser: 1, MaxConnsPerIP: 3}
	_, jwtSrv := newTestServer(t, cfgJWT)
	plainCfg := cfgJWT
	plainCfg.WSRefuseBeforeUpgrade = true
	_, plainSrv := newTestServer(t, plainCfg)
	_, idSrv := newTestServer(t, Config{Identify: identify})
	_, idPlain := newTestServer(t, Config{Identify: identify, WSRefuseBeforeUpgrade: true})

	// The caps: one socket of "capped" on each server (per-user cap 1), and
	// two more sockets of other users fill the per-IP cap of 3.
	for _, srv := range []*httptest.Server{jwtSrv, plainSrv} {
		connectWS(t, srv, userToken(t, "capped"))
	}
	expired := mintToken(t, testSecret, withClaims(validClaims("u1"), "exp", time.Now().Add(-time.Hour).Unix()))
	wild := mintToken(t, testSecret, validClaims("user.*"))
	foreign := http.Header{"Origin": {"https://evil.example"}}
	cases := []tcase{
		{"no token", jwtSrv, "", nil, "", closeUnauthorized, "unauthorized"},
		{"bad token", jwtSrv, "not-a-jwt", nil, "", closeUnauthorized, "unauthorized"},
		{"expired token", jwtSrv, expired, nil, "", closeUnauthorized, "unauthorized"},
		{"wildcard user", jwtSrv, wild, nil, "", closeUnauthorized, "unauthorized"},
		{"tenant with white space", jwtSrv, mintToken(t, testSecret, withClaims(validClaims("u1"), "tenant", "a b")), nil, "", closeUnauthorized, "unauthorized"},
		{"user cap", jwtSrv, userToken(t, "capped"), nil, "", closeTooManyConnections, "too_many_connections"},
		{"Identify refuses", idSrv, "", nil, "?who=nobody", closeUnauthorized, "unauthorized"},
		{"Identify forbids", idSrv, "", nil, "?who=banned", closeForbidden, "forbidden"},
		{"plain: no token", plainSrv, "", nil, "", http.StatusUnauthorized, "unauthorized"},
		{"plain: user cap", plainSrv, userToken(t, "capped"), nil, "", http.StatusTooManyRequests, "too_many_connections"},
		{"plain: Identify forbids", idPlain, "", nil, "?who=banned", http.StatusForbidden, "forbidden"},
		{"foreign origin", jwtSrv, userToken(t, "u2"), foreign, "", http.StatusForbidden, "forbidden"},
		{"foreign origin, no token", jwtSrv, "", foreign, "", http.StatusForbidden, "forbidden"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.code >= 4000 {
				if tc.path == "" {
					expectRefusal(t, tc.srv, tc.tok, tc.hdr, tc.code, tc.cname)
					return
				}
				d := websocket.Dialer{HandshakeTimeout: hangGuard}
				c, _, err := d.Dial(wsURL(tc.srv)+tc.path, tc.hdr)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				defer c.Close()
				if f := readWS(t, c); f.Type != "error" || f.Code != tc.cname {
					t.Fatalf("frame %s", f.raw)
				}
				if got := closeCode(t, c); got != tc.code {
					t.Fatalf("close %d, want %d", got, tc.code)
				}
				return
			}
			d := websocket.Dialer{HandshakeTimeout: hangGuard}
			h := http.Header{}
			for k, v := range tc.hdr {
				h[k] = v
			}
			if tc.tok != "" {
				h.Set("Authorization", "Bearer "+tc.tok)
			}
			c, resp, err := d.Dial(wsURL(tc.srv)+tc.path, h)
			if err == nil {
				c.Close()
				t.Fatal("upgraded, want a plain refusal")
			}
			if resp == nil {
				t.Fatalf("dial: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || errorCode(t, string(b)) != tc.cname {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, b, tc.code, tc.cname)
			}
		})
	}
	// Not a handshake: a plain 401 (there is no socket to close).
	if resp := getWith(t, jwtSrv.URL+"/api/v1/ws", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("plain GET without token: %d", resp.StatusCode)
	}
}

// TestWSRefusedSocketIsNothing: a refused socket is never registered,
// subscribed or present, whatever its client sends, and its slot-less end
// leaves the caps as they were.
func TestWSRefusedSocketIsNothing(t *testing.T) {
	rt, srv := newTestServer(t, Config{WSMaxConnsPerUser: 1})
	a, _ := connectWS(t, srv, userToken(t, "alice"))
	c, resp, body := dialWS(t, srv, userToken(t, "alice"), false, nil)
	if c == nil {
		t.Fatalf("dial: %d %s", resp.StatusCode, body)
	}
	// Its client tries anyway, before reading anything.
	sendWS(t, c, `{"type":"subscribe","channels":["news"]}`)
	sendWS(t, c, `{"type":"ping"}`)
	if f := readWS(t, c); f.Type != "error" || f.Code != "too_many_connections" {
		t.Fatalf("frame %s", f.raw)
	}
	if code := closeCode(t, c); code != closeTooManyConnections {
		t.Fatalf("close %d", code)
	}
	if _, n, _ := rt.UserPresence(context.Background(), "", "alice"); n != 1 {
		t.Fatalf("alice present on %d sockets, want 1", n)
	}
	res := notify(t, rt, Notification{Users: []string{"alice"}, Event: "hello"})
	if res.Delivered != 1 {
		t.Fatalf("delivered to %d sockets, want 1", res.Delivered)
	}
	expectMessage(t, a, "hello")
	if res := notify(t, rt, Notification{Channel: "news", Event: "n"}); res.Delivered != 0 {
		t.Fatalf("a push to news reached %d sockets", res.Delivered)
	}
	// The refused socket took no slot: once alice's socket is gone, she
	// connects again.
	a.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(hangGuard))
	closeCode(t, a)
	waitFor(t, "alice's slot", func() bool { on, _, _ := rt.UserPresence(context.Background(), "", "alice"); return !on })
	connectWS(t, srv, userToken(t, "alice"))
}

// TestWSRefusalClosesPromptly: the server closes a refused socket as soon
// as the client answers its close frame (Close does not wait for
// closeGrace), and after closeGrace when the client never answers.
func TestWSRefusalClosesPromptly(t *testing.T) {
	rt, srv := newPluginServer(t, Config{}, nil, nil)
	for range 3 {
		expectRefusal(t, srv, "", nil, closeUnauthorized, "unauthorized")
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeGrace/2)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		t.Fatalf("Close: %v: a refused socket outlived its client's close", err)
	}

	// A raw client that reads the refusal and never answers: the server
	// ends the connection by itself.
	_, srv2 := newTestServer(t, Config{})
	nc, err := net.Dial("tcp", strings.TrimPrefix(srv2.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET /api/v1/ws HTTP/1.1\r\nHost: " + nc.RemoteAddr().String() +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(hangGuard))
	br := bufio.NewReader(nc)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 101 ") {
		t.Fatalf("status %q %v", status, err)
	}
	rest, err := io.ReadAll(br) // until the server closes
	if err != nil {
		t.Fatalf("read: %v (the server did not end the connection)", err)
	}
	// The frames: a text frame with the error, then a close frame 4401.
	i := strings.Index(string(rest), "\r\n\r\n")
	frames := rest[i+4:]
	if len(frames) < 2 || frames[0] != 0x81 {
		t.Fatalf("frames % x", frames)
	}
	n := int(frames[1])
	if !strings.Contains(string(frames[2:2+n]), `"code":"unauthorized"`) {
		t.Fatalf("error frame %q", frames[2:2+n])
	}
	cl := frames[2+n:]
	if len(cl) < 4 || cl[0] != 0x88 || int(cl[2])<<8|int(cl[3]) != closeUnauthorized {
		t.Fatalf("close frame % x", cl)
	}
}

// TestWSRefusalsUnderConcurrentDials: at a per-user cap of 5, 20
// concurrent dials give 5 sockets and 15 refusals closed with 4429, and
// exactly 5 registrations.
func TestWSRefusalsUnderConcurrentDials(t *testing.T) {
	rt, srv := newTestServer(t, Config{WSMaxConnsPerUser: 5})
	tok := userToken(t, "alice")
	const dials = 20
	results := make(chan string, dials)
	for range dials {
		go func() {
			d := websocket.Dialer{HandshakeTimeout: hangGuard}
			c, _, err := d.Dial(wsURL(srv), http.Header{"Authorization": {"Bearer " + tok}})
			if err != nil {
				results <- "dial: " + err.Error()
				return
			}
			c.SetReadDeadline(time.Now().Add(hangGuard))
			_, b, err := c.ReadMessage()
			switch {
			case err != nil:
				results <- "read: " + err.Error()
				c.Close()
			case strings.Contains(string(b), `"connected"`):
				t.Cleanup(func() { c.Close() })
				results <- "connected"
			default:
				_, _, err := c.ReadMessage()
				var ce *websocket.CloseError
				if errors.As(err, &ce) && ce.Code == closeTooManyConnections && strings.Contains(string(b), "too_many_connections") {
					results <- "refused"
				} else {
					results <- "unexpected " + string(b)
				}
				c.Close()
			}
		}()
	}
	count := map[string]int{}
	for range dials {
		count[<-results]++
	}
	if count["connected"] != 5 || count["refused"] != dials-5 {
		t.Fatalf("results %v, want 5 connected and %d refused", count, dials-5)
	}
	waitFor(t, "5 registered connections", func() bool { _, n, _ := rt.UserPresence(context.Background(), "", "alice"); return n == 5 })
}
