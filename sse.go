package realtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
)

// handleSubscribe serves GET …/:id/subscribe (record stream) and
// GET …/subscribe (collection stream, record false). A fixed collection
// comes from RegisterCollection; otherwise it is the :collection parameter.
func (p *Plugin) handleSubscribe(collection string, record bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		ident, ok := p.identify(c)
		if !ok {
			return
		}
		key, err := routeKey(c, ident, collection, record)
		if err != nil {
			writeError(c, err)
			return
		}
		lastID := c.GetHeader("Last-Event-ID")
		if lastID == "" {
			lastID = c.Query("lastEventId")
		}
		p.serveStream(c, key, ident, lastID)
	}
}

// routeKey builds the stream key of a request from its route.
func routeKey(c *gin.Context, ident *Identity, collection string, record bool) (StreamKey, error) {
	if collection == "" {
		collection = c.Param("collection")
	}
	key := StreamKey{Tenant: ident.Tenant, Collection: collection}
	if record {
		key.ID = c.Param("id")
		if err := validName("id", key.ID); err != nil {
			return key, err
		}
	}
	return key, validName("collection", key.Collection)
}

func validName(what, s string) error {
	if s == "" || len(s) > 512 || bytes.ContainsAny([]byte(s), "\r\n\x00") {
		return badRequest("invalid " + what)
	}
	return nil
}

// serveStream answers an SSE subscription: the first frames of §3, then live
// events until the client leaves, the plugin closes or access is revoked.
func (p *Plugin) serveStream(c *gin.Context, key StreamKey, ident *Identity, lastID string) {
	hijack := !p.cfg.DisableHijack && c.Request.ProtoMajor == 1
	t := viaHandler
	if hijack {
		t = viaPool
	}
	s := newSubscriber(p, key, ident, t)
	if !p.track(s) {
		writeError(c, fmt.Errorf("subscribe: %w", ErrClosed))
		return
	}
	first, base, skip, err := p.prepare(c.Request.Context(), s, lastID)
	if err != nil {
		p.untrack(s)
		p.logFailure("subscribe", err)
		writeError(c, err)
		return
	}
	if hijack {
		if p.serveHijacked(c, s, first, base, skip) {
			return
		}
		s.transport = viaHandler // the writer cannot be taken over: stay on the handler
		s.wake = make(chan struct{}, 1)
	}
	p.serveOnHandler(c, s, first, base, skip)
}

// prepare attaches s in holding mode and computes its first frames; on error
// it detaches s again.
func (p *Plugin) prepare(ctx context.Context, s *subscriber, lastID string) ([]item, uint64, string, error) {
	if p.cluster != nil {
		p.cluster.watch(ctx, s) // before the first frames are read: no gap
	}
	mu := p.hub.stripe(s.key)
	mu.Lock()
	p.hub.attachLocked(s) // s holds since newSubscriber
	mu.Unlock()
	first, base, skip, err := p.firstFrames(ctx, s.key, s.ident, lastID)
	if err != nil {
		p.detach(s)
		return nil, 0, "", err
	}
	return first, base, skip, nil
}

// serveHijacked takes the HTTP/1.1 connection over: the response head and
// every frame are written by the plugin (chunked), and one small goroutine
// reads to notice the client leaving. It reports false when the connection
// cannot be hijacked (nothing has been written then).
func (p *Plugin) serveHijacked(c *gin.Context, s *subscriber, first []item, base uint64, skip string) bool {
	conn, _, err := http.NewResponseController(c.Writer).Hijack()
	if err != nil {
		return false
	}
	_ = conn.SetDeadline(time.Time{})
	h := c.Writer.Header().Clone()
	streamHeaders(h)
	h.Del("Transfer-Encoding")
	h.Set("Connection", "close")
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\n")
	_ = h.Write(&head)
	head.WriteString("Transfer-Encoding: chunked\r\n\r\n")
	retry := p.retry
	head.WriteString(strconv.FormatInt(int64(len(retry)), 16))
	head.WriteString("\r\n")
	head.Write(retry)
	head.WriteString("\r\n")
	_ = conn.SetWriteDeadline(time.Now().Add(p.cfg.WriteTimeout))
	if _, err := conn.Write(head.Bytes()); err != nil {
		_ = conn.Close()
		p.detach(s)
		p.untrack(s)
		return true
	}
	s.mu.Lock()
	s.conn = conn
	gone := s.state == subClosed // overflowed while holding: close what close could not
	s.mu.Unlock()
	if gone {
		_ = conn.Close()
	}
	go func() { // the connection's only goroutine; counted by track
		var b [16]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				break
			}
		}
		s.close(errClientGone)
		p.detach(s)
		p.untrack(s)
	}()
	s.release(first, base, skip)
	return true
}

var errClientGone = errors.New("realtime: client went away")

// serveOnHandler streams through the handler's ResponseWriter (HTTP/2, or
// when hijacking is off); the handler goroutine writes.
func (p *Plugin) serveOnHandler(c *gin.Context, s *subscriber, first []item, base uint64, skip string) {
	defer func() {
		s.close(errClientGone)
		p.detach(s)
		p.untrack(s)
	}()
	w := c.Writer
	rc := http.NewResponseController(w)
	streamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) error {
		if err := rc.SetWriteDeadline(time.Now().Add(p.cfg.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := write(p.retry); err != nil {
		return
	}
	s.release(first, base, skip)
	ctx := c.Request.Context()
	for {
		select {
		case <-s.wake:
			if flushHandler(p.baseCtx, s, write) {
				return
			}
		case <-s.done:
			return
		case <-ctx.Done():
			return
		}
	}
}

// logFailure logs errors that are the server's fault (not the client's).
func (p *Plugin) logFailure(op string, err error) {
	if status, _, _ := statusOf(err); status >= 500 {
		p.log.Error("realtime: "+op+" failed", "err", err)
	}
}
