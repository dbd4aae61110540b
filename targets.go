package realtime

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Push targets (PROTOCOL.md §7, §8): the connections a push can reach. A
// WebSocket and an SSE channel stream are two kinds of one target; each
// queues its pushes to its conn, whose transport encodes them.

// userKey names one user of one tenant.
type userKey struct{ tenant, user string }

// target is one connection that receives pushes.
type target struct {
	id, tenant, user string
	ident            *Identity
	c                *conn
	// all: it receives user pushes and broadcasts (a WebSocket); else
	// channel pushes only (an SSE channel stream).
	all bool
	// acks: its acks are awaited by Notify (a WebSocket).
	acks bool

	// Guarded by the registry's lock.
	channels map[string]struct{}
	filters  []pushFilter

	// The hand-overs of channels resumed from a point of their buffer
	// (channel_replay.go), under c.mu; hasResume is set while resumes is
	// not empty, so that a push to a target without any takes no look.
	resumes   map[string]*chanResume
	hasResume atomic.Bool
}

func (t *target) key() userKey { return userKey{tenant: t.tenant, user: t.user} }

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
	o := out{push: lp, seq: lp.seq}
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
	kick = c.pushLocked(o)
	return c.state == connOpen, kick
}

// channelList returns t's channels, sorted (registry lock held).
func (t *target) channelList() []string {
	out := make([]string, 0, len(t.channels))
	for p := range t.channels {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// subscribedTo reports whether one of t's patterns matches channel
// (registry lock held).
func (t *target) subscribedTo(channel string) bool {
	for p := range t.channels {
		if channelPatternMatches(p, channel) {
			return true
		}
	}
	return false
}

// tenantTargets is the per-tenant part of the registry.
type tenantTargets struct {
	all      map[*target]struct{} // targets of user pushes and broadcasts
	channels *channelIndex[*target]
	// matchMu serialises the matches of pushes (which hold only the
	// registry's read lock): channelIndex.match updates the index's dedup
	// stamps. add and remove run under the registry's write lock.
	matchMu  sync.Mutex
	reserved int // WebSocket slots held: registered plus upgrades under way
	streams  int // other targets registered
}

// registry indexes the push targets: by (tenant, user), by channel pattern
// per tenant, the WebSockets among them by id (presence), with the slot
// counts behind the connection caps. Everything is guarded by mu; a
// target's channels and filters too, so that a push sees a consistent
// subscription state.
type registry struct {
	mu        sync.RWMutex
	sockets   map[string]*target // WebSockets by id
	users     map[userKey]map[*target]struct{}
	userSlots map[userKey]int
	tenants   map[string]*tenantTargets
	closed    bool
	// nchan counts the channel patterns of every target (Stats).
	nchan int
}

func newRegistry() *registry {
	return &registry{
		sockets:   make(map[string]*target),
		users:     make(map[userKey]map[*target]struct{}),
		userSlots: make(map[userKey]int),
		tenants:   make(map[string]*tenantTargets),
	}
}

func (r *registry) tenant(t string) *tenantTargets {
	ts := r.tenants[t]
	if ts == nil {
		ts = &tenantTargets{all: make(map[*target]struct{}), channels: newChannelIndex[*target]()}
		r.tenants[t] = ts
	}
	return ts
}

func (r *registry) pruneLocked(tenant string) {
	if ts := r.tenants[tenant]; ts != nil && ts.reserved <= 0 && len(ts.all) == 0 && ts.streams == 0 {
		delete(r.tenants, tenant)
	}
}

// reserve takes a WebSocket slot for (tenant, user) before the upgrade:
// ErrTooManyConnections over a cap, ErrClosed once closed. Every successful
// reserve is matched by one release. The slot's handler is counted in wg
// under the lock, so that close's wait cannot miss it.
func (r *registry) reserve(k userKey, maxUser, maxTenant int, wg *sync.WaitGroup) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	ts := r.tenant(k.tenant)
	if r.userSlots[k] >= maxUser || ts.reserved >= maxTenant {
		return ErrTooManyConnections
	}
	r.userSlots[k]++
	ts.reserved++
	wg.Add(1)
	return nil
}

// release gives back a slot taken by reserve.
func (r *registry) release(k userKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.releaseLocked(k)
}

func (r *registry) releaseLocked(k userKey) {
	if n := r.userSlots[k] - 1; n > 0 {
		r.userSlots[k] = n
	} else {
		delete(r.userSlots, k)
	}
	if ts := r.tenants[k.tenant]; ts != nil {
		ts.reserved--
		r.pruneLocked(k.tenant)
	}
}

// add registers t with its channel patterns and, under the same lock,
// calls first (a WebSocket's connected frame: no push can be queued before
// it); false once the registry is closed. A WebSocket (t.acks) holds a
// reserved slot.
func (r *registry) add(t *target, patterns []string, first func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	k := t.key()
	m := r.users[k]
	if m == nil {
		m = make(map[*target]struct{})
		r.users[k] = m
	}
	m[t] = struct{}{}
	ts := r.tenant(k.tenant)
	if t.all {
		ts.all[t] = struct{}{}
	} else {
		ts.streams++
	}
	if t.acks {
		r.sockets[t.id] = t
	}
	defer r.countChannels(t, len(t.channels))
	for _, p := range patterns {
		if t.channels == nil {
			t.channels = make(map[string]struct{}, len(patterns))
		}
		t.channels[p] = struct{}{}
		ts.channels.add(p, t)
	}
	if first != nil {
		first()
	}
	return true
}

// remove unregisters t from every index, once; a WebSocket's slot is
// released (slot: it had one).
func (r *registry) remove(t *target, slot bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := t.key()
	if m := r.users[k]; m != nil {
		if _, ok := m[t]; ok {
			delete(m, t)
			if len(m) == 0 {
				delete(r.users, k)
			}
			if ts := r.tenants[k.tenant]; ts != nil {
				if t.all {
					delete(ts.all, t)
				} else {
					ts.streams--
				}
				for p := range t.channels {
					ts.channels.remove(p, t)
				}
			}
			if r.sockets[t.id] == t {
				delete(r.sockets, t.id)
			}
			r.nchan -= len(t.channels)
			t.channels = nil
			t.filters = nil
		}
	}
	if slot {
		r.releaseLocked(k)
	}
	r.pruneLocked(k.tenant)
}

// socketsNow returns every registered WebSocket.
func (r *registry) socketsNow() []*target {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*target, 0, len(r.sockets))
	for _, t := range r.sockets {
		out = append(out, t)
	}
	return out
}

// close refuses further reservations and registrations.
func (r *registry) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}

// subscribe adds patterns to t's channels (at most max in all); it returns
// every channel t now has, sorted.
func (r *registry) subscribe(t *target, patterns []string, max int) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.registeredLocked(t) {
		return nil, ErrClosed
	}
	n := len(t.channels)
	for _, p := range patterns {
		if _, ok := t.channels[p]; !ok {
			n++
		}
	}
	if n > max {
		return nil, badRequest("too many channels")
	}
	if t.channels == nil && len(patterns) > 0 {
		t.channels = make(map[string]struct{}, len(patterns))
	}
	ts := r.tenant(t.tenant)
	defer r.countChannels(t, len(t.channels))
	for _, p := range patterns {
		if _, ok := t.channels[p]; ok {
			continue
		}
		t.channels[p] = struct{}{}
		ts.channels.add(p, t)
	}
	return t.channelList(), nil
}

func (r *registry) registeredLocked(t *target) bool {
	_, ok := r.users[t.key()][t]
	return ok
}

// unsubscribe removes patterns from t's channels and returns those left.
func (r *registry) unsubscribe(t *target, patterns []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ts := r.tenants[t.tenant]; ts != nil && r.registeredLocked(t) {
		defer r.countChannels(t, len(t.channels))
		for _, p := range patterns {
			if _, ok := t.channels[p]; ok {
				delete(t.channels, p)
				ts.channels.remove(p, t)
			}
		}
	}
	return t.channelList()
}

// channels returns t's channels under the read lock.
func (r *registry) channels(t *target) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return t.channelList()
}

// isSubscribed reports whether t already receives channel.
func (r *registry) isSubscribed(t *target, channel string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return t.subscribedTo(channel)
}

// addFilters appends fs to t's filters (at most maxFilters in all).
func (r *registry) addFilters(t *target, fs []pushFilter) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(t.filters)+len(fs) > maxFilters {
		return badRequest("too many filters")
	}
	t.filters = append(t.filters, fs...)
	return nil
}

// removeFilters drops t's filters equal to one of fs; with all, every one.
func (r *registry) removeFilters(t *target, fs []pushFilter, all bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if all {
		t.filters = nil
		return
	}
	t.filters = slices.DeleteFunc(t.filters, func(f pushFilter) bool {
		return slices.ContainsFunc(fs, f.equal)
	})
}

// filtersOf returns a copy of t's filters.
func (r *registry) filtersOf(t *target) []pushFilter {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(t.filters)
}

// local counts the WebSockets of tenant on this node and their users
// (sorted): presence when the broker keeps none.
func (r *registry) local(tenant string) ([]string, int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	users := []string{}
	n := 0
	seen := make(map[string]struct{})
	for _, t := range r.sockets {
		if t.tenant != tenant {
			continue
		}
		n++
		if _, ok := seen[t.user]; !ok {
			seen[t.user] = struct{}{}
			users = append(users, t.user)
		}
	}
	slices.Sort(users)
	return users, n
}

// open registers t for pushes from every node: the broker brings this
// node its tenant's and its user's topics (before any replay is read: no
// gap), then t enters the registry with patterns and, under its lock,
// first runs (a WebSocket's connected frame). False once closed (the
// listens are undone).
func (ps *pushes) open(t *target, patterns []string, first func()) bool {
	n := ps.p.node
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, topic := range []string{topicTenant(t.tenant), topicUser(t.tenant, t.user)} {
		if err := n.b.Listen(ctx, topic); err != nil {
			// The broker listens once the engine is back.
			ps.p.log.Warn("realtime: broker listen failed", "err", err)
		}
	}
	if t.acks {
		n.present(t)
	}
	if !ps.reg.add(t, patterns, first) {
		ps.unlisten(t)
		return false
	}
	return true
}

// close undoes open, once (slot: t holds a WebSocket slot to release).
func (ps *pushes) close(t *target, slot bool) {
	ps.reg.remove(t, slot)
	ps.unlisten(t)
}

// unlisten undoes open's listens and presence, off the caller's goroutine.
func (ps *pushes) unlisten(t *target) {
	n := ps.p.node
	tenant, user := t.tenant, t.user
	n.async(func(ctx context.Context) {
		_ = n.b.Unlisten(ctx, topicTenant(tenant))
		_ = n.b.Unlisten(ctx, topicUser(tenant, user))
	})
	if t.acks {
		n.absent(t)
	}
}
