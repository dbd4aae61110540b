package realtime

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// SSE streams (PROTOCOL.md §3, §8): the record and collection stream
// handlers, and the two transports an SSE stream is written through.
//
// An HTTP/1.1 stream is taken over from net/http (hijacked): the plugin
// writes the response head and every frame itself, as HTTP/1.1 chunks, from
// the shared writer pool (sseHijacked), and one small goroutine reads to
// notice the client leaving. An HTTP/2 stream (and every stream with
// DisableHijack) is written by its handler goroutine through the
// ResponseWriter (sseOnHandler).

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
		p.serveRecordStream(c, key, ident, lastID)
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

// serveRecordStream answers an SSE subscription: the first frames of §3,
// then live events until the client leaves, the plugin closes or access is
// revoked.
func (p *Plugin) serveRecordStream(c *gin.Context, key StreamKey, ident *Identity, lastID string) {
	st := p.newSSEStream(c, ident)
	st.c.kind, st.c.key = kindOfKey(key), &key
	s := newSubscription(p.streams, key, ident, st.c, true)
	if err := p.admit(c, st.c); err != nil {
		writeError(c, fmt.Errorf("subscribe: %w", err))
		return
	}
	first, err := p.streams.subscribe(c.Request.Context(), s, lastID)
	if err != nil {
		p.untrack(st.c)
		p.logFailure("subscribe", err)
		writeError(c, err)
		return
	}
	st.onEnd = func() { p.streams.detach(s) }
	st.serve(c, func() { s.release(first) })
}

// sseStream is one SSE response being served, on whichever transport.
type sseStream struct {
	p      *Plugin
	c      *conn
	t      *sseTransport
	onEnd  func() // detaches what feeds the stream, once it has ended
	hijack bool
}

// newSSEStream prepares the stream of request c: hijacked (HTTP/1.1, unless
// DisableHijack) or on its handler.
func (p *Plugin) newSSEStream(c *gin.Context, ident *Identity) *sseStream {
	hijack := !p.cfg.DisableHijack && c.Request.ProtoMajor == 1
	t := &sseTransport{timeout: p.cfg.WriteTimeout}
	st := &sseStream{p: p, t: t, hijack: hijack}
	st.c = newConn(t, p.pool, p.cfg.QueueSize, !hijack)
	st.c.solo = true
	st.c.ident = ident
	return st
}

// serve answers the request with the stream: the response head and the
// retry line, then release (which queues the first frames), then the
// frames until the stream ends. Every path ends with onEnd and untrack.
func (st *sseStream) serve(c *gin.Context, release func()) {
	if st.hijack {
		if st.serveHijacked(c, release) {
			return
		}
		// The writer cannot be taken over: stay on the handler.
		st.c.wake = make(chan struct{}, 1)
	}
	st.serveOnHandler(c, release)
}

// finish ends the stream's bookkeeping, once its connection is gone.
func (st *sseStream) finish(cause error) {
	st.c.close(cause)
	if st.onEnd != nil {
		st.onEnd()
	}
	st.p.untrack(st.c)
}

// serveHijacked takes the HTTP/1.1 connection over. It reports false when
// the connection cannot be hijacked (nothing has been written then).
func (st *sseStream) serveHijacked(c *gin.Context, release func()) bool {
	nc, _, err := http.NewResponseController(c.Writer).Hijack()
	if err != nil {
		return false
	}
	_ = nc.SetDeadline(time.Time{})
	h := c.Writer.Header().Clone()
	streamHeaders(h)
	h.Del("Transfer-Encoding")
	h.Set("Connection", "close")
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\n")
	_ = h.Write(&head)
	head.WriteString("Transfer-Encoding: chunked\r\n\r\n")
	retry := st.p.retry
	head.WriteString(strconv.FormatInt(int64(len(retry)), 16))
	head.WriteString("\r\n")
	head.Write(retry)
	head.WriteString("\r\n")
	_ = nc.SetWriteDeadline(time.Now().Add(st.p.cfg.WriteTimeout))
	if _, err := nc.Write(head.Bytes()); err != nil {
		_ = nc.Close()
		st.finish(err)
		return true
	}
	st.t.setConn(st.c, nc)
	go func() { // the connection's only goroutine; counted by track
		var b [16]byte
		for {
			if _, err := nc.Read(b[:]); err != nil {
				break
			}
		}
		st.finish(errClientGone)
	}()
	release()
	st.c.setReady() // after the first frames: an end decided meanwhile follows them
	return true
}

// serveOnHandler streams through the handler's ResponseWriter (HTTP/2, or
// when hijacking is off); the handler goroutine drains the conn.
func (st *sseStream) serveOnHandler(c *gin.Context, release func()) {
	w := c.Writer
	rc := http.NewResponseController(w)
	streamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	st.t.out = func(b []byte) error {
		if err := rc.SetWriteDeadline(time.Now().Add(st.p.cfg.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	defer st.finish(errClientGone)
	if err := st.t.out(st.p.retry); err != nil {
		return
	}
	release()
	st.c.setReady()
	ctx := c.Request.Context()
	done := st.c.doneChan()
	for {
		select {
		case <-st.c.wake:
			if st.c.drain(false) {
				return
			}
		case <-done:
			return
		case <-ctx.Done():
			return
		}
	}
}

// streamHeaders sets the SSE response headers.
func streamHeaders(h http.Header) {
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
}

// sseTransport writes SSE frames: on a hijacked connection (nc set) as one
// HTTP/1.1 chunk per batch with a write deadline of its own, else through
// the handler's writer (out).
type sseTransport struct {
	timeout  time.Duration
	nc       net.Conn // hijacked; nil on the handler
	deadline time.Time
	out      func([]byte) error // on the handler
}

var _ transport = (*sseTransport)(nil)

// setConn gives the transport its hijacked connection; a conn that closed
// meanwhile (overflow while holding) closes it.
func (t *sseTransport) setConn(c *conn, nc net.Conn) {
	c.mu.Lock()
	t.nc = nc
	closed := c.state == connClosed
	c.mu.Unlock()
	if closed {
		_ = nc.Close()
	}
}

// chunkRoom is the room kept before a batch for its chunk-size line.
const chunkRoom = 16

// maxScratch is the largest write buffer kept for reuse.
const maxScratch = 256 << 10

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (t *sseTransport) write(c *conn, batch []out, end, _ bool) error {
	bp := writeBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxScratch {
			writeBufs.Put(bp)
		}
	}()
	buf := (*bp)[:0]
	if t.nc != nil {
		buf = append(buf, make([]byte, chunkRoom)...)
	}
	for _, o := range batch {
		buf = append(buf, sseFrameOf(o)...)
	}
	if t.nc == nil {
		*bp = buf
		if len(buf) == 0 {
			return nil
		}
		if err := t.out(buf); err != nil {
			return err
		}
		c.wrote = len(buf)
		return nil
	}
	start := chunkRoom
	if n := len(buf) - chunkRoom; n > 0 {
		var hdr [12]byte
		h := strconv.AppendInt(hdr[:0], int64(n), 16)
		h = append(h, '\r', '\n')
		start = chunkRoom - len(h)
		copy(buf[start:], h)
		buf = append(buf, '\r', '\n')
	}
	if end {
		buf = append(buf, "0\r\n\r\n"...)
	}
	*bp = buf
	if len(buf) == start {
		return nil
	}
	t.renewDeadline()
	n, err := t.nc.Write(buf[start:])
	c.wrote = n
	return err
}

// sseFrameOf is the SSE frame of a queued item (a push: event, id: its
// envelopeId, data: its envelope; a record event: its frame).
func sseFrameOf(o out) []byte {
	return o.ev.SSEFrame()
}

// renewDeadline keeps a write deadline of between timeout/2 and timeout
// ahead of every write, renewing it only when less than half is left:
// setting a deadline costs as much as a tenth of a small write. Only the
// conn's drainer calls it.
func (t *sseTransport) renewDeadline() {
	now := time.Now()
	if t.deadline.Sub(now) >= t.timeout/2 {
		return
	}
	t.deadline = now.Add(t.timeout)
	_ = t.nc.SetWriteDeadline(t.deadline)
}

// overflow disconnects a stream that cannot keep up (PROTOCOL.md §3): its
// client reconnects and resumes from its Last-Event-ID.
func (t *sseTransport) overflow(c *conn) {
	c.closeLocked(ErrSlowSubscriber)
}

// closed closes the hijacked connection: a blocked write and the reader
// goroutine wake up. On the handler, the handler sees c.done.
func (t *sseTransport) closed(c *conn) {
	if t.nc != nil {
		_ = t.nc.Close()
	}
}

// heartbeat queues a keepalive comment (from the plugin's heartbeat ticker).
func (t *sseTransport) heartbeat(c *conn) { c.send(out{ev: keepaliveEvent}) }

// logFailure logs errors that are the server's fault (not the client's).
func (p *Plugin) logFailure(op string, err error) {
	if status, _, _ := statusOf(err); status >= 500 {
		p.log.Error("realtime: request failed", "op", op, "err", err)
	}
}
