package realtime

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
)

func TestSmoke(t *testing.T) {
	gin.SetMode(gin.TestMode)
	secret := []byte("s3cret")
	rt, err := New(Config{JWTSecret: secret, Loader: func(ctx context.Context, ref Ref) (any, error) {
		return map[string]any{"id": ref.ID, "title": "hello"}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	api := r.Group("/api/v1")
	api.GET("/posts/:id", func(c *gin.Context) { c.String(200, "app") })
	rt.RegisterCollection(api, "posts")
	srv := httptest.NewServer(r)
	defer srv.Close()
	tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(secret)
	resp, err := http.Get(srv.URL + "/api/v1/posts/42/subscribe?token=" + tok)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(resp.Status, resp.Header)
	br := bufio.NewReader(resp.Body)
	go func() {
		time.Sleep(100 * time.Millisecond)
		rt.Changed(context.Background(), "posts", "42", map[string]any{"id": "42", "title": "v2"})
	}()
	for i := 0; i < 9; i++ {
		l, err := br.ReadString('\n')
		fmt.Printf("%q %v\n", l, err)
	}
	resp.Body.Close()
	fmt.Println(rt.Close(context.Background()))
}
