package realtime

import (
	"encoding/json"
	"slices"
	"sync"
)

// tenantTargets is the per-tenant part of the registry.
type tenantTargets struct {
	all      map[*target]struct{} // targets of user pushes and broadcasts
	channels *channelIndex[*target]
	// matchMu serialises the matches of pushes (which hold only the
	// registry's read lock): channelIndex.match updates the index's dedup
	// stamps. add and remove run under the registry's write lock.
	matchMu sync.Mutex
	// sets holds the targets of recent pushes to every connection of the
	// tenant ("") or to a channel, by channel, when no user is named or
	// excluded and no target has filters: the same push reaches the same
	// targets until they change (every change of the tenant's targets
	// drops them, under the write lock). Under matchMu; at most
	// maxTargetSets, all dropped when full.
	sets     map[string]*targetSet
	reserved int // slots held: registered plus upgrades under way
	streams  int // channel-only targets registered
}

// registry indexes the push targets: by (tenant, user), by channel pattern
// per tenant, those counted in presence by id, with the slot counts behind
// the connection caps (WebSockets, pushes streams and polls hold a slot).
// Everything is guarded by mu; a target's channels and filters too, so
// that a push sees a consistent subscription state.
type registry struct {
	mu        sync.RWMutex
	sockets   map[string]*target // the targets counted in presence, by id
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

// maxTargetSets bounds the target sets a tenant keeps (tenantTargets.sets).
const maxTargetSets = 64

// changedLocked drops the target sets of tenant: its targets, their
// channels or their filters changed (write lock held).
func (r *registry) changedLocked(tenant string) {
	if ts := r.tenants[tenant]; ts != nil {
		ts.sets = nil
	}
}

func (r *registry) pruneLocked(tenant string) {
	if ts := r.tenants[tenant]; ts != nil && ts.reserved <= 0 && len(ts.all) == 0 && ts.streams == 0 {
		delete(r.tenants, tenant)
	}
}

// reserve takes a connection slot for (tenant, user) before a WebSocket's
// upgrade, a pushes stream or a poll: ErrTooManyConnections over a cap,
// ErrClosed once closed. Every successful reserve is matched by one
// release. The slot's handler is counted in wg (when not nil) under the
// lock, so that close's wait cannot miss it.
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
	if wg != nil {
		wg.Add(1)
	}
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
// calls first (the connected frame: no push can be queued before it);
// false once the registry is closed.
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
	r.changedLocked(k.tenant)
	if t.all {
		ts.all[t] = struct{}{}
	} else {
		ts.streams++
	}
	if t.present {
		r.sockets[t.id] = t
	}
	defer r.countChannels(t, len(t.channels))
	for _, p := range patterns {
		if !t.hasChannel(p) {
			i, _ := slices.BinarySearch(t.channels, p)
			t.channels = slices.Insert(t.channels, i, p)
			ts.channels.add(p, t)
		}
	}
	if first != nil {
		first()
	}
	return true
}

// remove unregisters t from every index, once; its slot is released
// (slot: it had one).
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
				r.changedLocked(k.tenant)
				if t.all {
					delete(ts.all, t)
				} else {
					ts.streams--
				}
				for _, p := range t.channels {
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

// socketsNow returns every registered target counted in presence.
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
	for i, p := range patterns {
		if !t.hasChannel(p) && !slices.Contains(patterns[:i], p) {
			n++
		}
	}
	if n > max {
		return nil, badRequest("too many channels")
	}
	ts := r.tenant(t.ident.Tenant)
	r.changedLocked(t.ident.Tenant)
	defer r.countChannels(t, len(t.channels))
	for _, p := range patterns {
		if i, ok := slices.BinarySearch(t.channels, p); !ok {
			t.channels = slices.Insert(t.channels, i, p)
			ts.channels.add(p, t)
		}
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
	if ts := r.tenants[t.ident.Tenant]; ts != nil && r.registeredLocked(t) {
		r.changedLocked(t.ident.Tenant)
		defer r.countChannels(t, len(t.channels))
		for _, p := range patterns {
			if i, ok := slices.BinarySearch(t.channels, p); ok {
				t.channels = slices.Delete(t.channels, i, i+1)
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
	r.changedLocked(t.ident.Tenant)
	t.filters = append(t.filters, fs...)
	return nil
}

// removeFilters drops t's filters equal to one of fs; with all, every one.
func (r *registry) removeFilters(t *target, fs []pushFilter, all bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changedLocked(t.ident.Tenant)
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

// local counts the present targets of tenant on this node and their
// users (sorted): presence when the broker keeps none.
func (r *registry) local(tenant string) ([]string, int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	users := []string{}
	n := 0
	seen := make(map[string]struct{})
	for _, t := range r.sockets {
		if t.ident.Tenant != tenant {
			continue
		}
		n++
		if _, ok := seen[t.ident.User]; !ok {
			seen[t.ident.User] = struct{}{}
			users = append(users, t.ident.User)
		}
	}
	slices.Sort(users)
	return users, n
}

// targetSet is the targets of a push.
type targetSet struct {
	list []*target
	// The distinct users of list and their hashes (userSet), made once.
	usersOnce sync.Once
	distinct  int
	hashes    []byte
}

// users returns the number of distinct users of s's targets and their
// hashes (userSet); s is shared: they are computed once.
func (s *targetSet) users() (int, []byte) {
	s.usersOnce.Do(func() {
		hs := make([]uint64, len(s.list))
		for i, t := range s.list {
			hs[i] = userHash(t.ident.User)
		}
		s.distinct, s.hashes = userSet(hs)
	})
	return s.distinct, s.hashes
}

// takeAll reports whether a push is sure to be queued to every target of
// s, so that they can be counted before it is: each is open, on the
// writer pool (whose pressed count tells that no queue is half full, so
// one frame cannot overflow it), and resumes no channel (whose frames
// are held meanwhile, in a queue of their own).
func (s *targetSet) takeAll() bool {
	for _, t := range s.list {
		if t.c.ended.Load() || t.c.pool == nil || t.hasResume.Load() {
			return false
		}
	}
	return true
}

// targets returns the targets of tenant a push reaches (PROTOCOL.md §7);
// the set may be shared with other pushes (tenantTargets.sets): read only.
func (r *registry) targets(tenant string, users, exclude []string, channel, event string, data json.RawMessage) *targetSet {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ts := r.tenants[tenant]
	if ts == nil {
		return &targetSet{}
	}
	cacheable := len(users) == 0 && len(exclude) == 0
	if cacheable {
		ts.matchMu.Lock()
		set := ts.sets[channel]
		ts.matchMu.Unlock()
		if set != nil {
			return set
		}
	}
	var excluded map[string]struct{}
	if len(exclude) > 0 {
		excluded = make(map[string]struct{}, len(exclude))
		for _, u := range exclude {
			excluded[u] = struct{}{}
		}
	}
	var (
		out      []*target
		decoded  *pushData // the push's data, decoded once, on the first target with filters
		filtered bool      // a target has filters: the set depends on the push's data
	)
	keep := func(t *target) {
		if _, ex := excluded[t.ident.User]; ex {
			return
		}
		if len(t.filters) > 0 {
			filtered = true
			if decoded == nil {
				d := decodePushData(data)
				decoded = &d
			}
			if !anyFilterMatchesData(t.filters, event, decoded) {
				return
			}
		}
		out = append(out, t)
	}
	switch {
	case len(users) > 0:
		seen := make(map[string]struct{}, len(users))
		for _, u := range users {
			if _, dup := seen[u]; dup {
				continue
			}
			seen[u] = struct{}{}
			for t := range r.users[userKey{tenant: tenant, user: u}] {
				if channel == "" && !t.all {
					continue // SSE channel streams get channel pushes only
				}
				if channel != "" && !t.subscribedTo(channel) {
					continue
				}
				keep(t)
			}
		}
	case channel != "":
		ts.matchMu.Lock()
		ts.channels.match(channel, keep)
		ts.matchMu.Unlock()
	default:
		for t := range ts.all {
			keep(t)
		}
	}
	set := &targetSet{list: out}
	if cacheable && !filtered {
		ts.matchMu.Lock()
		if ts.sets == nil || len(ts.sets) >= maxTargetSets {
			ts.sets = make(map[string]*targetSet)
		}
		ts.sets[channel] = set
		ts.matchMu.Unlock()
	}
	return set
}
