package realtime

import (
	"sync/atomic"
	"time"
)

// subscription is one client following one stream: a record's (key.ID
// set) or a collection's. Its frames go to its connection's queue (c): an
// SSE stream or a long poll has one subscription (solo), a WebSocket one
// per record it follows.
//
// The rules of the stream are written here, once, for every transport and
// for one node or many:
//   - Hand-over. A subscription holds from the start: the events delivered
//     while its first frames are computed (the §3 selection: snapshot,
//     replay or resync) wait in held; release queues the first frames, then
//     the held events that come after them, each exactly once (positions:
//     Entry.Seq; the snapshot's version: skip).
//   - Order. A record's events carry versions (Event.Version, consecutive
//     per record): an event at or below the version already sent is
//     dropped, never sent twice or backwards; an event beyond the next one
//     means events were missed, and so does a gap reported by the broker.
//     Then the subscription resumes from the last ETag it sent (or the
//     resume point it subscribed with, while it has sent nothing), as a
//     reconnecting client would, in place (resume; a long poll or a
//     collection stream ends instead): it holds its live events, reads
//     what it missed from the buffer, or gets resync and the stored
//     record, before any later event. After a gap only, when the buffer
//     does not hold what follows its version yet and the stored record is
//     ahead, it first waits up to Config.ResumeWait for those versions as
//     live events (the rules above apply to them; a jump ends the wait).
//     So does a new subscription from a resume point the buffer does not
//     hold when a PendingEvents source has the next version on its way.
//   - Access. Its record events are checked against its identity before
//     each is written (checkFrames).
//
// Its fields after c are guarded by c.mu.
type subscription struct {
	streams *recordStreams
	key     StreamKey
	ident   *Identity
	c       *conn
	// solo is set when the subscription is its connection's only one (an
	// SSE stream, a long poll): it is revoked by ending the connection,
	// whose client then reconnects (and is refused). A long poll also
	// resumes that way (its next poll starts from its lastEventId); an SSE
	// record stream resumes in place, like a WebSocket's record. drop
	// removes a WebSocket's record from its connection.
	solo bool
	drop func(*subscription) // multiplexed: called once when revoked
	idx  int                 // position in the hub's list, under the key's stripe
	// started is when the subscription began: the events published since
	// are metered for their delivery latency (stats_meter.go).
	started time.Time
	// watched is set while the broker delivers key's events for it; detach
	// undoes it once.
	watched atomic.Bool

	holding  bool   // first frames not queued yet: live events wait in held
	held     []item // live events that arrived while holding
	lastSeq  uint64 // position of the newest stream event queued
	version  uint64 // version of the record sent last (0: unknown)
	last     *Event // the record event queued last: its ETag is where a resume starts
	from     string // the resume point it subscribed with: where a resume starts while last is nil
	skipETag string // a snapshot of unknown position just queued: drop a live event of the same version
	gone     bool   // detached: nothing more is queued for it
	resuming *Event // the resync frame of a resume under way (its reason)
	// again is the reason of a resume asked for while s held (its first
	// frames, or a resume's, may have been read before what it missed was
	// there): it starts once they are released. againGap: it follows a gap.
	again    *Event
	againGap bool
	// afterGap: the resume under way follows the broker's gap report (not a
	// version jump, after which nothing more is coming): it may wait for
	// the versions it missed (Config.ResumeWait).
	afterGap bool
	// awaiting is the stored version a waiting subscription must reach by
	// live events before its wait ends (0: not waiting); while it waits, a
	// resume does not wait again.
	awaiting uint64
}

func newSubscription(rs *recordStreams, key StreamKey, ident *Identity, c *conn, solo bool) *subscription {
	return &subscription{streams: rs, key: key, ident: ident, c: c, solo: solo, idx: -1, holding: true, started: time.Now()}
}

// offer queues a live event (c.mu not held); it reports whether c must be
// kicked. It never blocks: a full queue is the conn's overflow.
func (s *subscription) offer(o item) bool {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.gone || c.state != connOpen {
		return false
	}
	if s.holding {
		if len(s.held) >= c.max {
			c.t.overflow(c)
			return false
		}
		s.held = append(s.held, o)
		return false
	}
	if !s.admitLocked(o) {
		return false
	}
	return c.pushLocked(o.out())
}

// admitLocked applies the stream's rules to a live event about to be
// queued: false drops it (already queued, older than what was sent, or the
// start of a resume, which then holds it).
func (s *subscription) admitLocked(o item) bool {
	ev := o.ev
	if o.seq != 0 {
		if o.seq <= s.lastSeq {
			return false // already queued (replay/live hand-over)
		}
		s.lastSeq = o.seq
	}
	if ev.Type == EventResync {
		return true // a collection's resync frame
	}
	if s.skipETag != "" {
		if ev.ETag == s.skipETag {
			s.skipETag = ""
			return false // the snapshot already carried this version
		}
		s.skipETag = ""
	}
	if s.key.ID != "" && ev.Version > 0 && s.version > 0 {
		switch {
		case ev.Version <= s.version:
			return false // sent already, or older than what was sent
		case ev.Version > s.version+1:
			// Versions were missed: resume from the last one sent (the
			// resume reads this one back from the buffer, or its successor).
			s.streams.stats.resync(resyncVersionJump, 1)
			s.streams.log.Debug("realtime: version jump: subscription resumes", "tenant", s.key.Tenant,
				"collection", s.key.Collection, "id", s.key.ID, "sent", s.version, "got", ev.Version)
			s.resumeLocked(resyncEvent)
			return false
		}
	}
	s.note(ev)
	return true
}

// note records ev as the newest record event queued.
func (s *subscription) note(ev *Event) {
	if ev.ETag == "" {
		return
	}
	s.last = ev
	if ev.Version > 0 {
		s.version = ev.Version
	}
}

// start is what a subscription receives before live events (§3): its
// first frames, the stream position they bring it to (base), the ETag of a
// snapshot whose position is unknown (skip: a live event of that version
// is not sent again) and the version of the record they leave it at (0:
// unknown).
type start struct {
	first   []item
	base    uint64
	skip    string
	version uint64
	// await, on a resume, is the stored version the subscription waits to
	// reach by live events (resumer.await) rather than resync now.
	await uint64
}

// release queues st's first frames, then the live events held meanwhile
// that come after them, and starts delivery; a start that waits for
// versions (start.await) begins its wait.
func (s *subscription) release(st start) {
	c := s.c
	c.mu.Lock()
	kick := s.releaseLocked(st)
	c.mu.Unlock()
	if kick {
		c.kick()
	}
	if st.await > 0 {
		s.streams.resumer.await(s, st.await)
	}
}

func (s *subscription) releaseLocked(st start) bool {
	c := s.c
	s.holding, s.resuming, s.afterGap = false, nil, false
	if st.await > 0 {
		// No frames: s goes on from where it stood.
		s.awaiting, st.base = st.await, s.lastSeq
	}
	held := s.held
	s.held = nil
	if s.gone {
		return false
	}
	s.lastSeq = st.base
	s.skipETag = st.skip
	if st.version > 0 {
		s.version = st.version
	}
	kick := false
	for _, o := range st.first {
		if o.seq > s.lastSeq {
			s.lastSeq = o.seq
		}
		if o.ev != nil {
			s.note(o.ev)
		}
		kick = c.appendLocked(o.out(), false) || kick
	}
	if st.skip != "" {
		// The version of the snapshot was published while s held: the
		// events held before it are older than the snapshot, and it is the
		// snapshot's own.
		for i, o := range held {
			if o.seq != 0 && o.ev.ETag == st.skip {
				held = held[i+1:]
				s.skipETag = ""
				break
			}
		}
	}
	for _, o := range held {
		if s.holding || s.gone {
			break // a resume began (versions missed): it reads them back
		}
		if s.admitLocked(o) {
			kick = c.appendLocked(o.out(), true) || kick
		}
	}
	if why := s.again; why != nil && !s.holding && !s.gone {
		// A resume asked for while s held: what it missed may have come
		// after its frames were read.
		s.again, s.afterGap, s.againGap = nil, s.againGap, false
		s.resumeLocked(why)
	}
	if c.state == connEnding {
		kick = c.scheduleLocked() || kick
	}
	return kick
}

// resumeLocked handles a subscription that may have missed events (a
// version jump, a gap in the broker's delivery, a bulk write): a long poll
// or a collection stream ends its connection (the client comes back from
// its Last-Event-ID); a record's subscription, on an SSE stream or a
// WebSocket, holds its live events and resumes in place from the last ETag
// it sent, with why as its resync frame if it gets one.
func (s *subscription) resumeLocked(why *Event) {
	if s.gone {
		return
	}
	if !s.inPlace() {
		if s.c.endLocked() {
			s.c.kick() // never blocks, takes no lock of c's
		}
		return
	}
	if s.holding {
		// The first frames (or a resume's) may have been read already:
		// resume again once they are released (releaseLocked).
		if s.again == nil || why != resyncEvent {
			s.again = why
		}
		return
	}
	s.holding, s.resuming = true, why
	s.streams.resumer.add(s)
}

// inPlace tells whether s resumes in place (resumeLocked): a record's
// subscription on an SSE stream or a WebSocket.
func (s *subscription) inPlace() bool {
	return s.key.ID != "" && (!s.solo || s.c.kind == kindSSERecord)
}

// resume is resumeLocked for a caller without c.mu.
func (s *subscription) resume(why *Event) {
	s.c.mu.Lock()
	s.resumeLocked(why)
	s.c.mu.Unlock()
}

// resumeAfterGap is resume for the broker's gap report: a record's
// subscription may then wait for the versions it missed (resumeFrom.wait).
func (s *subscription) resumeAfterGap() {
	s.c.mu.Lock()
	if !s.gone {
		if s.holding {
			s.againGap = true
		} else {
			s.afterGap = true
		}
	}
	s.resumeLocked(resyncEvent)
	s.c.mu.Unlock()
}

// resumeFrom is where a resume starts: the ETag of the last record event
// queued (lastETag), the reason of the resync it may get (why), and, when
// it may wait for the versions after its own (wait: a resume after the
// broker's gap report, no wait under way), the version it holds.
type resumeFrom struct {
	lastETag string
	why      *Event
	wait     uint64
}

// lastSent returns where s's resume under way starts (ok: s resumes).
func (s *subscription) lastSent() (resumeFrom, bool) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.gone || !s.holding {
		return resumeFrom{}, false
	}
	rp := resumeFrom{why: s.resuming, lastETag: s.from}
	if s.last != nil {
		rp.lastETag = s.last.ETag
	}
	if s.afterGap && s.awaiting == 0 {
		rp.wait = s.version
	}
	return rp, true
}

// waited ends s's wait for version (resumer.await): when live events have
// not brought s to it, s resumes, without waiting again: the events it
// missed, or resync and the stored record. While the broker is down again
// it does not: the buffer cannot be read (it would resync), and the
// broker reports the gap once it is back, when s resumes (and may wait
// again).
func (s *subscription) waited(version uint64) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.gone || s.awaiting != version {
		return // ended, or another wait since
	}
	s.awaiting = 0
	if s.streams.down != nil && s.streams.down() {
		return
	}
	if s.version < version && !s.holding {
		s.resumeLocked(resyncEvent)
	}
}

// end marks s detached: nothing more is queued for it.
func (s *subscription) end() {
	s.c.mu.Lock()
	s.gone = true
	s.held = nil
	s.c.mu.Unlock()
}
