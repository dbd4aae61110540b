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
		var req publishRequest
		ident, ok := p.publisherRequest(c, "publish", &req)
		if !ok {
			return
		}
		key, err := routeKey(c, ident, collection, true)
		if err != nil {
			writeError(c, err)
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

// publisherRequest authenticates a server-to-server request (publish scope)
// and decodes its JSON body, capped at MaxBodyBytes, into dst. On failure it
// has answered (401, 403, 413, 400) and returns false.
func (p *Plugin) publisherRequest(c *gin.Context, op string, dst any) (*Identity, bool) {
	ident, ok := p.identify(c)
	if !ok {
		return nil, false
	}
	if !ident.HasScope(ScopePublish) {
		p.stats.authFailed(authScope)
		writeError(c, fmt.Errorf("%s: %w: publish scope required", op, ErrForbidden))
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, p.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(c, fmt.Errorf("%s: %w", op, ErrTooLarge))
			return nil, false
		}
		writeError(c, badRequest("unreadable body"))
		return nil, false
	}
	if err := json.Unmarshal(body, dst); err != nil {
		writeError(c, badRequest("body must be a JSON object with event and data"))
		return nil, false
	}
	return ident, true
}
