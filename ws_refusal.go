package realtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

// WebSocket refusals a browser can read (PROTOCOL.md §6). A browser's
// WebSocket cannot read the status of a refused handshake: a 401 and a
// server that is down look alike (close 1006). So, unless
// Config.WSRefuseBeforeUpgrade, a handshake refused for its credentials or
// a connection cap is accepted, answered with one error frame
// ({"type":"error","code":…,"message":…}) and closed at once with 4401,
// 4403 or 4429. Such a socket never becomes a connection of the plugin: no
// melody session, no conn, no registration, no presence, no slot; what the
// client sends is read and discarded until its close frame (or closeGrace),
// so that it reads the code before the TCP connection closes. Normal
// connections are untouched by this path.

// refusalClose is the close code of a refusal err: 4401, 4403 or 4429;
// false for any other error (answered as HTTP).
func refusalClose(err error) (int, bool) {
	switch {
	case errors.Is(err, ErrUnauthorized):
		return closeUnauthorized, true
	case errors.Is(err, ErrForbidden):
		return closeForbidden, true
	case errors.Is(err, ErrTooManyConnections):
		return closeTooManyConnections, true
	}
	return 0, false
}

// refuse answers a refused WebSocket request of c: as a socket closed with
// the refusal's code, or (WSRefuseBeforeUpgrade, a request that is not a
// valid handshake, an error that is not a refusal) as plain HTTP.
func (w *wsServer) refuse(c *gin.Context, err error) {
	code, ok := refusalClose(err)
	if !ok || w.p.cfg.WSRefuseBeforeUpgrade || !validHandshake(c.Request) {
		writeError(c, err)
		return
	}
	if !w.hold() {
		writeError(c, fmt.Errorf("websocket: %w", ErrClosed))
		return
	}
	nc, brw, herr := c.Writer.Hijack()
	if herr != nil {
		w.handlers.Done()
		writeError(c, fmt.Errorf("websocket: hijack: %w", herr))
		return
	}
	if brw.Reader.Buffered() > 0 { // data before the handshake completed
		_ = nc.Close()
		w.handlers.Done()
		return
	}
	req := handshakeRequest(c.Request, nil)
	go func() {
		defer w.handlers.Done()
		w.closeRefused(nc, req, code, err)
	}()
}

// hold counts one more handler goroutine in w.handlers unless the plugin
// is closed (under the lock Close sets closed with, so that Close's wait
// cannot miss it).
func (w *wsServer) hold() bool {
	p := w.p
	p.liveMu.Lock()
	defer p.liveMu.Unlock()
	if p.closed.Load() {
		return false
	}
	w.handlers.Add(1)
	return true
}

// closeRefused completes the handshake on nc, writes the error frame of
// err and a close frame of code, then reads and discards until the
// client's close frame, an error or closeGrace, and closes nc.
func (w *wsServer) closeRefused(nc net.Conn, req *http.Request, code int, err error) {
	conn, uerr := w.m.Upgrader.Upgrade(&handoffWriter{nc: nc, h: http.Header{}}, req, nil)
	if uerr != nil {
		_ = nc.Close()
		return
	}
	defer conn.Close()
	_, name, msg := statusOf(err)
	frame, _ := json.Marshal(wsError{Type: "error", Code: name, Message: msg})
	deadline := time.Now().Add(w.p.cfg.WriteTimeout)
	_ = conn.SetWriteDeadline(deadline)
	if conn.WriteMessage(websocket.TextMessage, frame) != nil {
		return
	}
	if conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, name), deadline) != nil {
		return
	}
	// Nothing more is written: neither the echo of the client's close
	// (ours went first) nor pongs.
	conn.SetCloseHandler(func(int, string) error { return nil })
	conn.SetPingHandler(func(string) error { return nil })
	_ = conn.SetReadDeadline(time.Now().Add(closeGrace))
	for {
		_, r, err := conn.NextReader()
		if err != nil {
			return // the client's close frame, its end, or closeGrace
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return
		}
	}
}
