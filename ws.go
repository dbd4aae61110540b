package realtime

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// wsServer is the WebSocket side of a Plugin (PROTOCOL.md §6): melody for
// the upgrade and the read loop, the plugin's own writer for every frame
// (ws_transport.go).
type wsServer struct {
	p *Plugin
	m *melody.Melody

	handlers sync.WaitGroup // one per reserved connection: the goroutine running its upgrade and read loop

	// sessions maps melody's sessions to their connections, from onConnect
	// to onDisconnect.
	sessMu   sync.RWMutex
	sessions map[*melody.Session]*wsConn
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
	w := &wsServer{p: p, sessions: make(map[*melody.Session]*wsConn)}
	m := melody.New()
	m.Config.WriteWait = p.cfg.WriteTimeout
	m.Config.PongWait = p.cfg.WSPongWait
	// melody's write goroutine never writes: every frame goes through the
	// connection's own queue and the shared writer pool, pings come from
	// the plugin's ticker. Its channel is one slot and its ping ticker
	// never fires.
	m.Config.PingPeriod = melodyNeverPing
	m.Config.MaxMessageSize = p.cfg.WSMaxMessageBytes
	m.Config.MessageBufferSize = 1
	m.Upgrader = &websocket.Upgrader{
		ReadBufferSize:   512,
		WriteBufferSize:  1024,
		WriteBufferPool:  wsWriteBuffers,
		HandshakeTimeout: p.cfg.WriteTimeout,
		CheckOrigin:      w.originAllowed,
	}
	m.HandleConnect(w.onConnect)
	m.HandleDisconnect(w.onDisconnect)
	m.HandleMessage(func(s *melody.Session, b []byte) {
		if c := w.connOf(s); c != nil {
			c.receive(b)
		}
	})
	m.HandleMessageBinary(func(s *melody.Session, _ []byte) {
		if c := w.connOf(s); c != nil {
			c.badInput("binary frames are not supported")
		}
	})
	m.HandlePong(func(s *melody.Session) {
		// melody renews the read deadline on every pong: keep the close
		// grace of a connection being closed.
		if c := w.connOf(s); c != nil && !c.c.open() {
			_ = s.WebsocketConnection().SetReadDeadline(time.Now().Add(closeGrace))
		}
	})
	m.HandleClose(func(s *melody.Session, code int, _ string) error {
		if c := w.connOf(s); c != nil {
			c.clientClosed(code)
		}
		return nil
	})
	m.HandleError(w.onError)
	w.m = m
	return w
}

func (w *wsServer) connOf(s *melody.Session) *wsConn {
	w.sessMu.RLock()
	c := w.sessions[s]
	w.sessMu.RUnlock()
	return c
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
	ident, ok := p.identify(c)
	if !ok {
		return
	}
	if !validHandshake(c.Request) {
		writeError(c, badRequest("a WebSocket handshake (version 13) is required"))
		return
	}
	k := userKey{tenant: ident.Tenant, user: ident.User}
	if err := p.pushes.reg.reserve(k, p.cfg.WSMaxConnsPerUser, p.cfg.WSMaxConnsPerTenant, &w.handlers); err != nil {
		if errors.Is(err, ErrTooManyConnections) {
			writeErrorCode(c, http.StatusTooManyRequests, "too_many_connections", "too many connections")
			return
		}
		writeError(c, fmt.Errorf("websocket: %w", err))
		return
	}
	conn := newWSConn(w, ident)
	// The connection does not keep the handler goroutine: the socket is
	// taken over here and handed, with a trimmed copy of the request (no
	// credentials), to a goroutine of its own that runs melody's upgrade
	// and read loop. net/http's per-request buffers, the gin context and
	// the handler's grown stack are released when this handler returns.
	nc, brw, err := c.Writer.Hijack()
	if err != nil {
		p.pushes.reg.release(k)
		w.handlers.Done()
		writeError(c, fmt.Errorf("websocket: hijack: %w", err))
		return
	}
	if brw.Reader.Buffered() > 0 { // data before the handshake completed
		_ = nc.Close()
		p.pushes.reg.release(k)
		w.handlers.Done()
		return
	}
	hw := &handoffWriter{nc: nc, h: http.Header{}}
	req := handshakeRequest(c.Request, conn)
	go func() {
		defer w.handlers.Done()
		// HandleRequest runs the connection (onConnect … onDisconnect)
		// and returns when it has ended; onDisconnect releases the slot.
		// On an error before the session exists it is released here.
		if err := w.m.HandleRequest(hw, req); err != nil {
			_ = nc.Close()
			p.pushes.reg.release(k)
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

// handshakeRequest copies what the upgrade needs from r, with conn in its
// context.
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

// onConnect starts the connection: its writer, then its registration for
// pushes and presence, which queues the connected frame first. A
// connection that cannot register (the plugin is closing) is closed with
// 1001.
func (w *wsServer) onConnect(s *melody.Session) {
	c, _ := s.Request.Context().Value(connCtxKey{}).(*wsConn)
	w.sessMu.Lock()
	w.sessions[s] = c
	w.sessMu.Unlock()
	c.s = s
	// Nothing reads the handshake request after the upgrade: let it go
	// (~1 KiB per connection).
	s.Request = nil
	c.start(s.WebsocketConnection())
}

// onDisconnect removes the connection from every index, detaches its
// record subscriptions and frees its slot.
func (w *wsServer) onDisconnect(s *melody.Session) {
	c := w.connOf(s)
	c.stop()
	w.sessMu.Lock()
	delete(w.sessions, s)
	w.sessMu.Unlock()
}

// onError receives melody's errors (its read loop's: melody writes
// nothing): a frame over the size limit has been answered with 1009 by
// gorilla, and the rest of it is drained so that the client reads the code.
func (w *wsServer) onError(s *melody.Session, err error) {
	c := w.connOf(s)
	if c == nil {
		return
	}
	if errors.Is(err, websocket.ErrReadLimit) {
		c.c.close(ErrClosed) // gorilla wrote the close frame: nothing more
		drain(s.WebsocketConnection().NetConn())
	}
}

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
		if ss, e := w.m.Sessions(); e == nil {
			for _, s := range ss {
				_ = s.WebsocketConnection().Close()
			}
		}
		<-done
	}
	_ = w.m.Close()
	return err
}
