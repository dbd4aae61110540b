package realtime

import (
	"context"
	"slices"
	"sync/atomic"
	"time"
)

// Push targets (PROTOCOL.md §7, §8): the connections a push can reach. A
// WebSocket, an SSE channel stream, an SSE pushes stream and a pushes long
// poll (pushes_http.go) are kinds of one target; each queues its pushes to
// its conn, whose transport encodes them.

// userKey names one user of one tenant.
type userKey struct{ tenant, user string }

// target is one connection that receives pushes.
type target struct {
	id    string
	ident *Identity // its tenant and user
	c     *conn
	// all: it receives user pushes and broadcasts (a WebSocket, a pushes
	// stream or poll); else channel pushes only (an SSE channel stream).
	all bool
	// acks: its acks are awaited by Notify (a WebSocket, a pushes stream
	// or poll); httpAcks: they come by POST {base}/acks, from its user
	// rather than its connection (acks.go).
	acks, httpAcks bool
	// present: it counts in presence (a WebSocket, a pushes stream).
	present bool

	// Guarded by the registry's lock. channels is sorted (a handful per
	// target: a slice costs less than a map).
	channels []string
	filters  []pushFilter

	// The hand-overs of channels resumed from a point of their buffer
	// (channel_replay.go), under c.mu; hasResume is set while resumes is
	// not empty, so that a push to a target without any takes no look.
	resumes   map[string]*chanResume
	hasResume atomic.Bool
}

func (t *target) key() userKey { return userKey{tenant: t.ident.Tenant, user: t.ident.User} }

// push queues a push to t without blocking; ok is false when t no longer
// takes frames (closing, or its queue overflowed), kick when its conn must
// be kicked.
func (t *target) push(lp *localPush) (ok, kick bool) {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != connOpen {
		return false, false
	}
	o := item{ev: lp.ev, seq: lp.seq}
	if lp.channel != "" && t.hasResume.Load() {
		if r := t.resumes[lp.channel]; r != nil {
			switch {
			case lp.seq != 0 && lp.seq <= r.base:
				return true, false // the replay carried it
			case r.holding:
				if len(r.held) >= c.max {
					c.t.overflow(c)
					return false, false
				}
				r.held = append(r.held, o)
				return true, false
			}
		}
	}
	kick = c.pushLocked(o.out())
	return c.state == connOpen, kick
}

// channelList returns a copy of t's channels, sorted (registry lock held).
func (t *target) channelList() []string {
	return append(make([]string, 0, len(t.channels)), t.channels...)
}

// hasChannel reports whether t has pattern p (registry lock held).
func (t *target) hasChannel(p string) bool {
	_, ok := slices.BinarySearch(t.channels, p)
	return ok
}

// subscribedTo reports whether one of t's patterns matches channel
// (registry lock held).
func (t *target) subscribedTo(channel string) bool {
	for _, p := range t.channels {
		if channelPatternMatches(p, channel) {
			return true
		}
	}
	return false
}

// open registers t for pushes from every node: the broker brings this
// node its tenant's and its user's topics (before any replay is read: no
// gap), then t enters the registry with patterns and, under its lock,
// first runs (the connected frame). False once closed (the listens are
// undone).
func (ps *pushes) open(t *target, patterns []string, first func()) bool {
	n := ps.p.node
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, topic := range []string{topicTenant(t.ident.Tenant), topicUser(t.ident.Tenant, t.ident.User)} {
		if err := n.b.Listen(ctx, topic); err != nil {
			// The broker listens once the engine is back.
			ps.p.log.Warn("realtime: broker listen failed", "err", err)
		}
	}
	if t.present {
		n.present(t)
	}
	if !ps.reg.add(t, patterns, first) {
		ps.unlisten(t)
		return false
	}
	return true
}

// close undoes open, once (slot: t holds a slot to release).
func (ps *pushes) close(t *target, slot bool) {
	ps.reg.remove(t, slot)
	ps.unlisten(t)
}

// unlisten undoes open's listens and presence, off the caller's goroutine.
func (ps *pushes) unlisten(t *target) {
	n := ps.p.node
	tenant, user := t.ident.Tenant, t.ident.User
	n.async(func(ctx context.Context) {
		_ = n.b.Unlisten(ctx, topicTenant(tenant))
		_ = n.b.Unlisten(ctx, topicUser(tenant, user))
	})
	if t.present {
		n.absent(t)
	}
}
