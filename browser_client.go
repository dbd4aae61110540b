package realtime

import (
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
)

// clientJS is the browser client (client/realtime.js): a dependency-free
// ES module implementing PROTOCOL.md's WebSocket and SSE sides.
//
//go:embed client/realtime.js
var clientJS []byte

// clientETag is the strong ETag of clientJS, computed once.
var clientETag = func() string {
	sum := sha256.Sum256(clientJS)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`
}()

// ClientJS returns the browser client's source and its ETag, for apps that
// serve or bundle it themselves.
func ClientJS() (src []byte, etag string) { return clientJS, clientETag }

// ClientHandler serves the browser client, realtime.js, an ES module with
// no dependencies:
//
//	r.GET("/api/v1/realtime.js", rt.ClientHandler()) // outside any auth middleware
//
// then, in the page, import { Realtime } from "/api/v1/realtime.js".
//
// It answers GET and HEAD with Content-Type text/javascript, a strong ETag
// (a SHA-256 of the file) and Cache-Control: no-cache, and 304 Not
// Modified to a matching If-None-Match. no-cache rather than a max-age:
// the URL carries no version, so after an upgrade of the server a cached
// copy must not keep speaking to it for minutes; revalidating costs one
// 304 without a body.
func (p *Plugin) ClientHandler() gin.HandlerFunc {
	return func(c *gin.Context) {
		h := c.Writer.Header()
		h.Set("ETag", clientETag)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		if inmMatches(c.GetHeader("If-None-Match"), clientETag) {
			c.Status(http.StatusNotModified)
			return
		}
		if c.Request.Method == http.MethodHead {
			h.Set("Content-Type", "text/javascript; charset=utf-8")
			h.Set("Content-Length", strconv.Itoa(len(clientJS)))
			c.Status(http.StatusOK)
			return
		}
		c.Data(http.StatusOK, "text/javascript; charset=utf-8", clientJS)
	}
}

// inmMatches reports whether an If-None-Match value matches tag (weak
// comparison, as RFC 9110 requires for If-None-Match).
func inmMatches(header, tag string) bool {
	if header == "" {
		return false
	}
	if strings.TrimSpace(header) == "*" {
		return true
	}
	for _, t := range strings.Split(header, ",") {
		if strings.TrimPrefix(strings.TrimSpace(t), "W/") == tag {
			return true
		}
	}
	return false
}
