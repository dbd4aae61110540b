package realtime_test

import (
	"context"
	"fmt"
	"log"

	"github.com/gin-gonic/gin"
	"github.com/ginrealtime/realtime"
)

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
