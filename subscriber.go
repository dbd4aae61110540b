package realtime

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// item is one entry of a subscriber's queue: an event and its position in
// the subscriber's stream (0 for frames outside the stream: snapshot,
// resync, keepalive).
type item struct {
	ev  *Event
	seq uint64
}

type subState uint8

const (
	subOpen   subState = iota
	subEnding          // write what is queued, end the stream cleanly, close
	subClosed          // closed: nothing more is written
)

// transport says who writes a subscriber's frames.
type transport uint8

const (
	// viaPool: a hijacked HTTP/1.1 connection, written by the shared writer
	// pool; its only goroutine reads to notice the peer going away.
	viaPool transport = iota
	// viaHandler: the request's handler goroutine writes (HTTP/2, no hijack)
	// or collects (long poll), woken through wake.
	viaHandler
	// viaSocket: a record followed over a WebSocket; the shared writer pool
	// checks authorization and queues its frames to the connection's
	// bounded send queue (non-blocking; overflow closes it with 1013), which
	// the pool then writes.
	viaSocket
)

// subscriber is one client following one stream.
type subscriber struct {
	p     *Plugin
	key   StreamKey
	ident *Identity
	idx   int // position in the hub's list, under the stripe lock
	// watched is set while the broker delivers key's events for s (see
	// cluster.watch); detach undoes it once.
	watched atomic.Bool

	transport transport
	poll      bool          // a long poll: no heartbeats
	conn      net.Conn      // viaPool
	ws        *wsConn       // viaSocket
	stream    *wsConn       // an SSE channel stream: its push target in the registry
	deadline  time.Time     // viaPool: the conn's write deadline, kept by its writer
	wake      chan struct{} // viaHandler, capacity 1
	done      chan struct{} // closed when the subscriber is closed

	mu        sync.Mutex
	state     subState
	holding   bool   // attached, first frames not yet queued: live events wait in held
	held      []item // live events that arrived while holding
	queue     []item // frames waiting to be written
	spare     []item // a drained queue kept for reuse
	scheduled bool   // queued on the writer pool (or wake signalled)
	lastSeq   uint64 // position of the newest stream event queued
	skipETag  string // the snapshot just queued: drop a live event of the same version
	cause     error
}

func newSubscriber(p *Plugin, key StreamKey, ident *Identity, t transport) *subscriber {
	// A subscriber holds from the start: anything pushed before release
	// (a heartbeat once it is tracked, an event once it is attached) waits
	// in held, so nothing is scheduled before its connection is ready.
	s := &subscriber{p: p, key: key, ident: ident, idx: -1, transport: t, holding: true, done: make(chan struct{})}
	if t == viaHandler {
		s.wake = make(chan struct{}, 1)
	}
	return s
}

// push queues a live event. It never blocks: a full queue closes the
// subscriber. It reports whether the subscriber must be scheduled.
func (s *subscriber) push(it item) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != subOpen {
		return false
	}
	if s.holding {
		if it.ev == keepaliveEvent {
			return false // its first frames are about to be written
		}
		if len(s.held) >= s.p.cfg.QueueSize {
			s.overflowLocked()
			return false
		}
		s.held = append(s.held, it)
		return false
	}
	if it.seq != 0 {
		if it.seq <= s.lastSeq {
			return false // already queued (replay/live hand-over)
		}
		s.lastSeq = it.seq
	}
	if s.skipETag != "" && it.ev != keepaliveEvent {
		if it.ev.ETag == s.skipETag {
			return false // the snapshot already carried this version
		}
		s.skipETag = ""
	}
	if len(s.queue) >= s.p.cfg.QueueSize {
		s.overflowLocked()
		return false
	}
	s.queue = append(s.queue, it)
	if s.scheduled {
		return false
	}
	s.scheduled = true
	return true
}

// offer pushes it and, when the subscriber must be scheduled, either
// appends it to sched (the writer pool's, scheduled by the caller in one
// batch) or wakes its handler.
func (s *subscriber) offer(it item, sched []*subscriber) []*subscriber {
	if !s.push(it) {
		return sched
	}
	if s.transport != viaHandler {
		return append(sched, s)
	}
	s.schedule()
	return sched
}

// release queues the first frames, then the live events held meanwhile that
// come after base, and starts delivery.
func (s *subscriber) release(first []item, base uint64, skip string) {
	s.mu.Lock()
	s.holding = false
	s.lastSeq = base
	s.skipETag = skip
	q := first
	for _, it := range first {
		if it.seq > s.lastSeq {
			s.lastSeq = it.seq
		}
	}
	held := s.held
	if skip != "" {
		// The version of the snapshot was published while s held: the
		// events held before it are older than the snapshot, and it is the
		// snapshot's own.
		for i, it := range held {
			if it.seq != 0 && it.ev.ETag == skip {
				held = held[i+1:]
				s.skipETag = ""
				break
			}
		}
	}
	for _, it := range held {
		if it.seq != 0 && it.seq <= s.lastSeq {
			continue
		}
		if s.skipETag != "" && it.ev != keepaliveEvent {
			if it.ev.ETag == s.skipETag {
				continue
			}
			s.skipETag = ""
		}
		if it.seq != 0 {
			s.lastSeq = it.seq
		}
		q = append(q, it)
	}
	s.held = nil
	s.queue = q
	need := false
	if s.state != subClosed && (len(q) > 0 || s.state == subEnding) && !s.scheduled {
		s.scheduled = true
		need = true
	}
	s.mu.Unlock()
	if need {
		s.schedule()
	}
}

// schedule hands the subscriber to whoever writes it.
func (s *subscriber) schedule() {
	if s.transport != viaHandler {
		s.p.writers.add(s)
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take removes and returns the queued frames and the state.
func (s *subscriber) take() ([]item, subState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = s.spare
	s.spare = nil
	return q, s.state
}

// done with a drained batch: keep the slice if small, and report whether
// more frames (or a pending end) need another round.
func (s *subscriber) settle(batch []item) (again bool) {
	clear(batch)
	s.mu.Lock()
	defer s.mu.Unlock()
	// Keep the drained slice for the next batch when it is small, or when it
	// was well used (a busy subscriber): no allocation per batch under load.
	// A big slice is let go as soon as one batch uses less than an eighth of it.
	if s.spare == nil && (cap(batch) <= 64 || 8*len(batch) >= cap(batch)) {
		s.spare = batch[:0]
	}
	if s.state == subClosed {
		s.scheduled = false
		return false
	}
	if len(s.queue) > 0 || s.state == subEnding { // end() came during the round: write the end
		return true
	}
	s.scheduled = false
	return false
}

// end asks for a clean end of the stream after what is queued.
func (s *subscriber) end() {
	s.mu.Lock()
	if s.state != subOpen {
		s.mu.Unlock()
		return
	}
	s.state = subEnding
	if s.holding { // not writable yet: release schedules the end
		s.mu.Unlock()
		return
	}
	need := !s.scheduled
	s.scheduled = true
	s.mu.Unlock()
	if need {
		s.schedule()
	}
}

// open reports whether the subscriber still takes frames.
func (s *subscriber) open() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == subOpen
}

// close closes the subscriber at once with cause.
func (s *subscriber) close(cause error) {
	s.mu.Lock()
	s.closeLocked(cause)
	s.mu.Unlock()
}

// overflowLocked closes a subscriber whose queue is full. A WebSocket's
// record subscriber takes its connection with it (1013): the client
// reconnects and resumes each record from its last ETag.
func (s *subscriber) overflowLocked() {
	s.closeLocked(ErrSlowSubscriber)
	if s.ws != nil {
		s.ws.tooSlow()
	}
}

func (s *subscriber) closeLocked(cause error) {
	if s.state == subClosed {
		return
	}
	s.state = subClosed
	s.cause = cause
	s.held = nil
	close(s.done)
	if s.conn != nil {
		_ = s.conn.Close() // wakes a blocked write and the reader goroutine
	}
}

// filter turns queued items into the events to send, checking authorization
// before each record event. It reports end when a record subscriber may no
// longer see its record (the stream must end).
func (s *subscriber) filter(ctx context.Context, batch []item, out []*Event) ([]*Event, bool) {
	auth := s.p.cfg.Authorize
	if s.key.Collection == channelCollection {
		auth = nil // a channel stream: AuthorizeChannel decided at subscribe time
	}
	for _, it := range batch {
		ev := it.ev
		if auth != nil && ev.ETag != "" {
			rec := ev.Data
			if ev.Prior != nil {
				rec = ev.Prior
			}
			if err := auth(ctx, Access{Identity: s.ident, Ref: ev.Ref, Event: ev.Type, Record: rec}); err != nil {
				if s.key.ID == "" {
					continue // collection stream: skip what this subscriber may not see
				}
				return out, true
			}
		}
		out = append(out, ev)
	}
	return out, false
}

// expired reports whether the subscriber's token has expired.
func (s *subscriber) expired(now time.Time) bool {
	return s.ident != nil && !s.ident.Expires.IsZero() && now.After(s.ident.Expires.Add(s.p.cfg.JWTLeeway))
}

// streamHeaders sets the SSE response headers.
func streamHeaders(h http.Header) {
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
}
