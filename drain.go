package realtime

import "time"

// The one drain loop of every transport: whoever drains a conn (a worker
// of the writer pool, or the conn's handler goroutine) takes everything
// queued, has each record event re-checked (checkFrames, access.go), and
// hands the batch to the conn's transport, which writes it in one write.

// take removes and returns the queued frames, the state and the signal.
func (c *conn) take() ([]out, connState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q, sig := c.queue, c.signal
	c.queue, c.spare, c.signal = c.spare, nil, false
	c.unpressLocked()
	return q, c.state, sig
}

// settle ends a round: it keeps the drained slice for reuse when small (or
// well used) and reports whether another round is needed. coalesce is
// whether c's next write waits for more frames (writerPool).
func (c *conn) settle(batch []out, coalesce bool) (again bool) {
	clear(batch)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.coalesce = coalesce
	// Keep the drained slice for the next round when it is small, or when
	// it was well used (a busy conn): no allocation per round under load.
	// A big slice is let go as soon as a round uses less than an eighth.
	if c.spare == nil && (cap(batch) <= 64 || 8*len(batch) >= cap(batch)) {
		c.spare = batch[:0]
	}
	if c.state == connClosed {
		c.scheduled = false
		return false
	}
	if len(c.queue) > 0 || c.signal || c.state == connEnding {
		return true
	}
	c.scheduled = false
	return false
}

// roundsBatch is how many rounds one conn may take before its drainer on
// the writer pool lets others have a turn.
const roundsBatch = 8

// drain writes what c has queued, round after round, until nothing is
// left: the one drain loop of every transport. It reports whether c is
// over (closed). On the writer pool it yields after roundsBatch rounds
// (yield true: c stays scheduled and is put back on the pool). Past c's
// deadline (its token expired) nothing queued is written: only the end.
func (c *conn) drain(yield bool) (over bool) {
	var t tally
	over = c.drainMetered(yield, &t, time.Time{})
	t.flush(&c.pool.meter)
	return over
}

// drainMetered is drain, metering each write into t (stats_meter.go); now
// is the drainer's clock reading when it took c (zero: read when needed).
func (c *conn) drainMetered(yield bool, t *tally, now time.Time) (over bool) {
	for round := 0; ; round++ {
		if round > 0 {
			now = time.Time{} // stale after a write: read again when needed
		}
		batch, state, sig := c.take()
		if state == connClosed {
			c.settle(batch, false)
			return true
		}
		var end bool
		if d := c.expires.Load(); d != 0 {
			if now.IsZero() {
				now = time.Now()
			}
			if now.UnixNano() > d {
				c.mu.Lock()
				c.expireLocked() // c is scheduled: no kick needed
				c.mu.Unlock()
				clear(batch)
				batch, end = batch[:0], true
			}
		}
		if !end && c.pool.checks {
			var revoked bool
			batch, revoked = checkFrames(batch)
			if revoked {
				c.markEnd(endRevoked)
			}
			end = revoked
		}
		end = end || state == connEnding
		if err := c.t.write(c, batch, end, sig); err != nil {
			c.settle(batch, false)
			c.close(err)
			return true
		}
		now = t.add(c, batch, now)
		if end {
			c.settle(batch, false)
			c.close(ErrClosed)
			return true
		}
		// On the pool, a write this full means frames come faster than
		// they are written: the next one waits for more (writerPool).
		coalesce := yield && c.coalesces && c.pool.delay > 0 && len(batch) >= coalesceFrames
		if !c.settle(batch, coalesce) {
			return false
		}
		if coalesce || (yield && round >= roundsBatch) {
			c.pool.add(c) // still scheduled: let others have a turn, or wait for more
			return false
		}
	}
}
