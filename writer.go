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
type writerPool struct {
	n       int // core workers
	atOnce  int // workers writing at once, at most
	pressed atomic.Int64

	mu     sync.Mutex
	cond   sync.Cond
	ready  []*conn // ready[head:] wait for a worker, oldest first
	head   int
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
)

func newWriterPool(n, atOnce int) *writerPool {
	w := &writerPool{n: n, atOnce: min(max(atOnce, 1), n), stop: make(chan struct{}), epoch: time.Now()}
	w.cond.L = &w.mu
	w.wg.Add(n + 1)
	for range n {
		slot := &workerSlot{}
		w.busy = append(w.busy, slot)
		go w.run(slot, false)
	}
	go w.supervise()
	return w
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
		wake := w.idle > 0 && (w.extra > 0 || (w.atOnce < w.n && len(w.ready) > w.head))
		if len(w.ready) > w.head && w.idle == 0 && w.extra < maxExtraWriters {
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
// was emptied (d = -1); the first wakes the workers waiting for the limit.
func (w *writerPool) press(d int64) {
	if w.pressed.Add(d) == 1 && d > 0 && w.atOnce < w.n {
		w.cond.Broadcast()
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

// roomLocked makes room for n more conns in ready, reusing the slots of
// those already taken before it grows the array: scheduling allocates
// nothing once the array has the size of the busiest moment.
func (w *writerPool) roomLocked(n int) {
	if w.head > 0 && len(w.ready)+n > cap(w.ready) {
		k := copy(w.ready, w.ready[w.head:])
		clear(w.ready[k:])
		w.ready = w.ready[:k]
		w.head = 0
	}
}

// add schedules one conn.
func (w *writerPool) add(c *conn) {
	w.mu.Lock()
	w.roomLocked(1)
	w.ready = append(w.ready, c)
	wake := w.wakeableLocked() > 0
	w.mu.Unlock()
	if wake {
		w.cond.Signal()
	}
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
	w.roomLocked(len(list))
	w.ready = append(w.ready, list...)
	n := min(len(list), w.wakeableLocked())
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
	for w.head == len(w.ready) || w.limitedLocked() {
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
		w.idle++
		w.cond.Wait()
		w.idle--
	}
	// Writing from now on, for the count of those after it (writingLocked).
	slot.since.Store(w.now())
	s := w.ready[w.head]
	w.ready[w.head] = nil
	w.head++
	if w.head == len(w.ready) { // drained: start again at the front
		w.ready = w.ready[:0]
		w.head = 0
	}
	return s, true
}

// close stops the workers once nothing is ready, and waits for them.
func (w *writerPool) close() {
	w.mu.Lock()
	w.closed = true
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
