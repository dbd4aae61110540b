package realtime

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// recordStreams is the record side of the plugin: this node's subscriptions
// of record and collection streams (hub), the broker that delivers their
// events and stores their buffers, the loader of stored records, and the
// resumes of subscriptions that may have missed events.
type recordStreams struct {
	hub     *hub
	broker  Broker
	buf     Buffer
	loader  RecordLoader
	etagOf  func(collection, id string, record any, data []byte) string
	access  *access
	resumer *resumer
	pool    *writerPool
	log     *slog.Logger
	async   func(op func(context.Context)) // broker calls off the caller's goroutine
	// down tells whether the broker reports its engine unreachable now:
	// a wait for versions that ends then does not resume (subscription.waited).
	down func() bool
	// pending: the sources of committed events not published yet
	// (AddPendingEvents).
	pending pendingSources
	// multiplexed counts the WebSocket record subscriptions (Subscribers).
	multiplexed atomic.Int64
	stats       *statsCounters
}

// subscribe starts s (holding, from newSubscription): the broker delivers
// its stream's events to this node, s is attached to them, and its first
// frames are computed from lastID. On error s is detached again. The
// caller releases s with the start once its connection can be written.
func (rs *recordStreams) subscribe(ctx context.Context, s *subscription, lastID string) (start, error) {
	s.from = lastID  // before s is shared: a resume before it sends anything starts there
	rs.watch(ctx, s) // before the first frames are read: no gap
	rs.hub.attach(s)
	st, err := rs.firstFrames(ctx, s.key, s.ident, lastID, 0)
	if err != nil {
		rs.detach(s)
		return start{}, err
	}
	st = rs.awaitPending(ctx, s, lastID, st)
	if startsWithResync(st) {
		rs.stats.resync(resyncBufferMiss, 1)
	}
	return st, nil
}

// awaitPending turns st, a resync and the stored record for a resume point
// lastID the buffer does not hold, into a wait (start.await) when a
// PendingEvents source has the version after lastID on its way and the
// stored record is not behind it: s resumes from lastID and gets those
// versions as live events, or resyncs after Config.ResumeWait. Only
// subscriptions that resume in place wait (a long poll answers at once).
func (rs *recordStreams) awaitPending(ctx context.Context, s *subscription, lastID string, st start) start {
	if lastID == "" || !startsWithResync(st) || st.version == 0 || !s.inPlace() ||
		len(st.first) < 2 || st.first[1].ev == nil || st.first[1].ev.Type != EventSnapshot {
		return st
	}
	v, ok := rs.pending.next(ctx, s.key, lastID)
	if !ok || v == 0 || v > st.version {
		return st
	}
	rs.log.Debug("realtime: resume point not buffered: waiting for the versions after it", "tenant", s.key.Tenant,
		"collection", s.key.Collection, "id", s.key.ID, "version", v-1, "stored", st.version)
	return start{version: v - 1, await: st.version}
}

// watch makes the broker deliver s's stream to this node; detach undoes it.
func (rs *recordStreams) watch(ctx context.Context, s *subscription) {
	s.watched.Store(true)
	if err := rs.broker.Watch(ctx, s.key); err != nil {
		// The broker watches once the engine is back and reports the gap
		// then: the subscription resumes.
		rs.log.Warn("realtime: broker watch failed", "err", err)
	}
}

// detach ends s: nothing more is queued for it, it leaves its stream, and
// the broker's watch is undone (off the caller's goroutine).
func (rs *recordStreams) detach(s *subscription) {
	s.end()
	rs.hub.detach(s)
	if s.watched.Swap(false) {
		key := s.key
		rs.async(func(ctx context.Context) { _ = rs.broker.Unwatch(ctx, key) })
	}
}

// deliver hands a stream's event to this node's subscriptions of it (from
// the broker, in stream order).
func (rs *recordStreams) deliver(key StreamKey, e Entry) {
	begin := time.Now()
	sp := schedPool.Get().(*[]*conn)
	sched := rs.hub.deliver(key, item{ev: e.Event, seq: e.Seq}, (*sp)[:0])
	kickAll(rs.pool, sched)
	rs.stats.fanoutSince(begin)
	clear(sched)
	*sp = sched[:0]
	schedPool.Put(sp)
}

var schedPool = sync.Pool{New: func() any { s := make([]*conn, 0, 256); return &s }}

// gap handles the broker's report that key's events may have been lost:
// its record subscriptions resume from the last ETag they sent (before any
// later delivery: under the key's stripe), collection streams get a resync
// frame (their clients refetch the list).
func (rs *recordStreams) gap(key StreamKey) {
	var sched []*conn
	n := 0
	rs.hub.each(key, func(s *subscription) {
		n++
		if key.ID != "" {
			s.resumeAfterGap()
			return
		}
		if s.offer(item{ev: resyncEvent, sub: s}) {
			sched = append(sched, s.c)
		}
	})
	kickAll(rs.pool, sched)
	rs.gapped(key, n)
}

// resyncCollection tells this node's subscriptions of a tenant's collection
// and of its records that they may have missed events (a bulk write: the
// buffers were invalidated). Record subscriptions resume in place (a long
// poll ends, its client polls again), with a resync frame of reason
// bulk-write; collection streams get the resync frame and stay.
func (rs *recordStreams) resyncCollection(tenant, collection string) {
	ev := bulkResync
	var sched []*conn
	subs := rs.hub.collect(tenant, collection)
	rs.stats.resync(resyncBulkWrite, len(subs))
	for _, s := range subs {
		if s.key.ID != "" {
			s.resume(ev)
			continue
		}
		if s.offer(item{ev: ev, sub: s}) {
			sched = append(sched, s.c)
		}
	}
	kickAll(rs.pool, sched)
}

// resumer runs the in-place resumes of record subscriptions, SSE streams
// and WebSockets' records (subscription.resumeLocked), off the goroutine
// that found the gap: the Loader and the buffer may block. At most
// workers run at once; the queue holds each waiting subscription once and
// is bounded by the number of subscriptions. It also ends the waits of
// subscriptions that wait for the versions they missed (await): one
// goroutine, while any wait is under way; the waits are bounded by the
// number of subscriptions. Close waits for the workers and that goroutine.
type resumer struct {
	rs      *recordStreams
	ctx     context.Context
	workers int
	wait    time.Duration // Config.ResumeWait

	mu      sync.Mutex
	queue   []*subscription
	running int
	closed  bool
	wg      sync.WaitGroup
	waits   []resumeWait // oldest first: their deadlines are in order
	timing  bool         // the goroutine that ends the waits runs
	stop    chan struct{}
}

// resumeWait is a subscription waiting until a deadline to have reached
// a version by live events.
type resumeWait struct {
	s       *subscription
	version uint64
	until   time.Time
}

func newResumer(ctx context.Context, workers int, wait time.Duration) *resumer {
	return &resumer{ctx: ctx, workers: workers, wait: wait, stop: make(chan struct{})}
}

// await makes s wait up to the resumer's wait for version (start.await):
// then, unless live events brought it there, it resumes again.
func (r *resumer) await(s *subscription, version uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.waits = append(r.waits, resumeWait{s: s, version: version, until: time.Now().Add(r.wait)})
	if !r.timing {
		r.timing = true
		r.wg.Add(1)
		go r.endWaits()
	}
}

// endWaits ends each wait at its deadline, until none is left.
func (r *resumer) endWaits() {
	defer r.wg.Done()
	t := time.NewTimer(r.wait)
	defer t.Stop()
	for {
		r.mu.Lock()
		now := time.Now()
		var due []resumeWait
		for len(r.waits) > 0 && !r.waits[0].until.After(now) {
			due = append(due, r.waits[0])
			r.waits[0] = resumeWait{}
			r.waits = r.waits[1:]
		}
		if len(r.waits) == 0 && len(due) == 0 || r.closed {
			r.timing = false
			r.mu.Unlock()
			return
		}
		var next time.Duration
		if len(r.waits) > 0 {
			next = r.waits[0].until.Sub(now)
		}
		r.mu.Unlock()
		for _, w := range due {
			w.s.waited(w.version)
		}
		if next == 0 {
			continue // nothing left: the loop ends, unless a wait came meanwhile
		}
		t.Reset(next)
		select {
		case <-t.C:
		case <-r.stop:
			return
		}
	}
}

// add queues s's resume (s holds; c.mu may be held: add takes only its own
// lock and never blocks).
func (r *resumer) add(s *subscription) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return // closing: s ends with its connection
	}
	r.queue = append(r.queue, s)
	if r.running < r.workers {
		r.running++
		r.wg.Add(1)
		go r.work()
	}
}

func (r *resumer) work() {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		if len(r.queue) == 0 || r.closed {
			r.running--
			r.mu.Unlock()
			return
		}
		s := r.queue[0]
		r.queue[0] = nil
		r.queue = r.queue[1:]
		r.mu.Unlock()
		r.rs.resumeNow(r.ctx, s)
	}
}

// close stops the workers once their current resume is done, and waits.
func (r *resumer) close() {
	r.mu.Lock()
	r.closed = true
	r.queue = nil
	r.waits = nil
	r.mu.Unlock()
	close(r.stop)
	r.wg.Wait()
}

// resumeNow resumes s from the last ETag it sent, as a client reconnecting
// with that Last-Event-ID: the events it missed, or a resync frame (of the
// resume's reason) and the stored record, then the live events held
// meanwhile.
func (rs *recordStreams) resumeNow(ctx context.Context, s *subscription) {
	rp, ok := s.lastSent()
	if !ok {
		return
	}
	lastID, why := rp.lastETag, rp.why
	if lastID == "" || why == bulkResync {
		// A bulk write changed records without events: what the
		// subscriber has may be stale even at the buffer's head.
		lastID, rp.wait = noResumePoint, 0
	}
	st, err := rs.firstFrames(ctx, s.key, s.ident, lastID, rp.wait)
	if err != nil {
		rs.log.Debug("realtime: resume refused", "tenant", s.key.Tenant, "collection", s.key.Collection, "id", s.key.ID, "err", err)
		if s.solo {
			// An SSE stream ends: its client's reconnect gets the refusal.
			s.c.end()
			return
		}
		s.release(start{first: []item{{ev: why, sub: s}, {ev: errorEventOf(err), sub: s}}})
		s.drop(s)
		return
	}
	if startsWithResync(st) {
		rs.log.Debug("realtime: resume point not buffered: subscription resyncs", "tenant", s.key.Tenant,
			"collection", s.key.Collection, "id", s.key.ID, "version", st.version)
	}
	for i, o := range st.first {
		if o.ev == resyncEvent {
			st.first[i].ev = why // the resume's reason
		}
	}
	for i := range st.first {
		st.first[i].sub = s
	}
	s.release(st)
}

// noResumePoint is a resume point no buffer holds (not a valid ETag): a
// subscription resumed from it gets resync and the stored record (§3).
const noResumePoint = "\x00"
