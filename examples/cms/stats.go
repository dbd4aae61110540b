package main

import (
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/ginrealtime/realtime"
)

// getStats serves GET /api/v1/stats (publish scope): this instance's
// realtime.Stats as JSON, the shape of the Go struct (see its doc): open
// connections, subscriptions, deliveries, resyncs, disconnects, the
// broker, the queue, the outbox, the buffer and the writers.
func (a *app) getStats(c *gin.Context) {
	ident, ok := realtime.IdentityFrom(c)
	if !ok || !ident.HasScope(realtime.ScopePublish) {
		errorJSON(c, http.StatusForbidden, "forbidden", "publish scope required")
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, a.rt.Stats())
}
