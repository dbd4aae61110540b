package realtime

import (
	"sync"
	"sync/atomic"
)

// conn is the outgoing side of one client connection: the bounded queue
// every frame for the client waits in, and the transport that writes it.
// A hijacked SSE stream, an SSE stream on its handler, a long poll and a
// WebSocket are each one conn; the record subscriptions and the push
// target of a connection queue their frames here, so a connection's frames
// leave in the order they were queued.
//
// A conn with frames queued is handed, at most once at a time, to whoever
// drains it (kick): the shared writer pool, or for a conn whose writes must
// stay on its handler goroutine (HTTP/2, DisableHijack, long polls) that
// goroutine, woken through wake. The drainer is the conn's only writer: it
// takes the whole queue and gives it to the transport, which writes it in
// one write where it can.
//
// Overflow policy: the queue is bounded (max); when it is full the
// transport's overflow decides (an SSE stream is disconnected, a WebSocket
// closed with 1013): never a silent drop. mu also guards the state of the
// conn's subscriptions (subscription.go), so that a frame is admitted and
// queued under one lock.
type conn struct {
	t    transport
	pool *writerPool
	max  int // queue bound
	// coalesces: the pool may delay c's writes to join its frames
	// (writerPool): a WebSocket, whose queue (WSSendQueue) holds what a
	// delay gathers. SSE streams, with their smaller queues, are written
	// as soon as a writer is free.
	coalesces bool
	// pressed: the queue is more than half full, counted by the pool
	// (writerPool.press), until it is taken or dropped.
	pressed bool
	// full: c waits to coalesce and holds coalesceMax frames, counted by
	// the pool (writerPool.fill), until its queue is taken or dropped.
	full bool
	wake chan struct{} // non-nil: drained by its handler goroutine, woken here
	// solo: the conn carries one stream (an SSE stream, a long poll), so it
	// counts as one subscriber (Plugin.Subscribers).
	solo bool
	// ident is the client's identity (its expiry ends the conn).
	ident *Identity
	// expires is when c must end (unix ns: the token's exp + leeway; 0:
	// never), checked before each write (drain) and by the plugin's
	// expiry heap, which keeps c's position in expIdx (under its lock).
	expires atomic.Int64
	expIdx  int
	// kind is the conn's transport, key the stream of a solo record or
	// collection stream (nil otherwise): for Stats and logs (stats_conns.go).
	kind connKind
	key  *StreamKey
	// frames counts the frames written (per batch, by the drainer); wrote
	// is what the transport's last write wrote, read and reset by the
	// drainer's meter (stats_meter.go).
	frames atomic.Uint64
	wrote  int
	// ended is set, under mu, once state leaves connOpen: read without
	// the lock by a push that counts its targets before it queues to them
	// (pushes.deliver).
	ended atomic.Bool

	mu        sync.Mutex
	ready     bool // the transport can write: until then nothing is kicked
	state     connState
	sealed    bool // ending, and nothing more may be queued (a close frame ahead of the queue)
	queue     []out
	spare     []out // a drained queue kept for reuse
	scheduled bool  // handed to its drainer, not yet settled
	// coalesce: c's last write carried coalesceFrames frames or more, so
	// the writer pool delays its next write (writerPool). Set by its
	// drainer when it settles; read by whoever kicks c next (after taking
	// mu to schedule it). Only a conn that coalesces (a WebSocket) sets it.
	coalesce bool
	due      int64         // when c may be written, while in the pool's later (pool clock, pool.mu)
	signal   bool          // the transport has something of its own to write (a ping)
	cause    error         // why it closed
	done     chan struct{} // closed once closed; made on first use (doneChan)

	why    endReason // why it ended, when decided before it closed (expired, revoked)
	opened int64     // when tracked (monotonic nanoseconds, stats_conns.go)
}

// connState is a conn's life: open, ending (write what is queued, then end
// cleanly), closed (nothing more is written).
type connState uint8

const (
	connOpen connState = iota
	connEnding
	connClosed
)

// transport writes a conn's frames to its client: one implementation next
// to each transport's handler (sse.go, poll.go, ws_transport.go).
type transport interface {
	// write encodes batch and writes it to the client, in one write where
	// it can; with end it then ends the stream cleanly (SSE: the final
	// chunk; WebSocket: the close frame). signal reports that the
	// transport asked to be called (conn.signalTransport) even with nothing
	// queued. It runs on the conn's only writer, without c.mu.
	write(c *conn, batch []out, end, signal bool) error
	// overflow is called, c.mu held, when c's queue is full: it closes or
	// ends c (closeLocked, endLocked).
	overflow(c *conn)
	// closed is called once, c.mu held, when c has closed: the transport
	// releases its connection (it must neither block nor take c.mu).
	closed(c *conn)
}

// out is one entry of a conn's queue: an event, which the conn's transport
// encodes (Event.kind says what it is: a record event, a push, a
// WebSocket answer…). Two words: queues hold many under load, and the
// fan-out copies one per subscriber.
type out struct {
	ev  *Event
	sub *subscription // the record subscription ev belongs to: re-checked before it is written
}

// item is an out on its way to a queue, with ev's position in its stream
// (0: outside it), by which the hand-overs drop what a replay already
// carried: a live event, first frames, a held event, a replayed push.
type item struct {
	ev  *Event
	seq uint64
	sub *subscription
}

// out is what it is queued as.
func (it item) out() out { return out{ev: it.ev, sub: it.sub} }

func newConn(t transport, pool *writerPool, max int, onHandler bool) *conn {
	c := &conn{t: t, pool: pool, max: max, expIdx: -1}
	if onHandler {
		c.wake = make(chan struct{}, 1)
	}
	return c
}

// pushLocked queues o (c.mu held) and reports whether c must be kicked. A
// full queue is the transport's overflow.
func (c *conn) pushLocked(o out) bool {
	if c.state != connOpen {
		return false
	}
	return c.appendLocked(o, true)
}

// appendLocked is pushLocked for a conn open or ending: a subscription's
// first frames (not bounded: a replay is bounded by the buffer) and the
// events held meanwhile, queued before the end they were decided before.
func (c *conn) appendLocked(o out, bounded bool) bool {
	if c.state == connClosed || c.sealed {
		return false
	}
	if bounded && len(c.queue) >= c.max {
		c.t.overflow(c)
		return false
	}
	if c.queue == nil && c.spare != nil {
		c.queue, c.spare = c.spare, nil
	}
	c.queue = append(c.queue, o)
	if bounded && !c.pressed && 2*len(c.queue) > c.max && c.pool != nil {
		c.pressed = true
		c.pool.press(1)
	}
	if c.coalesce && !c.full && len(c.queue) >= coalesceMax {
		c.full = true
		c.pool.fill(1)
	}
	return c.scheduleLocked()
}

// unpressLocked is called when c's queue is taken or dropped.
func (c *conn) unpressLocked() {
	if c.pressed {
		c.pressed = false
		c.pool.press(-1)
	}
	if c.full {
		c.full = false
		c.pool.fill(-1)
	}
}

// scheduleLocked marks c scheduled; true when it was not and c is ready
// (the caller kicks).
func (c *conn) scheduleLocked() bool {
	if c.scheduled || !c.ready {
		return false
	}
	c.scheduled = true
	return true
}

// setReady marks c writable and kicks it if something waits.
func (c *conn) setReady() {
	c.mu.Lock()
	c.ready = true
	kick := (len(c.queue) > 0 || c.signal || c.state == connEnding) && c.scheduleLocked()
	c.mu.Unlock()
	if kick {
		c.kick()
	}
}

// send queues o and kicks c; false when c no longer takes frames.
func (c *conn) send(o out) bool {
	c.mu.Lock()
	ok := c.state == connOpen
	kick := c.pushLocked(o)
	ok = ok && c.state == connOpen
	c.mu.Unlock()
	if kick {
		c.kick()
	}
	return ok
}

// signalTransport asks for a write call even with nothing queued (a ping);
// false once c no longer takes frames.
func (c *conn) signalTransport() bool {
	c.mu.Lock()
	if c.state != connOpen {
		c.mu.Unlock()
		return false
	}
	c.signal = true
	kick := c.scheduleLocked()
	c.mu.Unlock()
	if kick {
		c.kick()
	}
	return true
}

// kick hands c to its drainer. It never blocks and takes none of c's
// locks: callers may hold c.mu.
func (c *conn) kick() {
	if c.wake == nil {
		c.pool.add(c)
		return
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// kickAll kicks many conns, those of the writer pool with one lock.
func kickAll(pool *writerPool, cs []*conn) {
	pool.feed()
	n := 0
	for _, c := range cs {
		if c.wake != nil {
			c.kick()
			continue
		}
		cs[n] = c
		n++
	}
	pool.addMany(cs[:n])
}

// end asks for a clean end after what is queued.
func (c *conn) end() {
	c.mu.Lock()
	kick := c.endLocked()
	c.mu.Unlock()
	if kick {
		c.kick()
	}
}

// endLocked is end with c.mu held; it reports whether c must be kicked.
func (c *conn) endLocked() bool {
	if c.state != connOpen {
		return false
	}
	c.state = connEnding
	c.ended.Store(true)
	return c.scheduleLocked()
}

// sealLocked ends c at once, dropping what is queued: nothing more is
// queued, and the transport writes only its end (a WebSocket's close frame
// ahead of its queued frames). It reports whether c must be kicked.
func (c *conn) sealLocked() bool {
	if c.state != connOpen {
		return false
	}
	c.sealed = true
	clear(c.queue)
	c.queue = c.queue[:0]
	c.unpressLocked()
	return c.endLocked()
}

// close closes c at once with cause: nothing more is written.
func (c *conn) close(cause error) {
	c.mu.Lock()
	c.closeLocked(cause)
	c.mu.Unlock()
}

// closeLocked closes c (c.mu held), once, and tells its transport.
func (c *conn) closeLocked(cause error) {
	if c.state == connClosed {
		return
	}
	c.state = connClosed
	c.ended.Store(true)
	c.cause = cause
	clear(c.queue)
	c.queue = nil
	c.unpressLocked()
	if c.done != nil {
		close(c.done)
	}
	c.t.closed(c)
}

// doneChan returns a channel closed once c is closed (for a goroutine that
// waits on c: a handler; a WebSocket never needs one).
func (c *conn) doneChan() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.state == connClosed {
			close(c.done)
		}
	}
	return c.done
}

// open reports whether c still takes frames.
func (c *conn) open() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == connOpen
}

// closeCause is why c closed (nil while open).
func (c *conn) closeCause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}
