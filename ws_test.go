package realtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

func TestWSConnectQueryAndHeaderToken(t *testing.T) {
	_, srv := newTestServer(t, Config{})
	for _, query := range []bool{true, false} {
		c, resp, body := dialWS(t, srv, userToken(t, "alice"), query, nil)
		if c == nil {
			t.Fatalf("query=%v: %d %s", query, resp.StatusCode, body)
		}
		f := expectType(t, c, "connected")
		if f.User != "alice" || f.Tenant != DefaultTenant || len(f.ConnectionID) != 36 {
			t.Fatalf("connected frame %s", f.raw)
		}
	}
}

// TestWSRefusedBeforeUpgrade: with WSRefuseBeforeUpgrade, refusals are
// plain HTTP answers before the upgrade (ws_refusal_test.go has the
// default, close codes); a foreign Origin and a bad handshake always are.
func TestWSRefusedBeforeUpgrade(t *testing.T) {
	_, srv := newTestServer(t, Config{WSRefuseBeforeUpgrade: true})
	c, resp, body := dialWS(t, srv, "", false, nil)
	if c != nil || resp.StatusCode != http.StatusUnauthorized || errorCode(t, body) != "unauthorized" {
		t.Fatalf("no token: %d %s", resp.StatusCode, body)
	}
	c, resp, body = dialWS(t, srv, "not-a-jwt", true, nil)
	if c != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad token: %d %s", resp.StatusCode, body)
	}
	c, resp, body = dialWS(t, srv, userToken(t, "alice"), false, http.Header{"Origin": {"https://evil.example"}})
	if c != nil || resp.StatusCode != http.StatusForbidden || errorCode(t, body) != "forbidden" {
		t.Fatalf("foreign origin: %d %s", resp.StatusCode, body)
	}
	// A foreign page is refused before its credentials are looked at.
	c, resp, body = dialWS(t, srv, "", false, http.Header{"Origin": {"https://evil.example"}})
	if c != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin without token: %d %s", resp.StatusCode, body)
	}
	if resp := getWith(t, srv.URL+"/api/v1/ws", userToken(t, "alice"), nil); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: %d", resp.StatusCode)
	}
	if resp := getWith(t, srv.URL+"/api/v1/ws", userToken(t, "alice"), http.Header{
		"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"8"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="},
	}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("version 8: %d", resp.StatusCode)
	}
	same := "http://" + strings.TrimPrefix(srv.URL, "http://")
	if c, resp, body = dialWS(t, srv, userToken(t, "alice"), false, http.Header{"Origin": {same}}); c == nil {
		t.Fatalf("same origin: %d %s", resp.StatusCode, body)
	}
}

func TestWSAllowedOrigins(t *testing.T) {
	_, srv := newTestServer(t, Config{WSAllowedOrigins: []string{"https://app.example"}})
	tok := userToken(t, "alice")
	if c, resp, body := dialWS(t, srv, tok, false, http.Header{"Origin": {"https://app.example"}}); c == nil {
		t.Fatalf("listed origin: %d %s", resp.StatusCode, body)
	}
	if c, resp, _ := dialWS(t, srv, tok, false, http.Header{"Origin": {"https://other.example"}}); c != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("unlisted origin accepted")
	}
	_, srv2 := newTestServer(t, Config{WSAllowedOrigins: []string{"*"}})
	if c, resp, body := dialWS(t, srv2, tok, false, http.Header{"Origin": {"https://any.example"}}); c == nil {
		t.Fatalf("* origin: %d %s", resp.StatusCode, body)
	}
}

func TestWSConnectionCaps(t *testing.T) {
	rt, srv := newTestServer(t, Config{WSMaxConnsPerUser: 2, WSMaxConnsPerTenant: 3})
	a1, _ := connectWS(t, srv, userToken(t, "alice"))
	connectWS(t, srv, userToken(t, "alice"))
	expectRefusal(t, srv, userToken(t, "alice"), nil, closeTooManyConnections, "too_many_connections")
	connectWS(t, srv, userToken(t, "bob"))
	expectRefusal(t, srv, userToken(t, "carol"), nil, closeTooManyConnections, "too_many_connections")
	// Another tenant has its own cap.
	connectWS(t, srv, tenantToken(t, "carol", "t2"))
	// A closed connection frees its slot.
	a1.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(hangGuard))
	closeCode(t, a1)
	waitFor(t, "alice's slot", func() bool { _, n, _ := rt.UserPresence(context.Background(), "", "alice"); return n == 1 })
	waitFor(t, "the tenant slot", func() bool {
		c, _, _ := dialWS(t, srv, userToken(t, "carol"), false, nil)
		return c != nil
	})
}

func TestWSPingPongAndBadInput(t *testing.T) {
	_, srv := newTestServer(t, Config{})
	c, _ := connectWS(t, srv, userToken(t, "alice"))
	for _, ping := range []string{`{"type":"ping"}`, "ping", "PiNg"} {
		sendWS(t, c, ping)
		expectType(t, c, "pong")
	}
	for _, bad := range []string{"{not json", `[1,2]`, `{"type":"nope"}`, `"ping"`,
		`{"type":"subscribe","records":[{"collection":"posts"}]}`} {
		sendWS(t, c, bad)
		f := expectType(t, c, "error")
		if f.Code != "bad_request" || f.Message == "" {
			t.Fatalf("%s → %s", bad, f.raw)
		}
		sendWS(t, c, "ping")
		expectType(t, c, "pong")
	}
	c.WriteMessage(websocket.BinaryMessage, []byte{1, 2})
	expectType(t, c, "error")
	var many []string
	for i := range 101 {
		many = append(many, fmt.Sprintf("c%d", i))
	}
	b, _ := json.Marshal(map[string]any{"type": "subscribe", "channels": many})
	sendWS(t, c, string(b))
	if f := expectType(t, c, "error"); f.Code != "bad_request" {
		t.Fatalf("too many channels: %s", f.raw)
	}
	sendWS(t, c, "ping")
	expectType(t, c, "pong")
}

func TestWSOversizeFrameCloses1009(t *testing.T) {
	_, srv := newTestServer(t, Config{WSMaxMessageBytes: 1024})
	c, _ := connectWS(t, srv, userToken(t, "alice"))
	sendWS(t, c, `{"type":"ping","pad":"`+strings.Repeat("x", 4096)+`"}`)
	if code := closeCode(t, c); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
}

func TestWSPresence(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	ctx := context.Background()
	if users, n, _ := rt.Presence(ctx, ""); len(users) != 0 || n != 0 {
		t.Fatalf("empty presence: %v %d", users, n)
	}
	a1, _ := connectWS(t, srv, userToken(t, "alice"))
	connectWS(t, srv, userToken(t, "alice"))
	connectWS(t, srv, userToken(t, "bob"))
	connectWS(t, srv, tenantToken(t, "zed", "t2"))
	users, n, _ := rt.Presence(ctx, "")
	if fmt.Sprint(users) != "[alice bob]" || n != 3 {
		t.Fatalf("presence %v %d", users, n)
	}
	if on, n, _ := rt.UserPresence(ctx, "", "alice"); !on || n != 2 {
		t.Fatalf("alice %v %d", on, n)
	}
	if on, _, _ := rt.UserPresence(ctx, "", "zed"); on {
		t.Fatal("zed of t2 is present in the default tenant")
	}
	if users, n, _ := rt.Presence(WithTenant(ctx, "t2"), ""); fmt.Sprint(users) != "[zed]" || n != 1 {
		t.Fatalf("t2 presence %v %d", users, n)
	}

	pub := publisherToken(t)
	resp := getWith(t, srv.URL+"/api/v1/presence", pub, nil)
	var p struct {
		Tenant      string   `json:"tenant"`
		Users       []string `json:"users"`
		Connections int      `json:"connections"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&p) != nil || p.Tenant != DefaultTenant || fmt.Sprint(p.Users) != "[alice bob]" || p.Connections != 3 {
		t.Fatalf("GET presence: %d %+v", resp.StatusCode, p)
	}
	resp = getWith(t, srv.URL+"/api/v1/presence/alice", pub, nil)
	var up struct {
		User        string `json:"user"`
		Online      bool   `json:"online"`
		Connections int    `json:"connections"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&up) != nil || up != (struct {
		User        string `json:"user"`
		Online      bool   `json:"online"`
		Connections int    `json:"connections"`
	}{"alice", true, 2}) {
		t.Fatalf("GET presence/alice: %d %+v", resp.StatusCode, up)
	}
	if resp := getWith(t, srv.URL+"/api/v1/presence", userToken(t, "alice"), nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("presence without publish scope: %d", resp.StatusCode)
	}
	if resp := getWith(t, srv.URL+"/api/v1/presence/alice", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("presence without token: %d", resp.StatusCode)
	}
	a1.Close()
	waitFor(t, "alice's closed connection to leave presence", func() bool {
		_, n, _ := rt.UserPresence(ctx, "", "alice")
		return n == 1
	})
}

func TestWSTokenExpiryCloses1008(t *testing.T) {
	_, srv := newTestServer(t, Config{Heartbeat: 20 * time.Millisecond, JWTLeeway: time.Millisecond})
	cl := validClaims("alice")
	cl["exp"] = time.Now().Add(2 * time.Second).Unix()
	c, _ := connectWS(t, srv, mintToken(t, testSecret, cl))
	if code := closeCode(t, c); code != websocket.ClosePolicyViolation {
		t.Fatalf("close code %d, want 1008", code)
	}
}

func TestWSDeadPeerRemoved(t *testing.T) {
	rt, srv := newTestServer(t, Config{WSPingInterval: 20 * time.Millisecond, WSPongWait: 200 * time.Millisecond})
	nc, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET /api/v1/ws HTTP/1.1\r\nHost: " + nc.RemoteAddr().String() +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer " + userToken(t, "ghost") + "\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(hangGuard))
	status, err := bufio.NewReader(nc).ReadString('\n')
	if err != nil || !strings.Contains(status, "101") {
		t.Fatalf("upgrade: %q %v", status, err)
	}
	waitFor(t, "the ghost to be online", func() bool { on, _, _ := rt.UserPresence(context.Background(), "", "ghost"); return on })
	// The raw client never answers a ping.
	waitFor(t, "the dead peer to be removed", func() bool { on, _, _ := rt.UserPresence(context.Background(), "", "ghost"); return !on })
}

// A live peer is pinged by the plugin's ticker (written by the writer
// pool), answers, and stays connected well past WSPongWait; pushes still
// arrive in between.
func TestWSPingsKeepLivePeer(t *testing.T) {
	// WSPongWait leaves room for a loaded machine's scheduling; the run
	// lasts three of them.
	rt, srv := newTestServer(t, Config{WSPingInterval: 50 * time.Millisecond, WSPongWait: 500 * time.Millisecond})
	c, _ := connectWS(t, srv, userToken(t, "alice"))
	var pings atomic.Int32
	c.SetPingHandler(func(data string) error {
		pings.Add(1)
		return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	frames := make(chan []byte, 16)
	go func() {
		defer close(frames)
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			frames <- b
		}
	}()
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if _, err := rt.Notify(context.Background(), Notification{Users: []string{"alice"}, Event: "tick", Data: 1}); err != nil {
			t.Fatal(err)
		}
		select {
		case b, ok := <-frames:
			if !ok {
				t.Fatal("the live peer was disconnected")
			}
			if !strings.Contains(string(b), `"tick"`) {
				t.Fatalf("frame %s", b)
			}
		case <-time.After(hangGuard):
			t.Fatal("no push")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := pings.Load(); n < 5 {
		t.Fatalf("%d pings in 1.5s at a 50ms interval", n)
	}
	if on, _, _ := rt.UserPresence(context.Background(), "", "alice"); !on {
		t.Fatal("alice is offline")
	}
}

func TestWSCloseEndsEverySocket(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	var conns []*websocket.Conn
	for _, u := range []string{"alice", "alice", "bob"} {
		c, _ := connectWS(t, srv, userToken(t, u))
		conns = append(conns, c)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		done <- rt.Close(ctx)
	}()
	for _, c := range conns {
		if code := closeCode(t, c); code != websocket.CloseGoingAway {
			t.Fatalf("close code %d, want 1001", code)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if c, resp, _ := dialWS(t, srv, userToken(t, "alice"), false, nil); c != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after Close: %v", resp.StatusCode)
	}
}

func TestWSConfigDefaultsAndErrors(t *testing.T) {
	c, err := Config{JWTSecret: testSecret}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.WSMaxConnsPerUser != 16 || c.WSMaxConnsPerTenant != 10000 || c.WSMaxMessageBytes != 64<<10 ||
		c.WSSendQueue != 4096 || c.WSPingInterval != 25*time.Second || c.WSPongWait != 60*time.Second || c.WSMaxChannels != 100 {
		t.Fatalf("defaults: %+v", c)
	}
	for _, bad := range []Config{
		{WSPingInterval: time.Minute, WSPongWait: time.Second},
		{WSMaxConnsPerUser: -1}, {WSSendQueue: -1}, {WSMaxMessageBytes: -1}, {WSPongWait: -1},
		{WSAllowedOrigins: []string{""}},
	} {
		bad.JWTSecret = testSecret
		if _, err := bad.withDefaults(); err == nil || !strings.Contains(err.Error(), "invalid config") {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
}

func TestWSRoutesMountedOncePerGroup(t *testing.T) {
	rt, err := New(Config{JWTSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	api := r.Group("/api/v1")
	rt.Register(api)
	rt.RegisterCollection(api, "posts")
	rt.RegisterCollection(r.Group("/api/v1"), "comments") // same base path, another group value
	other := r.Group("/other")
	rt.RegisterCollection(other, "posts")
	rt.RegisterCollection(other, "comments")
	srv := httptest.NewServer(r)
	t.Cleanup(func() { closeAll(t, rt, srv) })
	connectWS(t, srv, userToken(t, "alice"))
	expectRefusal(t, srv, "", nil, closeUnauthorized, "unauthorized")
	d := websocket.Dialer{HandshakeTimeout: hangGuard}
	oc, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/other/ws", http.Header{"Authorization": {"Bearer " + userToken(t, "bob")}})
	if err != nil {
		t.Fatalf("/other/ws: %v", err)
	}
	defer oc.Close()
	expectType(t, oc, "connected")
	// The generic SSE routes still answer next to /ws and /presence.
	if resp := getWith(t, srv.URL+"/api/v1/presence", publisherToken(t), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("presence: %d", resp.StatusCode)
	}
}

// rawWS completes a WebSocket handshake over a raw TCP connection that then
// never reads nor answers a ping.
func rawWS(t *testing.T, srv *httptest.Server, tok string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := "GET /api/v1/ws HTTP/1.1\r\nHost: " + nc.RemoteAddr().String() +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer " + tok + "\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(hangGuard))
	status, err := bufio.NewReaderSize(nc, 16).ReadString('\n')
	if err != nil || !strings.Contains(status, "101") {
		t.Fatalf("upgrade: %q %v", status, err)
	}
	return nc
}

func TestWSCloseWithStalledClientHonoursContext(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	rawWS(t, srv, userToken(t, "stalled"))
	waitFor(t, "the stalled client", func() bool { on, _, _ := rt.UserPresence(context.Background(), "", "stalled"); return on })
	big := strings.Repeat("x", 256<<10)
	for range 64 { // far more than the socket buffers hold: the writer blocks
		notify(t, rt, Notification{Event: "big", Data: big})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := rt.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want the context's error", err)
	}
	if on, _, _ := rt.UserPresence(context.Background(), "", "stalled"); on {
		t.Fatal("the stalled client is still registered after Close")
	}
}

func TestWSConnectionCapUnderConcurrentDials(t *testing.T) {
	// Plain 429s: the upgrades refused with 4429 are in ws_refusal_test.go.
	rt, srv := newTestServer(t, Config{WSMaxConnsPerUser: 5, WSRefuseBeforeUpgrade: true})
	tok := userToken(t, "alice")
	const dials = 20
	type result struct {
		c      *websocket.Conn
		status int
	}
	results := make(chan result, dials)
	for range dials {
		go func() {
			d := websocket.Dialer{HandshakeTimeout: hangGuard}
			c, resp, err := d.Dial(wsURL(srv), http.Header{"Authorization": {"Bearer " + tok}})
			status := 0
			if resp != nil {
				status = resp.StatusCode
				if err != nil {
					resp.Body.Close()
				}
			}
			results <- result{c, status}
		}()
	}
	ok, refused := 0, 0
	for range dials {
		r := <-results
		switch {
		case r.c != nil:
			ok++
			t.Cleanup(func() { r.c.Close() })
		case r.status == http.StatusTooManyRequests:
			refused++
		default:
			t.Errorf("dial: status %d", r.status)
		}
	}
	if ok != 5 || refused != dials-5 {
		t.Fatalf("%d connected, %d refused; want 5 and %d", ok, refused, dials-5)
	}
	waitFor(t, "5 registered connections", func() bool { _, n, _ := rt.UserPresence(context.Background(), "", "alice"); return n == 5 })
}
