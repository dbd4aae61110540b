package realtime

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// wsServer is the WebSocket side of a Plugin (PROTOCOL.md §6). melody
// upgrades each connection and runs its connect handler, which hands the
// socket over to the plugin: its own reader (ws_read.go) and writer
// (ws_transport.go). melody's session then ends: its per-session write
// goroutine, ping ticker and gorilla connection (with its read buffer) are
// not kept for a connection's life, so an idle socket holds one goroutine
// parked in a small read and the plugin's own state (see BENCHMARKS.md).
type wsServer struct {
	p *Plugin
	m *melody.Melody

	// handlers counts the connections reserved and not yet ended: the
	// goroutine running the upgrade, then the connection's reader.
	handlers sync.WaitGroup

	connsMu sync.Mutex
	conns   map[*wsConn]struct{} // served: their readers run
}

// melodyNeverPing is melody's ping period: longer than any connection lives.
const melodyNeverPing = 100 * 365 * 24 * time.Hour

// connCtxKey is the handshake request's context key holding the *wsConn,
// for onConnect (melody session keys would cost a map per connection).
type connCtxKey struct{}

// wsWriteBuffers is gorilla's write buffer pool: only its handshake and its
// close answers write through it.
var wsWriteBuffers = &sync.Pool{}

func newWSServer(p *Plugin) *wsServer {
	w := &wsServer{p: p, conns: make(map[*wsConn]struct{})}
	m := melody.New()
	m.Config.WriteWait = p.cfg.WriteTimeout
	m.Config.PongWait = p.cfg.WSPongWait
	// melody's write goroutine and read loop start only once the
	// plugin's own read loop has ended (ws_read.go), on a closed
	// connection: every frame is written through the connection's queue
	// and the shared writer pool, pings come from the plugin's ticker. Its
	// channel is one slot and its ping ticker never fires.
	m.Config.PingPeriod = melodyNeverPing
	m.Config.MaxMessageSize = p.cfg.WSMaxMessageBytes
	m.Config.MessageBufferSize = 0 // nothing is written through melody
	m.Upgrader = &websocket.Upgrader{
		ReadBufferSize:   128, // gorilla's reader is not used (ws_read.go): its smallest
		WriteBufferSize:  1024,
		WriteBufferPool:  wsWriteBuffers,
		HandshakeTimeout: p.cfg.WriteTimeout,
		CheckOrigin:      w.originAllowed,
	}
	m.HandleConnect(w.onConnect)
	m.HandleError(w.onError)
	w.m = m
	return w
}

// originAllowed is the Origin allow-list (Config.WSAllowedOrigins), used
// before the upgrade and as the upgrader's CheckOrigin.
func (w *wsServer) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	allowed := w.p.cfg.WSAllowedOrigins
	if len(allowed) == 0 {
		u, err := url.Parse(origin)
		return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
	}
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), origin) {
			return true
		}
	}
	return false
}

// handleWS serves GET {base}/ws.
func (w *wsServer) handleWS(c *gin.Context) {
	p := w.p
	// The Origin first: a page of another site gets 403 whatever
	// credentials its browser attached (cookies included).
	if !w.originAllowed(c.Request) {
		p.stats.authFailed(authOrigin)
		writeError(c, fmt.Errorf("websocket: %w: origin not allowed", ErrForbidden))
		return
	}
	ident, err := p.authenticate(c, true)
	if err != nil {
		p.refused(c, err)
		return
	}
	ident = p.kept(ident)
	if !validHandshake(c.Request) {
		writeError(c, badRequest("a WebSocket handshake (version 13) is required"))
		return
	}
	ipKey, err := p.ips.take(c)
	if err != nil {
		w.refuse(c, fmt.Errorf("websocket: %w", err))
		return
	}
	k := userKey{tenant: ident.Tenant, user: ident.User}
	if err := p.pushes.reg.reserve(k, p.cfg.WSMaxConnsPerUser, p.cfg.WSMaxConnsPerTenant, &w.handlers); err != nil {
		p.ips.release(ipKey)
		w.refuse(c, fmt.Errorf("websocket: %w", err))
		return
	}
	conn := newWSConn(w, ident)
	conn.ipKey = ipKey
	release := func() {
		p.pushes.reg.release(k)
		p.ips.release(ipKey)
		w.handlers.Done()
	}
	// The connection does not keep the handler goroutine: the socket is
	// taken over here and handed, with a trimmed copy of the request (no
	// credentials), to a goroutine of its own that runs melody's upgrade
	// and read loop. net/http's per-request buffers, the gin context and
	// the handler's grown stack are released when this handler returns.
	nc, brw, err := c.Writer.Hijack()
	if err != nil {
		release()
		writeError(c, fmt.Errorf("websocket: hijack: %w", err))
		return
	}
	if brw.Reader.Buffered() > 0 { // data before the handshake completed
		_ = nc.Close()
		release()
		return
	}
	hc := &handoffConn{Conn: nc}
	hw := &handoffWriter{nc: hc, h: http.Header{}}
	req := handshakeRequest(c.Request, conn)
	go func() {
		// HandleRequest upgrades the connection and runs onConnect, which
		// starts the plugin's reader (it ends the connection: stop, the
		// slots, handlers.Done); melody's session then ends. On an error
		// before that, the slots are released here.
		_ = w.m.HandleRequest(hw, req)
		if !conn.served {
			_ = nc.Close()
			release()
		}
	}()
}

// validHandshake checks what gorilla's upgrader would refuse before taking
// the connection over, so that every refusal is an ordinary HTTP answer.
func validHandshake(r *http.Request) bool {
	if !websocket.IsWebSocketUpgrade(r) || r.Method != http.MethodGet {
		return false
	}
	versionOK := false
	for _, v := range r.Header.Values("Sec-Websocket-Version") {
		for _, t := range strings.Split(v, ",") {
			if strings.TrimSpace(t) == "13" {
				versionOK = true
			}
		}
	}
	key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-Websocket-Key"))
	return versionOK && err == nil && len(key) == 16
}

// handshakeRequest copies what the upgrade needs from r, with conn (when
// not nil) in its context.
func handshakeRequest(r *http.Request, conn *wsConn) *http.Request {
	h := http.Header{}
	for _, k := range []string{"Connection", "Upgrade", "Sec-Websocket-Version", "Sec-Websocket-Key",
		"Sec-Websocket-Protocol", "Sec-Websocket-Extensions", "Origin"} {
		if v, ok := r.Header[k]; ok {
			h[k] = v
		}
	}
	req := &http.Request{
		Method: r.Method, URL: &url.URL{Path: r.URL.Path}, Proto: r.Proto, ProtoMajor: r.ProtoMajor,
		ProtoMinor: r.ProtoMinor, Header: h, Host: r.Host, RemoteAddr: r.RemoteAddr,
	}
	if conn == nil {
		return req
	}
	return req.WithContext(context.WithValue(context.Background(), connCtxKey{}, conn))
}

// handoffWriter is the http.ResponseWriter melody's upgrade sees: it hands
// over the connection the handler has already taken over. Every refusal
// was answered before (validHandshake), so nothing is written through it.
type handoffWriter struct {
	nc net.Conn
	h  http.Header
}

func (w *handoffWriter) Header() http.Header       { return w.h }
func (w *handoffWriter) Write([]byte) (int, error) { return 0, http.ErrHijacked }
func (w *handoffWriter) WriteHeader(int)           {}
func (w *handoffWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.nc, bufio.NewReadWriter(bufio.NewReaderSize(w.nc, 16), bufio.NewWriterSize(w.nc, 16)), nil
}

// handoffConn is the connection melody and gorilla hold: the socket until
// the upgrade is done, then (detached) a connection that reads end of file
// and whose Close does nothing, so that melody's session ends at once
// while the plugin serves the socket.
type handoffConn struct {
	net.Conn
	detached atomic.Bool
}

func (h *handoffConn) Read(b []byte) (int, error) {
	if h.detached.Load() {
		return 0, io.EOF
	}
	return h.Conn.Read(b)
}

func (h *handoffConn) Write(b []byte) (int, error) {
	if h.detached.Load() {
		return 0, net.ErrClosed
	}
	return h.Conn.Write(b)
}

func (h *handoffConn) Close() error {
	if h.detached.Load() {
		return nil
	}
	return h.Conn.Close()
}

func (h *handoffConn) SetDeadline(t time.Time) error {
	if h.detached.Load() {
		return nil
	}
	return h.Conn.SetDeadline(t)
}

func (h *handoffConn) SetReadDeadline(t time.Time) error {
	if h.detached.Load() {
		return nil
	}
	return h.Conn.SetReadDeadline(t)
}

func (h *handoffConn) SetWriteDeadline(t time.Time) error {
	if h.detached.Load() {
		return nil
	}
	return h.Conn.SetWriteDeadline(t)
}

// onConnect takes the upgraded socket over, on the upgrade's goroutine:
// the connection's writer and its registration for pushes and presence
// (the connected frame queued first), then a goroutine of its own reads
// the client (serve). melody's session, detached from the socket, ends
// when this returns. A connection that cannot register (the plugin is
// closing) is closed with 1001.
func (w *wsServer) onConnect(s *melody.Session) {
	c, _ := s.Request.Context().Value(connCtxKey{}).(*wsConn)
	// Nothing reads the handshake request after the upgrade: let it go.
	s.Request = nil
	hc := s.WebsocketConnection().NetConn().(*handoffConn)
	nc := hc.Conn
	hc.detached.Store(true)
	c.served = true
	w.connsMu.Lock()
	w.conns[c] = struct{}{}
	w.connsMu.Unlock()
	c.start(nc)
	go w.serve(c, nc)
}

// serve reads the client until the connection ends, then removes it from
// every index, detaches its record subscriptions and frees its slot.
func (w *wsServer) serve(c *wsConn, nc net.Conn) {
	defer w.handlers.Done()
	c.readLoop(nc)
	_ = nc.Close()
	c.stop()
	w.p.ips.release(c.ipKey)
	w.connsMu.Lock()
	delete(w.conns, c)
	w.connsMu.Unlock()
}

// onError receives melody's errors: its read loop's end of file once the
// plugin has taken the socket over. Nothing to do.
func (w *wsServer) onError(*melody.Session, error) {}

// drain reads and discards the client's input until it closes or
// closeGrace passes (on the connection's read goroutine), so that closing
// the socket does not reset it before the client has read the close frame.
func drain(nc net.Conn) {
	_ = nc.SetReadDeadline(time.Now().Add(closeGrace))
	_, _ = io.Copy(io.Discard, io.LimitReader(nc, 1<<30))
}

// close waits for every connection's goroutines once the plugin has
// closed them (1001); when ctx ends first the remaining sockets are closed
// at once.
func (w *wsServer) close(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		w.handlers.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("realtime: close websockets: %w", ctx.Err())
		w.connsMu.Lock()
		for c := range w.conns {
			c.c.mu.Lock()
			nc := c.wt.nc
			c.c.mu.Unlock()
			if nc != nil {
				_ = nc.Close()
			}
		}
		w.connsMu.Unlock()
		<-done
	}
	_ = w.m.Close()
	return err
}
