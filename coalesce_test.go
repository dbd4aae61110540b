package realtime

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// recTransport records the size of each write.
type recTransport struct{ writes chan int }

func (r recTransport) write(_ *conn, batch []out, _, _ bool) error {
	r.writes <- len(batch)
	return nil
}
func (recTransport) overflow(c *conn) { c.closeLocked(nil) }
func (recTransport) closed(*conn)     {}

// queue queues n frames to c under one lock, so that they leave in one
// write, and kicks it.
func queue(c *conn, n int) {
	c.mu.Lock()
	kick := false
	for range n {
		kick = c.pushLocked(out{ev: &Event{Type: "x"}}) || kick
	}
	c.mu.Unlock()
	if kick {
		c.kick()
	}
}

// noPause keeps w's fan-outs going for as long as a test runs: only the
// delay (or the pool's close) ends a wait in later, never a pause
// (coalesceQuiet).
func noPause(w *writerPool) { w.fed.Store(1 << 62) }

// coalescingConn returns a ready conn on w that coalesces (a WebSocket's),
// queue bound max, and the transport recording its writes.
func coalescingConn(w *writerPool, max int) (recTransport, *conn) {
	rt := recTransport{writes: make(chan int, 16)}
	c := newConn(rt, w, max, false)
	c.coalesces = true
	c.setReady()
	return rt, c
}

// nextWrite waits for the next write's size.
func nextWrite(t *testing.T, writes chan int) int {
	t.Helper()
	select {
	case n := <-writes:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no write")
		return 0
	}
}

// TestWriteCoalesce: once a write carried coalesceFrames frames, the
// frames queued next wait for the pool's delay and leave in one write
// (here only the pool's close, a pause in the fan-outs or coalesceMax
// frames queued end an hour's wait); a connection whose write carried
// fewer is written at once; a queue more than half full is written at
// once whatever the delay; a conn that does not coalesce (an SSE stream)
// is never delayed.
func TestWriteCoalesce(t *testing.T) {
	t.Run("frames after a full write leave together", func(t *testing.T) {
		w := newWriterPool(1, 1, time.Hour)
		noPause(w)
		rt, c := coalescingConn(w, 64)
		queue(c, coalesceFrames+2)
		if n := nextWrite(t, rt.writes); n != coalesceFrames+2 {
			t.Fatalf("first write: %d frames", n)
		}
		for range 3 {
			queue(c, 1)
		}
		w.close() // takes what waits, due or not
		close(rt.writes)
		var got []int
		for n := range rt.writes {
			got = append(got, n)
		}
		if !slices.Equal(got, []int{3}) {
			t.Fatalf("writes after the full one: %v, want [3] (one write)", got)
		}
	})
	t.Run("a connection written frame by frame is not delayed", func(t *testing.T) {
		w := newWriterPool(1, 1, time.Hour)
		defer w.close()
		rt, c := coalescingConn(w, 64)
		queue(c, coalesceFrames-1)
		if n := nextWrite(t, rt.writes); n != coalesceFrames-1 {
			t.Fatalf("first write: %d frames", n)
		}
		queue(c, 1)
		if n := nextWrite(t, rt.writes); n != 1 {
			t.Fatalf("second write: %d frames", n)
		}
	})
	t.Run("a queue more than half full is written at once", func(t *testing.T) {
		w := newWriterPool(1, 1, time.Hour)
		defer w.close()
		rt, c := coalescingConn(w, 2*coalesceFrames)
		queue(c, coalesceFrames)
		if n := nextWrite(t, rt.writes); n != coalesceFrames {
			t.Fatalf("first write: %d frames", n)
		}
		queue(c, coalesceFrames+1)
		if n := nextWrite(t, rt.writes); n != coalesceFrames+1 {
			t.Fatalf("pressed write: %d frames", n)
		}
	})
	t.Run("a pause in the fan-outs ends the wait", func(t *testing.T) {
		w := newWriterPool(1, 1, time.Hour)
		defer w.close()
		rt, c := coalescingConn(w, 64)
		queue(c, coalesceFrames+2)
		if n := nextWrite(t, rt.writes); n != coalesceFrames+2 {
			t.Fatalf("first write: %d frames", n)
		}
		for range 3 {
			c.mu.Lock()
			kick := c.pushLocked(out{ev: &Event{Type: "x"}})
			c.mu.Unlock()
			var cs []*conn
			if kick {
				cs = append(cs, c)
			}
			kickAll(w, cs) // a fan-out (writerPool.feed)
		}
		// The burst is over: coalesceQuiet later, not an hour, its frames
		// leave, in one write.
		if n := nextWrite(t, rt.writes); n != 3 {
			t.Fatalf("write after the pause: %d frames, want 3", n)
		}
	})
	t.Run("a wait ends once a conn holds coalesceMax frames", func(t *testing.T) {
		w := newWriterPool(1, 1, time.Hour)
		defer w.close()
		noPause(w)
		// Queues of 4×coalesceMax: the frames that end the wait leave
		// the queue far from half full (pressed).
		rt, c := coalescingConn(w, 4*coalesceMax)
		other, o := coalescingConn(w, 4*coalesceMax)
		for _, cc := range []struct {
			rt recTransport
			c  *conn
		}{{rt, c}, {other, o}} {
			queue(cc.c, coalesceFrames)
			if n := nextWrite(t, cc.rt.writes); n != coalesceFrames {
				t.Fatalf("first write: %d frames", n)
			}
		}
		queue(o, 1) // waits for the hour
		for range coalesceMax {
			queue(c, 1) // one kick per frame, as pushes come
		}
		if n := nextWrite(t, rt.writes); n != coalesceMax {
			t.Fatalf("write of the full conn: %d frames, want %d", n, coalesceMax)
		}
		if n := nextWrite(t, other.writes); n != 1 {
			t.Fatalf("write of the other conn waiting: %d frames, want 1", n)
		}
	})
	for _, tc := range []struct {
		name      string
		delay     time.Duration
		coalesces bool
	}{
		{"no delay: every write at once", 0, true},
		{"a conn that does not coalesce (an SSE stream) is written at once", time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWriterPool(1, 1, tc.delay)
			defer w.close()
			rt := recTransport{writes: make(chan int, 16)}
			c := newConn(rt, w, 64, false)
			c.coalesces = tc.coalesces
			c.setReady()
			queue(c, coalesceFrames+2)
			nextWrite(t, rt.writes)
			queue(c, 1)
			if n := nextWrite(t, rt.writes); n != 1 {
				t.Fatalf("second write: %d frames", n)
			}
		})
	}
}

func TestWriteCoalesceConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want time.Duration
		err  bool
	}{
		{"default", Config{}, 100 * time.Millisecond, false},
		{"set", Config{WriteCoalesce: 5 * time.Millisecond}, 5 * time.Millisecond, false},
		{"disabled", Config{DisableWriteCoalesce: true, WriteCoalesce: 5 * time.Millisecond}, 0, false},
		{"too long", Config{WriteCoalesce: 2 * time.Second}, 0, true},
		{"negative", Config{WriteCoalesce: -time.Millisecond}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.JWTSecret = testSecret
			c, err := tc.cfg.withDefaults()
			if tc.err {
				if !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("err %v, want ErrInvalidConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.writeCoalesce(); got != tc.want {
				t.Errorf("delay %v, want %v", got, tc.want)
			}
		})
	}
}

// TestWriteCoalescePool: the pool's handling of later, each case a defect
// the benchmark found in its first version: a conn of later that is due is
// taken before ready's (they starved behind a ready queue never empty); no
// timer is armed for a conn already due (re-armed at once while the pool
// was at its limit, the timer fired without end); conns that came due
// together are written by more than one worker (one timer woke one worker,
// which wrote them all while the others slept).
func TestWriteCoalescePool(t *testing.T) {
	t.Run("a due conn goes before ready", func(t *testing.T) {
		w := newWriterPool(1, 1, time.Hour)
		defer w.close()
		due, fresh := &conn{}, &conn{}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.ready.push(fresh)
		due.due = w.now() - 1
		w.later.push(due)
		if c := w.takeLocked(w.now()); c != due {
			t.Error("ready's conn was taken before the due one")
		}
		if c := w.takeLocked(w.now()); c != fresh {
			t.Error("ready's conn not taken next")
		}
	})
	t.Run("no timer for a conn already due", func(t *testing.T) {
		w := newWriterPool(1, 1, time.Hour)
		defer w.close()
		noPause(w)
		c := &conn{}
		w.mu.Lock()
		defer w.mu.Unlock()
		c.due = w.now() - 1
		w.later.push(c)
		if !w.armLocked(w.now()) || w.timed != 0 {
			t.Error("a conn already due not reported, or a timer armed for it")
		}
		c.due = w.now() + int64(time.Hour)
		if w.armLocked(w.now()) || w.timed != c.due {
			t.Errorf("timer armed for %d, want %d", w.timed, c.due)
		}
		// A fan-out now: the timer is brought forward to the pause that
		// would end the wait.
		w.timed = 0
		w.feed()
		w.armLocked(w.now())
		if want := w.fed.Load() + int64(coalesceQuiet); w.timed != want {
			t.Errorf("timer armed for %d after a fan-out, want %d", w.timed, want)
		}
		w.later.pop()
	})
	t.Run("a conn not taken at a reading has a timer after it", func(t *testing.T) {
		// A worker checks later and then waits. The pause (coalesceQuiet)
		// may end between the two: the check and the timer use one
		// reading, so that the conn is either taken or has a timer; it was
		// neither when the timer read the clock again (a push of the CI's
		// TestChannelSinceHandOverUnderConcurrentPushes waited forever).
		w := newWriterPool(1, 1, time.Hour)
		defer w.close()
		w.mu.Lock()
		defer w.mu.Unlock()
		now := w.now()
		for _, sinceFed := range []int64{-1, 0, 1, int64(coalesceQuiet) - 1, int64(coalesceQuiet), int64(coalesceQuiet) + 1} {
			c := &conn{due: now + int64(time.Hour)}
			w.later.push(c)
			w.fed.Store(now - sinceFed)
			w.timed = 0
			taken := w.takeLocked(now) == c
			due := !taken && w.armLocked(now)
			if !taken && !due && w.timed <= now {
				t.Errorf("%v after the last fan-out: neither taken nor timed", time.Duration(sinceFed))
			}
			if taken != (sinceFed >= int64(coalesceQuiet)) {
				t.Errorf("%v after the last fan-out: taken %v", time.Duration(sinceFed), taken)
			}
			if w.later.len() > 0 {
				w.later.pop()
			}
		}
	})
	t.Run("conns due together are written side by side", func(t *testing.T) {
		w := newWriterPool(2, 2, 20*time.Millisecond)
		defer w.close()
		release := make(chan struct{})
		defer close(release)
		blocked := recTransport{writes: make(chan int, 1)}
		second := recTransport{writes: make(chan int, 1)}
		var cs []*conn
		for _, tr := range []transport{blockTransport{blocked, release}, second} {
			c := newConn(tr, w, 64, false)
			c.coalesces, c.coalesce, c.ready = true, true, true
			c.mu.Lock()
			if !c.pushLocked(out{ev: &Event{Type: "x"}}) {
				t.Fatal("not kicked")
			}
			c.mu.Unlock()
			cs = append(cs, c)
		}
		w.addMany(cs) // one due time for both
		nextWrite(t, blocked.writes)
		nextWrite(t, second.writes) // while the first write is blocked
	})
}

// blockTransport reports a write, then blocks it until release closes.
type blockTransport struct {
	recTransport
	release chan struct{}
}

func (b blockTransport) write(c *conn, batch []out, end, signal bool) error {
	b.recTransport.write(c, batch, end, signal)
	<-b.release
	return nil
}
