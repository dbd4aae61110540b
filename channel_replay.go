package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
)

// Channel replay (PROTOCOL.md §8): a target subscribing to a concrete
// channel from a resume point (a WebSocket's since, an SSE channel
// stream's Last-Event-ID) gets the channel's buffered pushes after it that
// it may see, then the live ones, each exactly once, or the channel's
// resync frame on a miss.
//
// The hand-over: while the buffer is read, the channel's live pushes to
// the target wait (holding); once the replay is queued they follow it,
// except those at or below base (the newest position the replay read: it
// had them, or they precede the resume point). base keeps dropping such
// late deliveries (a Notify that appended before the replay was read but
// delivers after it) while the channel stays subscribed.
type chanResume struct {
	holding bool
	held    []item
	base    uint64
}

// holdChannels starts holding the live pushes of channels to t (before
// they are subscribed); the caller then subscribes them, reads each
// replay and releases it (or drops the hold on failure).
func (t *target) holdChannels(channels []string) {
	if len(channels) == 0 {
		return
	}
	c := t.c
	c.mu.Lock()
	if t.resumes == nil {
		t.resumes = make(map[string]*chanResume, len(channels))
	}
	for _, ch := range channels {
		t.resumes[ch] = &chanResume{holding: true}
	}
	t.hasResume.Store(true)
	c.mu.Unlock()
}

// dropResumes forgets the hand-overs of channels (unsubscribed, or a
// subscribe that failed); all with all set.
func (t *target) dropResumes(channels []string, all bool) {
	if !t.hasResume.Load() {
		return
	}
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if all {
		t.resumes = nil
	}
	for _, ch := range channels {
		delete(t.resumes, ch)
	}
	if len(t.resumes) == 0 {
		t.resumes = nil
		t.hasResume.Store(false)
	}
}

// replay is one channel's replay for a target.
type replay struct {
	channel string
	outs    []item
	base    uint64
	ok      bool // false: a miss (unknown or evicted resume point, unreadable buffer)
}

// readReplay reads ch's buffer after lastID: the pushes t may see (their
// targeting includes its user; its filters, when given, match them),
// oldest first, and the position they bring it to.
func (ps *pushes) readReplay(ctx context.Context, t *target, ch, lastID string, filters []pushFilter) replay {
	r := replay{channel: ch}
	lk, err := ps.p.cfg.Buffer.Since(ctx, channelKey(t.ident.Tenant, ch), lastID)
	if err != nil {
		// Never an error the client cannot act on: it resyncs.
		ps.p.log.Warn("realtime: channel buffer unavailable, resyncing the subscriber", "op", "channel replay", "err", err)
		ps.p.stats.resync(resyncBufferMiss, 1)
		return r
	}
	switch lk.Status {
	case LookupUpToDate:
		r.base, r.ok = lk.Seq, true
	case LookupFound:
		r.base, r.ok = lk.Seq, true
		for _, e := range lk.Events {
			r.base = max(r.base, e.Seq)
			if mayReceive(e.Event, t.ident.User, filters) {
				r.outs = append(r.outs, item{ev: bufferedPush(e), seq: e.Seq})
			}
		}
	}
	if !r.ok {
		ps.p.stats.resync(resyncBufferMiss, 1)
	}
	return r
}

// bufferedPush is a push read back from its channel's buffer: its event
// as a push (the buffer's event shares its fields).
func bufferedPush(e Entry) *Event {
	ev := e.Event
	return &Event{kind: kindPush, Type: ev.Type, ETag: ev.ETag, Data: ev.Data, Time: ev.Time}
}

// mayReceive reports whether a buffered channel push would have been
// delivered to user with filters: its targeting, and one filter matching.
func mayReceive(ev *Event, user string, filters []pushFilter) bool {
	if ev == nil || !targetsUser(ev.Prior, user) {
		return false
	}
	if len(filters) == 0 {
		return true
	}
	var env envelope
	if json.Unmarshal(ev.Data, &env) != nil {
		return false
	}
	d := decodePushData(env.Data)
	return anyFilterMatchesData(filters, env.Event, &d)
}

// release queues r (or the channel's resync frame on a miss), then the
// live pushes held meanwhile that come after it, and ends the hold: later
// pushes go straight to the queue.
func (t *target) release(r replay) {
	outs := r.outs
	if !r.ok {
		outs = []item{{ev: channelResync(r.channel)}}
	}
	c := t.c
	c.mu.Lock()
	kick := false
	for _, o := range outs {
		kick = c.pushLocked(o.out()) || kick
	}
	if cr := t.resumes[r.channel]; cr != nil {
		for _, o := range cr.held {
			if o.seq != 0 && o.seq <= r.base {
				continue // in the replay
			}
			kick = c.pushLocked(o.out()) || kick
		}
		cr.held, cr.holding, cr.base = nil, false, r.base
		if r.base == 0 { // nothing to drop later
			delete(t.resumes, r.channel)
			if len(t.resumes) == 0 {
				t.resumes = nil
				t.hasResume.Store(false)
			}
		}
	}
	c.mu.Unlock()
	if kick {
		c.kick()
	}
}

// parseSince decodes a subscribe's since object (checkSince).
func parseSince(raw json.RawMessage, channels []string) (map[string]string, error) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var since map[string]string
	if err := json.Unmarshal(raw, &since); err != nil {
		return nil, badRequest(`field "since" must be an object of strings`)
	}
	return checkSince(since, channels)
}

// checkSince validates a subscribe's since: concrete channels, each listed
// in channels, to a resume point (an envelopeId).
func checkSince(since map[string]string, channels []string) (map[string]string, error) {
	listed := make(map[string]bool, len(channels))
	for _, ch := range channels {
		listed[ch] = true
	}
	for ch, id := range since {
		if err := validChannel(ch, false); err != nil {
			return nil, badRequest("since applies to concrete channels only: " + publicMessage(err))
		}
		if !listed[ch] {
			return nil, badRequest("since names a channel that is not in channels: " + ch)
		}
		if id == "" || len(id) > 512 || strings.ContainsAny(id, "\r\n\x00") {
			return nil, badRequest("since: invalid envelopeId for " + ch)
		}
	}
	return since, nil
}
