package realtime

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// writerPool is the set of goroutines that write to hijacked SSE
// connections and to WebSockets. A subscriber or a WebSocket with frames
// queued sits at most once in ready; a worker takes it, writes everything
// it has queued (an SSE stream in one write, frames queued meanwhile
// coalescing into the next; a WebSocket one frame per message, flushConn),
// and puts it back if more came. No connection owns a timer or a writing
// goroutine (melody's idle write goroutine aside).
//
// A peer that stops reading fills its kernel buffers, and a write to it
// blocks until it reads or WriteTimeout cuts it. So that such peers never
// hold up the others, a supervisor checks the workers every stallCheck:
// when jobs wait and no worker is idle, it starts an extra worker for each
// worker that has been on its job for more than stallAfter (blocked in a
// write), at most maxExtraWriters in all. An extra worker retires once it
// finds nothing to do while n others are able to write.
type writerPool struct {
	p *Plugin
	n int // core workers

	mu     sync.Mutex
	cond   sync.Cond
	ready  []poolJob // ready[head:] wait for a worker, oldest first
	head   int
	idle   int
	closed bool
	busy   []*workerSlot // every running worker's slot (core and extra)
	extra  int           // extra workers running
	wg     sync.WaitGroup
	stop   chan struct{}
	epoch  time.Time
}

// workerSlot tells since when (monotonic nanoseconds since the pool
// started; 0: waiting) a worker has held its current job.
type workerSlot struct{ since atomic.Int64 }

const (
	stallCheck      = 50 * time.Millisecond
	stallAfter      = 100 * time.Millisecond
	maxExtraWriters = 1024
)

func newWriterPool(p *Plugin, n int) *writerPool {
	w := &writerPool{p: p, n: n, stop: make(chan struct{}), epoch: time.Now()}
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
		wake := w.extra > 0 && w.idle > 0
		if len(w.ready) > w.head && w.idle == 0 && w.extra < maxExtraWriters {
			if k := min(w.n-w.ableLocked(nil), maxExtraWriters-w.extra); k > 0 {
				w.extra += k
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

// poolJob is what a worker takes: a subscriber (SSE, or a record followed
// over a WebSocket) or a WebSocket connection with frames queued.
type poolJob struct {
	s *subscriber
	c *wsConn
}

// roomLocked makes room for n more jobs in ready, reusing the slots of the
// jobs already taken before it grows the array: scheduling allocates
// nothing once the array has the size of the busiest moment.
func (w *writerPool) roomLocked(n int) {
	if w.head > 0 && len(w.ready)+n > cap(w.ready) {
		k := copy(w.ready, w.ready[w.head:])
		clear(w.ready[k:])
		w.ready = w.ready[:k]
		w.head = 0
	}
}

func (w *writerPool) pushLocked(list ...*subscriber) {
	w.roomLocked(len(list))
	for _, s := range list {
		w.ready = append(w.ready, poolJob{s: s})
	}
}

func (w *writerPool) add(s *subscriber) {
	w.addJob(poolJob{s: s})
}

// addConn schedules a WebSocket connection whose queue has frames (or a
// ping) to write.
func (w *writerPool) addConn(c *wsConn) {
	w.addJob(poolJob{c: c})
}

func (w *writerPool) addJob(j poolJob) {
	w.mu.Lock()
	w.roomLocked(1)
	w.ready = append(w.ready, j)
	wake := w.idle > 0
	w.mu.Unlock()
	if wake {
		w.cond.Signal()
	}
}

// addConns schedules WebSocket connections with one lock.
func (w *writerPool) addConns(list []*wsConn) {
	if len(list) == 0 {
		return
	}
	w.mu.Lock()
	w.roomLocked(len(list))
	for _, c := range list {
		w.ready = append(w.ready, poolJob{c: c})
	}
	n := min(len(list), w.idle)
	w.mu.Unlock()
	if n >= 2 {
		w.cond.Broadcast()
	} else if n == 1 {
		w.cond.Signal()
	}
}

// addMany schedules a publish's subscribers with one lock.
func (w *writerPool) addMany(list []*subscriber) {
	if len(list) == 0 {
		return
	}
	w.mu.Lock()
	w.pushLocked(list...)
	n := min(len(list), w.idle)
	w.mu.Unlock()
	if n >= 2 {
		w.cond.Broadcast()
	} else if n == 1 {
		w.cond.Signal()
	}
}

// next waits for a job. An extra worker retires instead of waiting when n
// other workers are able to write, or the pool is closed.
func (w *writerPool) next(slot *workerSlot, extra bool) (poolJob, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.head == len(w.ready) {
		if extra && (w.closed || w.ableLocked(slot) >= w.n) {
			w.retireLocked(slot)
			return poolJob{}, false
		}
		if w.closed {
			return poolJob{}, false
		}
		w.idle++
		w.cond.Wait()
		w.idle--
	}
	s := w.ready[w.head]
	w.ready[w.head] = poolJob{}
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

const (
	chunkRoom   = 16        // bytes kept before a batch for its chunk-size line
	maxScratch  = 256 << 10 // a worker keeps at most this much write buffer
	roundsBatch = 8         // rounds one subscriber may take before yielding
)

func (w *writerPool) run(slot *workerSlot, extra bool) {
	defer w.wg.Done()
	var (
		buf []byte
		evs []*Event
	)
	for {
		j, ok := w.next(slot, extra)
		if !ok {
			return
		}
		slot.since.Store(w.now())
		if j.c != nil {
			w.flushConn(j.c)
		} else {
			buf, evs = w.flush(j.s, buf, evs)
			if cap(buf) > maxScratch {
				buf = nil
			}
		}
		slot.since.Store(0)
	}
}

// flush writes what s has queued as HTTP/1.1 chunks.
func (w *writerPool) flush(s *subscriber, buf []byte, evs []*Event) ([]byte, []*Event) {
	if s.transport == viaSocket {
		return buf, w.flushSocket(s, evs)
	}
	ctx := w.p.baseCtx
	for round := 0; ; round++ {
		batch, state := s.take()
		if state == subClosed {
			s.settle(batch)
			return buf, evs
		}
		var end bool
		evs, end = s.filter(ctx, batch, evs[:0])
		buf = append(buf[:0], make([]byte, chunkRoom)...)
		for _, ev := range evs {
			buf = append(buf, ev.SSEFrame()...)
		}
		clear(evs)
		start := chunkRoom
		if n := len(buf) - chunkRoom; n > 0 {
			hdr := strconv.AppendInt(make([]byte, 0, 12), int64(n), 16)
			hdr = append(hdr, '\r', '\n')
			start = chunkRoom - len(hdr)
			copy(buf[start:], hdr)
			buf = append(buf, '\r', '\n')
		}
		finish := end || state == subEnding
		if finish {
			buf = append(buf, "0\r\n\r\n"...)
		}
		if len(buf) > start {
			w.renewDeadline(s)
			if _, err := s.conn.Write(buf[start:]); err != nil {
				s.close(err)
				s.settle(batch)
				return buf, evs
			}
		}
		if finish {
			if end {
				s.close(ErrForbidden)
			} else {
				s.close(ErrClosed)
			}
			s.settle(batch)
			return buf, evs
		}
		if !s.settle(batch) {
			return buf, evs
		}
		if round >= roundsBatch {
			w.add(s) // still scheduled: let others have a turn
			return buf, evs
		}
	}
}

// renewDeadline keeps a write deadline of between WriteTimeout/2 and
// WriteTimeout ahead of every write to s, renewing it only when less than
// half is left: setting a deadline costs as much as a tenth of a small write.
// Only the worker that holds s (scheduled) calls it.
func (w *writerPool) renewDeadline(s *subscriber) {
	now := time.Now()
	if s.deadline.Sub(now) >= w.p.cfg.WriteTimeout/2 {
		return
	}
	s.deadline = now.Add(w.p.cfg.WriteTimeout)
	_ = s.conn.SetWriteDeadline(s.deadline)
}

// flushHandler writes what s has queued through its handler's writer
// (HTTP/2, or HTTP/1.1 without hijack). It reports whether the stream is over.
func flushHandler(ctx context.Context, s *subscriber, write func([]byte) error) bool {
	var evs []*Event
	for {
		batch, state := s.take()
		if state == subClosed {
			s.settle(batch)
			return true
		}
		var end bool
		evs, end = s.filter(ctx, batch, evs[:0])
		var buf []byte
		for _, ev := range evs {
			buf = append(buf, ev.SSEFrame()...)
		}
		if len(buf) > 0 {
			if err := write(buf); err != nil {
				s.close(err)
				s.settle(batch)
				return true
			}
		}
		if end || state == subEnding {
			s.close(ErrClosed)
			s.settle(batch)
			return true
		}
		if !s.settle(batch) {
			return false
		}
	}
}

// flushSocket queues what a WebSocket record subscriber has queued to its
// connection, one text frame per event, in order. The connection's queue is
// its bounded send queue, written by this pool (flushConn): a send never
// blocks (a full queue closes the connection with 1013). Each send happens under s.mu after a state check,
// so that nothing is sent for a record once its subscription is closed
// (unsubscribe, revocation, disconnect).
func (w *writerPool) flushSocket(s *subscriber, evs []*Event) []*Event {
	ctx := w.p.baseCtx
	for round := 0; ; round++ {
		batch, state := s.take()
		if state == subClosed {
			s.settle(batch)
			return evs
		}
		var end bool
		evs, end = s.filter(ctx, batch, evs[:0])
		sent := true
		for _, ev := range evs {
			if ev == keepaliveEvent {
				continue
			}
			if !s.sendSocket(socketFrame(s.key, ev)) {
				sent = false
				break
			}
		}
		clear(evs)
		if !sent {
			s.ws.dropRecord(s, errClientGone)
			s.settle(batch)
			return evs
		}
		if end {
			// The record may no longer be seen: its subscription ends, the
			// connection stays.
			s.sendSocket(recordErrorFrame("forbidden", s.key))
			s.ws.dropRecord(s, ErrForbidden)
			s.settle(batch)
			return evs
		}
		if state == subEnding {
			s.ws.dropRecord(s, ErrClosed)
			s.settle(batch)
			return evs
		}
		if !s.settle(batch) {
			return evs
		}
		if round >= roundsBatch {
			w.add(s) // still scheduled: let others have a turn
			return evs
		}
	}
}
