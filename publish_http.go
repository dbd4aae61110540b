package realtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"
)

// publishRequest is the body of POST …/:id/events.
type publishRequest struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	ETag  string          `json:"etag"`
}

// handlePublish serves POST …/:id/events for other backends (publish scope).
func (p *Plugin) handlePublish(collection string) gin.HandlerFunc {
	return func(c *gin.Context) {
		ident, ok := p.identify(c)
		if !ok {
			return
		}
		if !ident.HasScope(ScopePublish) {
			writeError(c, fmt.Errorf("publish: %w: publish scope required", ErrForbidden))
			return
		}
		key, err := routeKey(c, ident, collection, true)
		if err != nil {
			writeError(c, err)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, p.cfg.MaxBodyBytes))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeError(c, fmt.Errorf("publish: %w", ErrTooLarge))
				return
			}
			writeError(c, badRequest("unreadable body"))
			return
		}
		var req publishRequest
		if err := json.Unmarshal(body, &req); err != nil {
			writeError(c, badRequest("body must be a JSON object with event and data"))
			return
		}
		etag, err := p.Publish(c.Request.Context(), Publication{
			Tenant: key.Tenant, Collection: key.Collection, ID: key.ID,
			Event: req.Event, Data: req.Data, ETag: req.ETag,
		})
		if err != nil {
			p.logFailure("publish", err)
			writeError(c, err)
			return
		}
		c.JSON(http.StatusAccepted, gin.H{"id": etag})
	}
}
