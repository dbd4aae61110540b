package main

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// implSpec is what the orchestrator and the clients need to know about one
// server implementation: how a client connects and subscribes. The server
// side is in servers.go.
type implSpec struct {
	name  string
	table string // "sse" or "ws", or "sse2" and "ws2" (two nodes): the table it is reported in
	// base is, for a two-node implementation (twonode.go), the single-node
	// one each of its two server processes runs, with a Redis broker.
	base string
	// path is the request path (with query) of the subscribing client with
	// index i (0 … n-1 over all client processes).
	path func(i int) string
	// perConn makes each client compute its own path (a token per user):
	// else path(0) serves every client.
	perConn bool
	// hello is the text frame a WebSocket client sends after the upgrade.
	hello string
	// wait is what a client reads in the server's first bytes before it
	// counts as subscribed ("" : the response head is enough).
	wait string
	// pongText makes a WebSocket client answer a text frame {} with {}
	// (centrifuge's application-level ping).
	pongText bool
	// emulation is the path a centrifuge SSE client posts its pongs to.
	emulation string
	// closeNote names how the server ends a subscriber it gives up on.
	closeNote string
}

// The topic every subscriber follows, in each implementation's terms.
const (
	recordID        = "1"                         // realtime: /posts/1
	wsChannel       = "bench.news"                // realtime-ws: the pushes' channel
	wsEvent         = "bench"                     // realtime-ws: the pushes' event name
	centrifugeChan  = "bench"                     // centrifuge: the server-side subscription
	mercureTopic    = "https://example.com/bench" // Mercure: the topic
	plainPath       = "/sse/1"
	melodyPath      = "/ws"
	centrifugeSSE   = "/connection/sse"
	centrifugeWS    = "/connection/websocket"
	centrifugeEmul  = "/emulation"
	mercurePath     = "/.well-known/mercure"
	realtimeSSEPath = "/api/v1/posts/" + recordID + "/subscribe"
	realtimeWSPath  = "/api/v1/ws"
)

// benchSecret is the fixed HMAC key of every server that checks tokens
// (the plugin, Mercure's subscriber and publisher JWTs).
var benchSecret = []byte("bench-fixed-secret-0123456789abcdef")

// realtimeToken is a token the plugin accepts (user "bench", default tenant).
func realtimeToken() string {
	return sign(jwt.MapClaims{"sub": "bench", "exp": time.Now().Add(24 * time.Hour).Unix()})
}

// realtimeUserToken is a token of user "bench-<i>": the two-node push
// clients are 1,000 distinct users, so that a push's Users count is checked
// against something other than 1.
func realtimeUserToken(i int) string {
	return sign(jwt.MapClaims{"sub": "bench-" + strconv.Itoa(i), "exp": time.Now().Add(24 * time.Hour).Unix()})
}

// mercureToken is a subscriber JWT allowed every topic.
func mercureToken() string {
	return sign(jwt.MapClaims{"mercure": map[string]any{"subscribe": []string{"*"}}})
}

func sign(c jwt.MapClaims) string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(benchSecret)
	if err != nil {
		panic(err)
	}
	return tok
}

// specs lists the implementations in report order: each table's first
// column is the plugin, the one the ratios divide by.
var specs = []implSpec{
	{name: "realtime-sse", table: "sse",
		path:      func(int) string { return realtimeSSEPath + "?token=" + realtimeToken() },
		closeNote: "stream ended (queue of 512 full)"},
	{name: "centrifuge-sse", table: "sse",
		path: func(int) string {
			return centrifugeSSE + "?cf_connect=" + url.QueryEscape(`{"id":1,"connect":{}}`)
		},
		wait: `"connect":`, emulation: centrifugeEmul,
		closeNote: "stream ended (queue of 1 MiB full: disconnect 3008 slow)"},
	{name: "mercure-sse", table: "sse",
		path: func(int) string {
			return mercurePath + "?topic=" + url.QueryEscape(mercureTopic) + "&authorization=" + mercureToken()
		},
		closeNote: "stream ended (channel of 1,000 updates full)"},
	{name: "nethttp-sse", table: "sse",
		path:      func(int) string { return plainPath },
		closeNote: "stream ended (channel of 512 full)"},
	{name: "realtime-ws", table: "ws",
		path:      func(int) string { return realtimeWSPath + "?token=" + realtimeToken() },
		hello:     `{"type":"subscribe","channels":["` + wsChannel + `"]}`,
		wait:      `"type":"subscribed"`,
		closeNote: "close 1013 (send queue of 256 full)"},
	{name: "realtime-ws-rec", table: "ws",
		path:      func(int) string { return realtimeWSPath + "?token=" + realtimeToken() },
		hello:     `{"type":"subscribe","records":[{"collection":"posts","id":"` + recordID + `"}]}`,
		wait:      `"type":"subscribed"`,
		closeNote: "close 1013 (send queue of 256 full)"},
	{name: "centrifuge-ws", table: "ws",
		path:  func(int) string { return centrifugeWS },
		hello: `{"id":1,"connect":{}}`, wait: `"connect":`, pongText: true,
		closeNote: "close 3008 slow (queue of 1 MiB full)"},
	{name: "melody-ws", table: "ws",
		path:      func(int) string { return melodyPath },
		closeNote: "none: a full buffer (256) drops the message"},
}

// twoNodeSpecs are the implementations run as two server processes sharing
// one Redis (twonode.go): the subscribers on node B, the publisher on node
// A. Their clients are those of the single-node implementation, except that
// realtime-ws-redis gives each client its own user.
var twoNodeSpecs = []struct {
	name, base string
	perUser    bool
}{
	{"realtime-ws-redis", "realtime-ws", true},
	{"centrifuge-ws-redis", "centrifuge-ws", false},
	{"realtime-sse-redis", "realtime-sse", false},
	{"centrifuge-sse-redis", "centrifuge-sse", false},
}

func init() {
	for _, t := range twoNodeSpecs {
		sp, ok := specOf(t.base)
		if !ok {
			panic("bench: no implementation " + t.base)
		}
		sp.name, sp.base, sp.table = t.name, t.base, sp.table+"2"
		if t.perUser {
			sp.perConn = true
			sp.path = func(i int) string { return realtimeWSPath + "?token=" + realtimeUserToken(i) }
		}
		specs = append(specs, sp)
	}
}

// ws reports whether the clients are WebSockets (else SSE).
func (s implSpec) ws() bool { return strings.HasPrefix(s.table, "ws") }

// twoNode reports whether the implementation runs as two nodes.
func (s implSpec) twoNode() bool { return s.base != "" }

func specOf(name string) (implSpec, bool) {
	for _, s := range specs {
		if s.name == name {
			return s, true
		}
	}
	return implSpec{}, false
}
