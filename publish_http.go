package realtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

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
// and decodes its JSON body (decodeBody) into dst. On failure it has
// answered (401, 403, 413, 400) and returns false.
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
	if !p.decodeBody(c, op, dst) {
		return nil, false
	}
	return ident, true
}

// notifyRequest is the body of POST {base}/notify.
type notifyRequest struct {
	Users        []string        `json:"users"`
	ExcludeUsers []string        `json:"excludeUsers"`
	Channel      string          `json:"channel"`
	Event        string          `json:"event"`
	Data         json.RawMessage `json:"data"`
	AwaitAcks    string          `json:"awaitAcks"`
}

// handleNotify serves POST {base}/notify (publish scope).
func (p *Plugin) handleNotify(c *gin.Context) {
	var req notifyRequest
	ident, ok := p.publisherRequest(c, "notify", &req)
	if !ok {
		return
	}
	var (
		await time.Duration
		err   error
	)
	if req.AwaitAcks != "" {
		if await, err = time.ParseDuration(req.AwaitAcks); err != nil || await < 0 || await > MaxAwaitAcks {
			writeError(c, badRequest("awaitAcks must be a duration of at most 30s"))
			return
		}
	}
	res, err := p.Notify(c.Request.Context(), Notification{
		Tenant: ident.Tenant, Users: req.Users, ExcludeUsers: req.ExcludeUsers,
		Channel: req.Channel, Event: req.Event, Data: req.Data, AwaitAcks: await,
	})
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, res)
}

// readBody reads the request body of c, capped at MaxBodyBytes and bounded
// by BodyTimeout (PROTOCOL.md §1): a body that does not arrive in time is
// ErrTimeout (408 timeout), one over the cap ErrTooLarge (413). Behind a
// ResponseWriter that cannot set a read deadline (a middleware that hides
// the connection) it is read without one; the server's own ReadTimeout, if
// any, still applies.
func (p *Plugin) readBody(c *gin.Context, op string) ([]byte, error) {
	rc := http.NewResponseController(c.Writer)
	deadline := rc.SetReadDeadline(time.Now().Add(p.cfg.BodyTimeout)) == nil
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, p.cfg.MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if deadline && (err == nil || errors.As(err, &tooBig)) {
		// The rest of the request (Notify waiting for acks) must not be
		// cut by it: net/http's read for the client's end would cancel
		// the request's context at the deadline. After a timeout it
		// stays: nothing more is read from that client.
		_ = rc.SetReadDeadline(time.Time{})
	}
	var ne net.Error
	switch {
	case err == nil:
		return body, nil
	case tooBig != nil:
		return nil, fmt.Errorf("%s: %w", op, ErrTooLarge)
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		c.Header("Connection", "close") // the rest of the body is never read
		return nil, fmt.Errorf("%s: read body: %w", op, ErrTimeout)
	}
	return nil, badRequest("unreadable body")
}
