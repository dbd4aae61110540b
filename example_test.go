package realtime_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/ginrealtime/realtime"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// token mints an HS256 token for user, valid for an hour.
func token(secret []byte, user string) string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(secret)
	if err != nil {
		log.Fatal(err)
	}
	return tok
}

type post struct {
	ID    string `json:"id"`
	Title string `json:"title"`
}

// A gin app makes its posts live: the plugin's routes sit next to the app's
// own, and the app's REST handlers send the same ETag the events carry.
func Example() {
	rt, err := realtime.New(realtime.Config{
		JWTSecret: []byte("change-me"),
		Loader: func(ctx context.Context, ref realtime.Ref) (any, error) {
			if ref.ID != "42" {
				return nil, realtime.ErrNotFound
			}
			return post{ID: "42", Title: "Hello"}, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(context.Background())

	router := gin.New()
	api := router.Group("/api/v1", rt.Authenticate())
	api.GET("/posts/:id", func(c *gin.Context) {
		p := post{ID: c.Param("id"), Title: "Hello"}
		etag, _ := rt.ETag("posts", p.ID, p)
		c.Header("ETag", etag)
		c.JSON(200, p)
	})
	rt.RegisterCollection(api, "posts") // GET /api/v1/posts/:id/subscribe, …

	// Anywhere in the app: publish the new version after a write.
	etag, err := rt.Changed(context.Background(), "posts", "42", post{ID: "42", Title: "Hello, world"})
	if err != nil {
		log.Fatal(err)
	}
	same, _ := rt.ETag("posts", "42", post{ID: "42", Title: "Hello, world"})
	fmt.Println(etag == same)
	// Output: true
}

// The frame a subscriber receives for an event: data with line breaks is
// split into data: lines, so it can never forge a field.
func ExampleAppendSSEFrame() {
	frame, err := realtime.AppendSSEFrame(nil, "changed", `"v2"`, []byte("line one\nline two"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(frame))
	// Output:
	// event: changed
	// id: "v2"
	// data: line one
	// data: line two
}

// Writes carry their tenant in the context.
func ExampleWithTenant() {
	ctx := realtime.WithTenant(context.Background(), "acme")
	fmt.Println(realtime.TenantFrom(ctx), realtime.TenantFrom(context.Background()))
	// Output: acme default
}

// Register mounts the live routes of every collection on a group where the
// app has no routes of its own.
func ExamplePlugin_Register() {
	rt, err := realtime.New(realtime.Config{JWTSecret: []byte("change-me")})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(context.Background())
	router := gin.New()
	rt.Register(router.Group("/live"))
	for _, r := range router.Routes() {
		if strings.Contains(r.Path, ":collection") {
			fmt.Println(r.Method, r.Path)
		}
	}
	// Unordered output:
	// GET /live/:collection/subscribe
	// GET /live/:collection/:id/subscribe
	// GET /live/:collection/:id/poll
	// POST /live/:collection/:id/events
}

// Notify pushes to users over their WebSockets (and pushes streams) and
// answers how many connections it reached.
func ExamplePlugin_Notify() {
	secret := []byte("change-me")
	rt, err := realtime.New(realtime.Config{JWTSecret: secret})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(context.Background())
	router := gin.New()
	rt.Register(router.Group("/api/v1"))
	srv := httptest.NewServer(router)
	defer srv.Close()

	// A browser of user u1 opens its socket.
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/v1/ws?token=" + token(secret, "u1")
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer ws.Close()
	_, connected, _ := ws.ReadMessage() // {"type":"connected",…}: it is registered
	fmt.Println(strings.HasPrefix(string(connected), `{"type":"connected"`))

	res, err := rt.Notify(context.Background(), realtime.Notification{
		Users: []string{"u1"}, Event: "order_shipped", Data: map[string]int{"order": 7},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Delivered, res.Users)

	_, msg, _ := ws.ReadMessage()
	var push struct {
		Type, Event string
		Data        json.RawMessage
	}
	if err := json.Unmarshal(msg, &push); err != nil {
		log.Fatal(err)
	}
	fmt.Println(push.Type, push.Event, string(push.Data))
	// Output:
	// true
	// 1 1
	// message order_shipped {"order":7}
}

// Two plugins on one engine behave as two nodes of one app: an event
// published on one reaches a subscriber of the other. MemoryBroker is the
// engine in one process (each plugin without a Broker runs on one of its
// own); redisbroker.New gives the same across processes.
func ExampleMemoryBroker() {
	secret := []byte("change-me")
	engine := realtime.NewMemoryBroker(realtime.MemoryBufferConfig{})
	node := func() (*realtime.Plugin, *httptest.Server) {
		rt, err := realtime.New(realtime.Config{JWTSecret: secret, Broker: engine.Node()})
		if err != nil {
			log.Fatal(err)
		}
		router := gin.New()
		rt.Register(router.Group("/api/v1"))
		return rt, httptest.NewServer(router)
	}
	a, srvA := node()
	b, srvB := node()
	defer func() {
		srvA.Close()
		srvB.Close()
		a.Close(context.Background())
		b.Close(context.Background())
	}()

	// A subscriber of posts/42 on node b (no Loader: no snapshot first).
	req, _ := http.NewRequest(http.MethodGet, srvB.URL+"/api/v1/posts/42/subscribe", nil)
	req.Header.Set("Authorization", "Bearer "+token(secret, "u1"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() && lines.Text() != "" { // the retry line
	}
	for b.Subscribers() == 0 { // subscribed once the stream's head is out
		time.Sleep(time.Millisecond)
	}

	// A write published on node a.
	if _, err := a.Changed(context.Background(), "posts", "42", post{ID: "42", Title: "Hello"}); err != nil {
		log.Fatal(err)
	}
	for lines.Scan() && lines.Text() != "" {
		if !strings.HasPrefix(lines.Text(), "id:") {
			fmt.Println(lines.Text())
		}
	}
	// Output:
	// event: changed
	// data: {"id":"42","title":"Hello"}
}
