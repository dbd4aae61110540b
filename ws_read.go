package realtime

import (
	"encoding/binary"
	"net"
	"time"
)

// The WebSocket's read side (RFC 6455 §5). melody upgrades the connection
// and keeps its session; the plugin reads the client's frames itself, on
// the connection's handler goroutine, from inside melody's connect handler:
// melody's own read loop and write goroutine start only once it returns,
// to find the connection closed. An idle connection therefore holds one
// goroutine, parked in a two-byte read at the top of a shallow stack, and
// no read buffer: its payloads are allocated per message. (melody would
// keep a write goroutine with a ticker per connection, and gorilla a read
// buffer, for nothing the plugin needs.)

// wsOp is a frame's opcode.
const (
	opContinuation = 0x0
	opBinary       = 0x2
)

// readLoop reads frames until the connection ends. Messages go to the
// inbox (receive); pings are answered through the writer; a client's close
// is echoed; a protocol error, an invalid UTF-8 text or a message over
// WSMaxMessageBytes closes the connection (1002, 1007, 1009) and the rest
// of the client's input is read and discarded until it closes or
// closeGrace passes, so that it reads the code. Between frames it waits in
// a two-byte read with little on its stack, so that an idle connection's
// stack shrinks to its smallest; no read deadline is set per frame: the
// ping ticker closes a connection silent for WSPongWait (wsTransport.ping).
func (c *wsConn) readLoop(nc net.Conn) {
	var st frameState
	for {
		var hdr [2]byte
		if !readFull(nc, hdr[:]) || !c.readFrame(nc, hdr, &st) {
			return
		}
	}
}

// frameState is what the read loop keeps between frames: a fragmented
// message being assembled.
type frameState struct {
	msg   []byte
	msgOp byte
	inMsg bool
}

// readFrame reads the rest of the frame whose first two bytes are hdr and
// handles it; false when the connection is over.
func (c *wsConn) readFrame(nc net.Conn, hdr [2]byte, st *frameState) bool {
	c.wt.lastRead.Store(time.Now().UnixNano())
	fail := func(code int, reason string) bool {
		c.closeWith(code, reason)
		drain(nc)
		return false
	}
	fin, op := hdr[0]&0x80 != 0, hdr[0]&0x0f
	if hdr[0]&0x70 != 0 || hdr[1]&0x80 == 0 {
		return fail(closeProtocolError, "reserved bits or unmasked frame")
	}
	n := int64(hdr[1] & 0x7f)
	var ext [8]byte
	switch n {
	case 126:
		if !readFull(nc, ext[:2]) {
			return false
		}
		n = int64(binary.BigEndian.Uint16(ext[:2]))
	case 127:
		if !readFull(nc, ext[:8]) {
			return false
		}
		u := binary.BigEndian.Uint64(ext[:])
		if u > 1<<62 {
			return fail(closeProtocolError, "frame length")
		}
		n = int64(u)
	}
	control := op >= 0x8
	if control && (n > 125 || !fin) {
		return fail(closeProtocolError, "control frame too long or fragmented")
	}
	if !control && int64(len(st.msg))+n > c.ws.p.cfg.WSMaxMessageBytes {
		return fail(closeMessageTooBig, "message too big")
	}
	var mask [4]byte
	if !readFull(nc, mask[:]) {
		return false
	}
	payload := make([]byte, n)
	if !readFull(nc, payload) {
		return false
	}
	for i := range payload {
		payload[i] ^= mask[i&3]
	}
	switch op {
	case opPing:
		c.wt.pong(c.c, payload)
	case opPong:
		// Its arrival is all that matters (lastRead).
	case opClose:
		code := 1005 // no status received
		if len(payload) >= 2 {
			code = int(binary.BigEndian.Uint16(payload))
		}
		c.clientClosed(code)
		return false
	case opText, opBinary:
		if st.inMsg {
			return fail(closeProtocolError, "new message inside a fragmented one")
		}
		if !fin {
			st.msg, st.msgOp, st.inMsg = payload, op, true
			return true
		}
		return c.dispatch(nc, op, payload)
	case opContinuation:
		if !st.inMsg {
			return fail(closeProtocolError, "continuation without a message")
		}
		st.msg = append(st.msg, payload...)
		if !fin {
			return true
		}
		data, dop := st.msg, st.msgOp
		st.msg, st.inMsg = nil, false
		return c.dispatch(nc, dop, data)
	default:
		return fail(closeProtocolError, "unknown opcode")
	}
	return true
}

// dispatch hands a whole message to the connection, through its limits
// (admit: the message rate, UTF-8); false when they closed the connection
// (the rest of the client's input is then drained).
func (c *wsConn) dispatch(nc net.Conn, op byte, data []byte) bool {
	if !c.c.open() {
		return true // closing: what the client still sends is discarded
	}
	if op == opBinary {
		c.receiveBinary()
	} else {
		c.receive(data)
	}
	if c.refused {
		drain(nc)
		return false
	}
	return true
}

// readFull reads len(b) bytes; false on any error (the connection is over).
func readFull(nc net.Conn, b []byte) bool {
	for len(b) > 0 {
		n, err := nc.Read(b)
		if err != nil {
			return false
		}
		b = b[n:]
	}
	return true
}
