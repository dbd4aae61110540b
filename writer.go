package realtime

import (
	"sync"
	"sync/atomic"
	"time"
)

// writerPool is the set of goroutines that drain the conns (conn.go) of
// hijacked SSE streams and WebSockets: it only schedules them and
// supervises stalls; each transport owns its write code. A conn with frames
// queued sits at most once in ready; a worker takes it and drains it
// (conn.drain: everything queued, in one write per round, frames queued
// meanwhile coalescing into the next round). No connection owns a timer or
// a writing goroutine.
//
// A peer that stops reading fills its kernel buffers, and a write to it
// blocks until it reads or WriteTimeout cuts it. So that such peers never
// hold up the others, a supervisor checks the workers every stallCheck:
// when jobs wait and no worker is idle, it starts an extra worker for each
// worker that has been on its job for more than stallAfter (blocked in a
// write), at most maxExtraWriters in all. An extra worker retires once it
// finds nothing to do while n others are able to write.
//
// At most atOnce workers write at one time (Config.WritersAtOnce): a worker
// holding a job for less than stallAfter counts, one blocked for longer
// does not, so that a stalled peer never holds the others up for more
// than stallAfter. The limit is lifted while a connection's queue is more
// than half full (pressed): rather the network read late than a
// subscriber dropped for a full queue.
//
// Coalescing (Config.WriteCoalesce): a conn whose last write carried
// coalesceFrames frames or more is sent frames faster than it is written,
// and each of its writes costs a system call on the node and a wake-up of
// its client. When it is kicked again it waits in later until delay has
// passed, so that the frames of that time leave in one write: under load a
// node makes fewer, larger writes, and leaves the CPU to the rest of its
// work (reading its Broker, answering pushes). A conn written with fewer
// frames is written at once, as before: a connection sent frames at a pace
// the node keeps up with gets no delay. Conns in later are taken at once
// while any conn is pressed, once the pool closes, once one holds
// coalesceMax frames (fill: a write is as large as it needs to be, and a
// longer wait would only make the socket buffers overflow), and once no
// fan-out has queued frames for coalesceQuiet (feed): a burst that ended
// is written whole, not after the delay.
type writerPool struct {
	n       int // core workers
	atOnce  int // workers writing at once, at most
	delay   time.Duration
	pressed atomic.Int64
	full    atomic.Int64 // conns waiting in later with coalesceMax frames (fill)
	fed     atomic.Int64 // when the last fan-out queued frames (pool clock; feed)

	mu     sync.Mutex
	cond   sync.Cond
	ready  connQueue   // conns waiting for a worker
	later  connQueue   // conns waiting until they are due (conn.due), in that order
	timer  *time.Timer // wakes a worker when later's first conn is due
	timed  int64       // when timer fires (pool clock; 0: not armed)
	idle   int
	closed bool
	busy   []*workerSlot // every running worker's slot (core and extra)
	extra  int           // extra workers running
	wg     sync.WaitGroup
	stop   chan struct{}
	epoch  time.Time

	// meter counts what the drainers wrote (stats_meter.go): each worker
	// tallies its writes in a tally of its own and adds it here every
	// tallyJobs jobs and before it waits.
	meter deliveryMeter
	// checks: record frames are checked before each write
	// (Config.Authorize; checkFrames). Set by New, before any use.
	checks bool
}

// workerSlot tells since when (monotonic nanoseconds since the pool
// started; 0: waiting) a worker has held its current job.
type workerSlot struct{ since atomic.Int64 }

const (
	stallCheck      = 50 * time.Millisecond
	stallAfter      = 100 * time.Millisecond
	maxExtraWriters = 1024
	// coalesceFrames is the size of a write from which a conn counts as
	// sent frames faster than it is written (writerPool, coalescing).
	coalesceFrames = 8
	// coalesceQuiet: a pause this long in the node's fan-outs (no push or
	// event queued to its connections, writerPool.feed) ends every wait in
	// later: the burst is over, no frame will join those waiting.
	coalesceQuiet = 5 * time.Millisecond
	// coalesceMax: once a conn waiting in later holds this many frames,
	// every wait ends (writerPool.fill).
	coalesceMax = 128
)

// newWriterPool starts n workers, at most atOnce writing at once, that
// delay the conns sent frames faster than they are written by delay (0:
// never).
func newWriterPool(n, atOnce int, delay time.Duration) *writerPool {
	w := &writerPool{n: n, atOnce: min(max(atOnce, 1), n), delay: max(delay, 0), stop: make(chan struct{}), epoch: time.Now()}
	w.cond.L = &w.mu
	for range n {
		w.busy = append(w.busy, &workerSlot{})
	}
	w.wg.Add(n + 1)
	for _, slot := range w.busy {
		go w.run(slot, false)
	}
	go w.supervise()
	return w
}

// feed records a fan-out: frames were queued to the pool's conns.
func (w *writerPool) feed() { w.fed.Store(w.now()) }

// dueLocked reports whether c, in later, may be written now: its delay
// has passed, a conn is pressed or full, the pool is closing, or no
// fan-out came for coalesceQuiet.
func (w *writerPool) dueLocked(c *conn, now int64) bool {
	return c.due <= now || w.closed || w.pressed.Load() > 0 || w.full.Load() > 0 ||
		now-w.fed.Load() >= int64(coalesceQuiet)
}

// now is the pool's monotonic clock for workerSlot.
func (w *writerPool) now() int64 { return int64(time.Since(w.epoch)) + 1 }

// supervise keeps n workers able to write (see writerPool): when jobs wait
// and no worker is idle, it starts one extra worker for each worker stuck
// on its job for more than stallAfter. While extra workers exist it wakes
// the idle ones, so that those no longer needed retire.
func (w *writerPool) supervise() {
	defer w.wg.Done()
	t := time.NewTicker(stallCheck)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return
		}
		// Idle workers are woken while extra workers exist (those not
		// needed retire) and, under a limit, while jobs wait (a worker
		// stalled since the last check no longer counts against it).
		waiting := w.waitingLocked()
		wake := w.idle > 0 && (w.extra > 0 || (w.atOnce < w.n && waiting))
		if waiting && w.idle == 0 && w.extra < maxExtraWriters {
			if k := min(w.n-w.ableLocked(nil), maxExtraWriters-w.extra); k > 0 {
				w.extra += k
				w.meter.stalls.Add(uint64(k))
				w.wg.Add(k)
				for range k {
					slot := &workerSlot{}
					w.busy = append(w.busy, slot)
					go w.run(slot, true)
				}
			}
		}
		w.mu.Unlock()
		if wake {
			w.cond.Broadcast()
		}
	}
}

// waitingLocked reports whether a conn may be written now and waits for a
// worker: one in ready, or later's first once it is due.
func (w *writerPool) waitingLocked() bool {
	return w.ready.len() > 0 || (w.later.len() > 0 && w.dueLocked(w.later.first(), w.now()))
}

// ableLocked counts the workers other than self that are waiting or have
// held their job for less than stallAfter.
func (w *writerPool) ableLocked(self *workerSlot) int {
	cutoff := w.now() - int64(stallAfter)
	n := 0
	for _, b := range w.busy {
		if since := b.since.Load(); b != self && (since == 0 || since > cutoff) {
			n++
		}
	}
	return n
}

// press counts a conn whose queue became more than half full (d = 1) or
// was emptied (d = -1); the first wakes the workers waiting for the limit
// or for conns not yet due.
func (w *writerPool) press(d int64) {
	if w.pressed.Add(d) == 1 && d > 0 && (w.atOnce < w.n || w.delay > 0) {
		w.wakeAll()
	}
}

// wakeAll wakes every waiting worker after a change they check under the
// pool's lock but that is made without it (pressed, full): taking the
// lock first, no worker is between its check and its wait, where the
// wake-up would be lost (its timer would still end the wait, late).
// The caller must not hold the pool's lock (a conn's lock it may: the
// pool never takes a conn's lock under its own).
func (w *writerPool) wakeAll() {
	w.mu.Lock()
	w.mu.Unlock() //nolint:staticcheck // empty critical section: see above
	w.cond.Broadcast()
}

// fill counts a conn waiting in later whose queue reached coalesceMax
// frames (d = 1) or was taken (d = -1); the first wakes the workers: every
// conn in later is due.
func (w *writerPool) fill(d int64) {
	if w.full.Add(d) == 1 && d > 0 {
		w.wakeAll()
	}
}

// limitedLocked tells whether the atOnce limit stops another worker now.
func (w *writerPool) limitedLocked() bool {
	return w.atOnce < w.n && w.pressed.Load() == 0 && w.writingLocked() >= w.atOnce
}

// writingLocked counts the workers holding a job for less than stallAfter:
// those that count against atOnce.
func (w *writerPool) writingLocked() int {
	cutoff := w.now() - int64(stallAfter)
	n := 0
	for _, b := range w.busy {
		if since := b.since.Load(); since != 0 && since > cutoff {
			n++
		}
	}
	return n
}

// retireLocked removes an extra worker's slot.
func (w *writerPool) retireLocked(slot *workerSlot) {
	for i, b := range w.busy {
		if b == slot {
			last := len(w.busy) - 1
			w.busy[i] = w.busy[last]
			w.busy[last] = nil
			w.busy = w.busy[:last]
			break
		}
	}
	w.extra--
}

// connQueue is a FIFO of conns: q[head:] wait, oldest first. The slots of
// conns already taken are reused before the array grows: scheduling
// allocates nothing once the array has the size of the busiest moment.
type connQueue struct {
	q    []*conn
	head int
}

func (f *connQueue) len() int { return len(f.q) - f.head }

// first is the oldest conn (len() > 0).
func (f *connQueue) first() *conn { return f.q[f.head] }

func (f *connQueue) push(cs ...*conn) {
	if f.head > 0 && len(f.q)+len(cs) > cap(f.q) {
		k := copy(f.q, f.q[f.head:])
		clear(f.q[k:])
		f.q = f.q[:k]
		f.head = 0
	}
	f.q = append(f.q, cs...)
}

// pop takes the oldest conn (len() > 0).
func (f *connQueue) pop() *conn {
	c := f.q[f.head]
	f.q[f.head] = nil
	f.head++
	if f.head == len(f.q) { // drained: start again at the front
		f.q = f.q[:0]
		f.head = 0
	}
	return c
}

// add schedules one conn: in ready, or in later when it coalesces.
func (w *writerPool) add(c *conn) {
	w.mu.Lock()
	if w.delay > 0 && c.coalesce {
		now := w.now()
		due := w.laterLocked(c, now)
		wake := w.idle > 0 && (due || w.dueLocked(w.later.first(), now))
		w.mu.Unlock()
		if wake {
			w.cond.Signal()
		}
		return
	}
	w.ready.push(c)
	wake := w.wakeableLocked() > 0
	w.mu.Unlock()
	if wake {
		w.cond.Signal()
	}
}

// laterLocked puts c in later, due delay after now, and arms the timer;
// it reports whether later's first conn is due at now (armLocked).
func (w *writerPool) laterLocked(c *conn, now int64) bool {
	c.due = now + int64(w.delay)
	w.later.push(c)
	return w.armLocked(now)
}

// armLocked sets the timer for when later's first conn is due after now,
// unless it is set for that time or earlier. It reports true, and sets no
// timer, when that conn is due at now already: the caller then takes it or
// wakes a worker that will (a worker that finds the limit reached leaves
// it to those writing, which come back to next). The caller's now is the
// one it checked the conns with, so that a conn that came due between its
// check and this call is never left without a timer and without a worker.
func (w *writerPool) armLocked(now int64) bool {
	if w.later.len() == 0 || w.closed {
		return false
	}
	due := w.later.first().due
	if quiet := w.fed.Load() + int64(coalesceQuiet); quiet < due {
		due = quiet // fan-outs coming meanwhile push it back: the timer fires again
	}
	if due <= now {
		return true
	}
	if w.timed != 0 && w.timed <= due {
		return false
	}
	w.timed = due
	d := time.Duration(due - now)
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.fire)
	} else {
		w.timer.Reset(d)
	}
	return false
}

// fire wakes a worker for the conn that is now due.
func (w *writerPool) fire() {
	w.mu.Lock()
	w.timed = 0
	w.mu.Unlock()
	w.cond.Signal()
}

// wakeableLocked is the number of waiting workers worth waking: no more
// than atOnce allows to write.
func (w *writerPool) wakeableLocked() int {
	if w.idle == 0 || w.atOnce >= w.n || w.pressed.Load() > 0 {
		return w.idle
	}
	return min(w.idle, max(0, w.atOnce-w.writingLocked()))
}

// addMany schedules conns with one lock.
func (w *writerPool) addMany(list []*conn) {
	if len(list) == 0 {
		return
	}
	w.mu.Lock()
	due := false // later's first is due already
	if w.delay > 0 {
		now, k := w.now(), 0
		for _, c := range list {
			if c.coalesce {
				due = w.laterLocked(c, now) || due
				continue
			}
			list[k] = c
			k++
		}
		clear(list[k:])
		list = list[:k]
	}
	w.ready.push(list...)
	n := min(len(list), w.wakeableLocked())
	if n == 0 && w.idle > 0 && w.later.len() > 0 && (due || w.dueLocked(w.later.first(), w.now())) {
		n = 1 // later's conns are due at once
	}
	w.mu.Unlock()
	if n >= 2 {
		w.cond.Broadcast()
	} else if n == 1 {
		w.cond.Signal()
	}
}

// next waits for a job. An extra worker retires instead of waiting when n
// other workers are able to write, or the pool is closed. The worker's
// tally is added to the meter before it waits, outside the pool's lock
// (publishers take it to hand over conns).
func (w *writerPool) next(slot *workerSlot, extra bool, t *tally) (*conn, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		now := w.now() // one reading for the take and the timer (armLocked)
		if w.ready.len()+w.later.len() > 0 && !w.limitedLocked() {
			if c := w.takeLocked(now); c != nil {
				// Writing from now on, for the count of those after it
				// (writingLocked).
				slot.since.Store(now)
				if w.later.len() > 0 && w.dueLocked(w.later.first(), now) && w.wakeableLocked() > 0 {
					// Conns of later came due together (one timer for
					// all): another worker takes the next.
					w.cond.Signal()
				}
				return c, true
			}
		}
		if t.jobs > 0 {
			w.mu.Unlock()
			t.flush(&w.meter)
			w.mu.Lock()
			continue
		}
		if extra && (w.closed || w.ableLocked(slot) >= w.n) {
			w.retireLocked(slot)
			return nil, false
		}
		if w.closed {
			return nil, false
		}
		if w.armLocked(now) && !w.limitedLocked() {
			continue // came due since the take: take it
		}
		w.idle++
		w.cond.Wait()
		w.idle--
	}
}

// takeLocked takes later's first conn when it is due (or a conn is
// pressed, or the pool closed): it has waited longer than any in ready;
// else ready's first. Nil when none may go.
func (w *writerPool) takeLocked(now int64) *conn {
	if w.later.len() > 0 {
		if w.dueLocked(w.later.first(), now) {
			return w.later.pop()
		}
	}
	if w.ready.len() > 0 {
		return w.ready.pop()
	}
	return nil
}

// close stops the workers once nothing is ready, and waits for them.
func (w *writerPool) close() {
	w.mu.Lock()
	w.closed = true
	if w.timer != nil {
		w.timer.Stop()
	}
	w.mu.Unlock()
	close(w.stop)
	w.cond.Broadcast()
	w.wg.Wait()
}

// run is one worker: it drains the conns it is handed until the pool closes.
func (w *writerPool) run(slot *workerSlot, extra bool) {
	defer w.wg.Done()
	var t tally
	defer t.flush(&w.meter)
	for {
		c, ok := w.next(slot, extra, &t)
		if !ok {
			return
		}
		now := time.Now() // one clock reading: the stall supervisor's and the meter's
		slot.since.Store(int64(now.Sub(w.epoch)) + 1)
		c.drainMetered(true, &t, now)
		slot.since.Store(0)
		if t.jobs++; t.jobs >= tallyJobs {
			t.flush(&w.meter)
		}
	}
}
