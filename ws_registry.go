package realtime

import (
	"slices"
	"sync"
)

// userKey names one user of one tenant.
type userKey struct{ tenant, user string }

// wsTenant is the per-tenant part of the registry.
type wsTenant struct {
	conns    map[*wsConn]struct{}
	channels *channelIndex[*wsConn]
	// matchMu serialises the matches of pushes (which hold only the
	// registry's read lock): channelIndex.match updates the index's dedup
	// stamps. add and remove run under the registry's write lock.
	matchMu  sync.Mutex
	reserved int // slots held: registered connections plus upgrades under way
	streams  int // SSE channel streams registered (not in conns, not in presence)
}

// wsRegistry indexes the open WebSockets: by id, by (tenant, user) and by
// channel pattern per tenant, with the slot counts behind the connection
// caps. Everything is guarded by mu; a connection's channels and filters
// too, so that a push sees a consistent subscription state.
type wsRegistry struct {
	mu        sync.RWMutex
	byID      map[string]*wsConn
	users     map[userKey]map[*wsConn]struct{}
	userSlots map[userKey]int
	tenants   map[string]*wsTenant
	closed    bool
}

func newWSRegistry() *wsRegistry {
	return &wsRegistry{
		byID:      make(map[string]*wsConn),
		users:     make(map[userKey]map[*wsConn]struct{}),
		userSlots: make(map[userKey]int),
		tenants:   make(map[string]*wsTenant),
	}
}

func (r *wsRegistry) tenant(t string) *wsTenant {
	ts := r.tenants[t]
	if ts == nil {
		ts = &wsTenant{conns: make(map[*wsConn]struct{}), channels: newChannelIndex[*wsConn]()}
		r.tenants[t] = ts
	}
	return ts
}

// reserve takes a connection slot for (tenant, user) before the upgrade:
// ErrTooManyConnections over a cap, ErrClosed once closed. Every successful
// reserve is matched by one release.
// The slot's handler is counted in wg under the lock, so that close's
// wait cannot miss it.
func (r *wsRegistry) reserve(k userKey, maxUser, maxTenant int, wg *sync.WaitGroup) error {
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
func (r *wsRegistry) release(k userKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.releaseLocked(k)
}

func (r *wsRegistry) releaseLocked(k userKey) {
	if n := r.userSlots[k] - 1; n > 0 {
		r.userSlots[k] = n
	} else {
		delete(r.userSlots, k)
	}
	if ts := r.tenants[k.tenant]; ts != nil {
		ts.reserved--
		if ts.reserved <= 0 && len(ts.conns) == 0 && ts.streams == 0 {
			delete(r.tenants, k.tenant)
		}
	}
}

// add registers c (whose slot is reserved) for pushes and presence and,
// under the same lock, calls first (which queues the connected frame, so
// that no push can be queued before it); false once the registry is closed.
func (r *wsRegistry) add(c *wsConn, first func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	k := c.key()
	r.byID[c.id] = c
	m := r.users[k]
	if m == nil {
		m = make(map[*wsConn]struct{})
		r.users[k] = m
	}
	m[c] = struct{}{}
	r.tenant(k.tenant).conns[c] = struct{}{}
	first()
	return true
}

// remove unregisters c from every index and releases its slot. It is
// idempotent; registered reports whether c had been added.
func (r *wsRegistry) remove(c *wsConn, registered bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := c.key()
	if registered {
		if r.byID[c.id] != c {
			return // already removed
		}
		delete(r.byID, c.id)
		if m := r.users[k]; m != nil {
			delete(m, c)
			if len(m) == 0 {
				delete(r.users, k)
			}
		}
		if ts := r.tenants[k.tenant]; ts != nil {
			delete(ts.conns, c)
			for p := range c.channels {
				ts.channels.remove(p, c)
			}
		}
		c.channels = nil
		c.filters = nil
	}
	r.releaseLocked(k)
}

// all returns every registered connection.
func (r *wsRegistry) all() []*wsConn {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*wsConn, 0, len(r.byID))
	for _, c := range r.byID {
		out = append(out, c)
	}
	return out
}

// close refuses further reservations and registrations.
func (r *wsRegistry) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}

// subscribe adds patterns to c's channels (at most max in all); it returns
// every channel c now has, sorted.
func (r *wsRegistry) subscribe(c *wsConn, patterns []string, max int) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byID[c.id] != c {
		return nil, ErrClosed
	}
	n := len(c.channels)
	for _, p := range patterns {
		if _, ok := c.channels[p]; !ok {
			n++
		}
	}
	if n > max {
		return nil, badRequest("too many channels")
	}
	if c.channels == nil && len(patterns) > 0 {
		c.channels = make(map[string]struct{}, len(patterns))
	}
	ts := r.tenant(c.tenant)
	for _, p := range patterns {
		if _, ok := c.channels[p]; ok {
			continue
		}
		c.channels[p] = struct{}{}
		ts.channels.add(p, c)
	}
	return c.channelList(), nil
}

// unsubscribe removes patterns from c's channels and returns those left.
func (r *wsRegistry) unsubscribe(c *wsConn, patterns []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ts := r.tenants[c.tenant]; ts != nil && r.byID[c.id] == c {
		for _, p := range patterns {
			if _, ok := c.channels[p]; ok {
				delete(c.channels, p)
				ts.channels.remove(p, c)
			}
		}
	}
	return c.channelList()
}

// addFilters appends fs to c's filters (at most maxFilters in all).
func (r *wsRegistry) addFilters(c *wsConn, fs []pushFilter) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(c.filters)+len(fs) > maxFilters {
		return badRequest("too many filters")
	}
	c.filters = append(c.filters, fs...)
	return nil
}

// removeFilters drops c's filters equal to one of fs; with fs empty, all.
func (r *wsRegistry) removeFilters(c *wsConn, fs []pushFilter, all bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if all {
		c.filters = nil
		return
	}
	c.filters = slices.DeleteFunc(c.filters, func(f pushFilter) bool {
		return slices.ContainsFunc(fs, func(g pushFilter) bool { return sameFilter(f, g) })
	})
}

// presence returns the users of tenant with an open connection, sorted, and
// the tenant's connection count.
func (r *wsRegistry) presence(tenant string) ([]string, int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	users := []string{}
	n := 0
	if ts := r.tenants[tenant]; ts != nil {
		n = len(ts.conns)
		seen := make(map[string]struct{})
		for c := range ts.conns {
			if _, ok := seen[c.user]; !ok {
				seen[c.user] = struct{}{}
				users = append(users, c.user)
			}
		}
	}
	slices.Sort(users)
	return users, n
}

// userConns returns the number of open connections of one user (SSE
// channel streams are not counted).
func (r *wsRegistry) userConns(k userKey) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for c := range r.users[k] {
		if c.stream == nil {
			n++
		}
	}
	return n
}

// addStream registers an SSE channel stream (c.stream set) as a push
// target of its (tenant, user) with patterns: indexed by user and by
// channel pattern like a WebSocket, but not by id nor among the tenant's
// connections (no presence, no slot, no ping). False once closed.
func (r *wsRegistry) addStream(c *wsConn, patterns []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	k := c.key()
	m := r.users[k]
	if m == nil {
		m = make(map[*wsConn]struct{})
		r.users[k] = m
	}
	m[c] = struct{}{}
	ts := r.tenant(k.tenant)
	ts.streams++
	c.channels = make(map[string]struct{}, len(patterns))
	for _, p := range patterns {
		c.channels[p] = struct{}{}
		ts.channels.add(p, c)
	}
	return true
}

// removeStream undoes addStream; it reports whether c was registered
// (false on a second call).
func (r *wsRegistry) removeStream(c *wsConn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := c.key()
	m := r.users[k]
	if _, ok := m[c]; !ok {
		return false
	}
	delete(m, c)
	if len(m) == 0 {
		delete(r.users, k)
	}
	if ts := r.tenants[k.tenant]; ts != nil {
		for p := range c.channels {
			ts.channels.remove(p, c)
		}
		ts.streams--
		if ts.reserved <= 0 && len(ts.conns) == 0 && ts.streams == 0 {
			delete(r.tenants, k.tenant)
		}
	}
	c.channels = nil
	return true
}
