package main

import (
	"bytes"
	"strconv"
	"syscall"
)

// wsKey is the fixed Sec-WebSocket-Key of the raw clients.
const wsKey = "dGhlIHNhbXBsZSBub25jZQ=="

// wsUpgradeRequest is the handshake, written by hand.
func wsUpgradeRequest(host, path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + wsKey + "\r\nUser-Agent: bench\r\n\r\n"
}

// wsClientFrame is a masked client frame (FIN set) with opcode op. The mask
// key is fixed: the benchmark needs valid frames, not unpredictable ones.
func wsClientFrame(op byte, payload []byte) []byte {
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	b := make([]byte, 0, len(payload)+14)
	b = append(b, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	b = append(b, mask[:]...)
	for i, x := range payload {
		b = append(b, x^mask[i&3])
	}
	return b
}

// wsMaxMessage bounds what a client keeps of one message (the rest is
// skipped, and its deliveries not counted).
const wsMaxMessage = 16 << 20

var (
	wsPong      = []byte("{}")
	wsPongFrame = wsClientFrame(0x1, wsPong)
)

// wsFeed parses server frames (7-, 16- and 64-bit lengths, fragmented
// messages), counts the deliveries of each text message, answers pings
// with pongs (and, for centrifuge, its {} text pings with {}) and records
// the code of a close frame. l.mu is held. cstate: 0 header, 1 payload,
// 3 ended.
func (c *clientConn) wsFeed(l *pollLoop, p []byte, now int64) {
	for len(p) > 0 && c.cstate != 3 {
		if c.cstate == 0 {
			need := 2
			for {
				if c.hlen >= 2 {
					need = 2
					switch c.hdr[1] & 0x7f {
					case 126:
						need += 2
					case 127:
						need += 8
					}
					if c.hdr[1]&0x80 != 0 {
						need += 4 // a masked server frame (not expected): skip the key
					}
				}
				if c.hlen >= need {
					break
				}
				if len(p) == 0 {
					return
				}
				c.hdr[c.hlen] = p[0]
				c.hlen++
				p = p[1:]
			}
			var n int64
			switch ln := c.hdr[1] & 0x7f; ln {
			case 126:
				n = int64(c.hdr[2])<<8 | int64(c.hdr[3])
			case 127:
				for _, b := range c.hdr[2:10] {
					n = n<<8 | int64(b)
				}
			default:
				n = int64(ln)
			}
			c.op, c.fin = c.hdr[0]&0x0f, c.hdr[0]&0x80 != 0
			c.hlen, c.remain, c.cstate = 0, n, 1
			if c.op >= 8 {
				c.ctl = c.ctl[:0]
			} else if c.op != 0 {
				c.msgOp, c.msg = c.op, c.msg[:0]
			}
		}
		k := min(int64(len(p)), c.remain)
		if c.op >= 8 {
			c.ctl = append(c.ctl, p[:k]...)
		} else if room := wsMaxMessage - len(c.msg); room > 0 {
			c.msg = append(c.msg, p[:min(k, int64(room))]...)
		}
		p = p[k:]
		c.remain -= k
		if c.remain == 0 {
			c.cstate = 0
			c.wsFrameDone(l, now)
		}
	}
}

// wsFrameDone handles a complete frame.
func (c *clientConn) wsFrameDone(l *pollLoop, now int64) {
	switch c.op {
	case 0x8: // close
		code := 1005
		if len(c.ctl) >= 2 {
			code = int(c.ctl[0])<<8 | int(c.ctl[1])
		}
		l.st.codes[strconv.Itoa(code)]++
		c.cstate = 3
	case 0x9: // ping: answer with a pong carrying its payload
		c.wsWrite(wsClientFrame(0xA, c.ctl))
	case 0xA:
	default:
		if !c.fin {
			return // more fragments follow
		}
		if c.msgOp == 0x1 {
			l.deliveries(c.msg, now)
			if c.cs.spec.pongText {
				for m := c.msg; len(m) > 0; {
					line, rest, _ := bytes.Cut(m, []byte{'\n'})
					if bytes.Equal(line, wsPong) {
						c.wsWrite(wsPongFrame)
						c.cs.pongs.Add(1)
					}
					m = rest
				}
			}
		}
		if cap(c.msg) > 64<<10 {
			c.msg = nil // do not keep a large message's buffer
		}
	}
}

// wsWrite writes a small frame to the connection (from its poll loop, or
// from the opening goroutine before the handover). A short write on a
// socket whose send buffer is full is not retried: it only carries pongs.
func (c *clientConn) wsWrite(b []byte) {
	if c.fd >= 0 {
		_, _ = syscall.Write(c.fd, b)
		return
	}
	if c.conn != nil {
		_, _ = c.conn.Write(b)
	}
}
