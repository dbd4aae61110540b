package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func testLoop(spec implSpec) (*pollLoop, *clientConn) {
	cs := &clientSet{spec: spec}
	l := &pollLoop{cs: cs, st: loopStats{codes: map[string]int{}}}
	c := &clientConn{cs: cs, fd: -1, ws: spec.table == "ws"}
	return l, c
}

// feedSplit feeds b to c in pieces of n bytes (every boundary a parser
// must carry state across).
func feedSplit(l *pollLoop, c *clientConn, b []byte, n int) {
	for len(b) > 0 {
		k := min(n, len(b))
		c.body(l, b[:k], time.Now().UnixNano())
		b = b[k:]
	}
}

func TestSSEChunkedCountsEveryT(t *testing.T) {
	now := time.Now().UnixNano()
	var body strings.Builder
	body.WriteString("retry: 2000\n\n:\n")
	for i := range 5 {
		body.WriteString(fmt.Sprintf("id: x%d\nevent: changed\ndata: {\"i\":%d,\"t\":%d}\n\n", i, i, now-int64(time.Millisecond)))
	}
	body.WriteString("data: {}\n\n") // a ping: no delivery
	payload := body.String()
	var wire strings.Builder
	for len(payload) > 0 { // chunks of 17 bytes
		k := min(17, len(payload))
		wire.WriteString(fmt.Sprintf("%x\r\n%s\r\n", k, payload[:k]))
		payload = payload[k:]
	}
	for _, split := range []int{1, 3, 64, 1 << 20} {
		l, c := testLoop(implSpec{table: "sse"})
		c.chunked = true
		feedSplit(l, c, []byte(wire.String()), split)
		if l.st.events != 5 {
			t.Errorf("split %d: %d deliveries, want 5", split, l.st.events)
		}
		if p := l.st.lat.Quantile(0.5); p < time.Millisecond || p > time.Second {
			t.Errorf("split %d: p50 %v", split, p)
		}
		c.body(l, []byte("0\r\n\r\n"), now)
		if c.cstate != 3 {
			t.Errorf("split %d: the end of the chunked body was not seen", split)
		}
	}
}

func TestSSECentrifugeConnectAndPing(t *testing.T) {
	l, c := testLoop(implSpec{table: "sse", emulation: "/emulation"})
	c.cs.pongQ = make(chan pongReq, 4)
	c.body(l, []byte("\r\ndata: {\"id\":1,\"connect\":{\"client\":\"c\",\"session\":\"S\",\"node\":\"N\",\"pong\":true}}\n\ndata: {}\n\n"), 1)
	if c.session != "S" || c.node != "N" {
		t.Fatalf("session %q node %q", c.session, c.node)
	}
	select {
	case p := <-c.cs.pongQ:
		if p.session != "S" || p.node != "N" {
			t.Fatalf("pong %+v", p)
		}
	default:
		t.Fatal("no pong queued for the ping")
	}
	if l.st.events != 0 {
		t.Fatalf("%d deliveries counted from the connect reply and the ping", l.st.events)
	}
}

// serverFrame is an unmasked server frame.
func serverFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n < 1<<16:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, payload...)
}

func TestWSFramesBatchesFragmentsAndClose(t *testing.T) {
	now := time.Now().UnixNano()
	msg := func(i int) string { return fmt.Sprintf(`{"push":{"pub":{"data":{"i":%d,"t":%d}}}}`, i, now) }
	var wire []byte
	wire = append(wire, serverFrame(true, 0x1, []byte(`{"id":1,"connect":{}}`))...)
	wire = append(wire, serverFrame(true, 0x1, []byte(msg(0)+"\n"+msg(1)+"\n{}\n"+msg(2)))...) // 3 deliveries and a ping in one frame
	big := strings.Repeat(msg(3)+"\n", 2000)                                                   // > 64 KiB: a 64-bit length
	wire = append(wire, serverFrame(true, 0x1, []byte(big))...)
	wire = append(wire, serverFrame(false, 0x1, []byte(msg(4)[:10]))...) // a fragmented message
	wire = append(wire, serverFrame(true, 0x9, []byte("p"))...)          // a ping between the fragments
	wire = append(wire, serverFrame(true, 0x0, []byte(msg(4)[10:]))...)
	wire = append(wire, serverFrame(true, 0x8, []byte{0x03, 0xf5, 's', 'l', 'o', 'w'})...) // close 1013
	wire = append(wire, serverFrame(true, 0x1, []byte(msg(5)))...)                         // after the close: ignored
	for _, split := range []int{1, 5, 4096, 1 << 22} {
		l, c := testLoop(implSpec{table: "ws", pongText: true})
		feedSplit(l, c, wire, split)
		if want := int64(3 + 2000 + 1); l.st.events != want {
			t.Errorf("split %d: %d deliveries, want %d", split, l.st.events, want)
		}
		if c.cstate != 3 || l.st.codes["1013"] != 1 {
			t.Errorf("split %d: ended %v, codes %v", split, c.cstate == 3, l.st.codes)
		}
		if c.cs.pongs.Load() != 1 {
			t.Errorf("split %d: %d text pongs, want 1", split, c.cs.pongs.Load())
		}
	}
}
