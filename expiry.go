package realtime

import (
	"container/heap"
	"sync"
	"time"
)

// Expiry (PROTOCOL.md §1): no frame is written on a stream or socket
// after its token's exp + leeway, and the stream or socket is closed
// within a second of that moment.
//
// Two mechanisms, neither a timer per connection:
//   - The writer: a conn's deadline (conn.expires, exp + JWTLeeway) is
//     compared with the clock before each write, in the one drain loop
//     (conn.drain): past it, what is queued is dropped and only the end is
//     written (an SSE stream's last chunk, a WebSocket's close frame 1008).
//   - The closer: every tracked conn with a deadline sits in one heap
//     ordered by deadline; the plugin's heartbeat loop pops what is due
//     every expiryTick and ends it (expireConn), so an idle connection
//     closes too.
//
// A WebSocket's refresh (ws_refresh.go) moves its deadline: the heap is
// updated, the writer reads the new value.

// expiryTick is how often the heap is looked at: a connection ends at most
// this long (plus its write) after its deadline.
const expiryTick = 250 * time.Millisecond

// expiryHeap orders the tracked conns that have a deadline. Each conn's
// expIdx is its position (-1: not in the heap), guarded by mu.
type expiryHeap struct {
	mu sync.Mutex
	h  connsByExpiry
}

// connsByExpiry implements heap.Interface.
type connsByExpiry []*conn

func (h connsByExpiry) Len() int           { return len(h) }
func (h connsByExpiry) Less(i, j int) bool { return h[i].expires.Load() < h[j].expires.Load() }
func (h connsByExpiry) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].expIdx, h[j].expIdx = i, j
}
func (h *connsByExpiry) Push(x any) {
	c := x.(*conn)
	c.expIdx = len(*h)
	*h = append(*h, c)
}
func (h *connsByExpiry) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.expIdx = -1
	return c
}

// deadlineOf is when a connection of ident must end (unix ns; 0: never).
func deadlineOf(ident *Identity, leeway time.Duration) int64 {
	if ident == nil || ident.Expires.IsZero() {
		return 0
	}
	return ident.Expires.Add(leeway).UnixNano()
}

// add sets c's deadline and, when it has one, puts it in the heap.
func (x *expiryHeap) add(c *conn, deadline int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	c.expires.Store(deadline)
	if deadline != 0 && c.expIdx < 0 {
		heap.Push(&x.h, c)
	}
}

// update moves c's deadline (a refresh). A conn that had none enters the
// heap; one no longer in it (untracked, or already expired) is left out.
func (x *expiryHeap) update(c *conn, deadline int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if c.expIdx < 0 {
		if c.expires.Load() == 0 && deadline != 0 {
			c.expires.Store(deadline)
			heap.Push(&x.h, c)
		}
		return
	}
	c.expires.Store(deadline)
	if deadline == 0 {
		heap.Remove(&x.h, c.expIdx)
		return
	}
	heap.Fix(&x.h, c.expIdx)
}

// remove takes c out of the heap (untrack).
func (x *expiryHeap) remove(c *conn) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if c.expIdx >= 0 {
		heap.Remove(&x.h, c.expIdx)
	}
}

// due pops the conns whose deadline is before now (unix ns).
func (x *expiryHeap) due(now int64) []*conn {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []*conn
	for len(x.h) > 0 && x.h[0].expires.Load() < now {
		out = append(out, heap.Pop(&x.h).(*conn))
	}
	return out
}

// expireDue ends the connections whose token expired (heartbeat loop).
func (p *Plugin) expireDue(now time.Time) {
	for _, c := range p.expiry.due(now.UnixNano()) {
		expireConn(c)
	}
}

// expirer is a transport with its own end for an expired token (a
// WebSocket closes with 1008); the others end cleanly.
type expirer interface {
	// expireLocked decides that end (c.mu held) and reports whether c must
	// be kicked.
	expireLocked(c *conn) bool
}

// expireConn ends c, whose token expired.
func expireConn(c *conn) {
	c.mu.Lock()
	kick := c.expireLocked()
	c.mu.Unlock()
	if kick {
		c.kick()
	}
}

// expireLocked is the end of c for an expired token (c.mu held): its
// transport's (a WebSocket's close 1008), else a clean end. It reports
// whether c must be kicked.
func (c *conn) expireLocked() bool {
	if c.why == endUnknown {
		c.why = endExpired
	}
	if e, ok := c.t.(expirer); ok {
		return e.expireLocked(c)
	}
	return c.endLocked()
}

// pastDeadline reports whether c's token expired at now (unix ns).
func (c *conn) pastDeadline(now int64) bool {
	d := c.expires.Load()
	return d != 0 && now > d
}
