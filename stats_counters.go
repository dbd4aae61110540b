package realtime

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// statsCounters are the plugin's counters outside the delivery path
// (Plugin.stats): each is counted where its event happens, once per
// event (a publish, a resync, a disconnect), never per frame. The
// delivery path's own counts are in the writer pool's meter
// (stats_meter.go). Every method is safe on a nil receiver (a part built
// without a plugin, in tests) and for concurrent use.
type statsCounters struct {
	published, pushes         atomic.Uint64
	resyncs                   [numResyncReasons]atomic.Uint64
	disconnects               [numEndReasons][numKinds]atomic.Uint64
	auth                      [numAuthReasons]atomic.Uint64
	acksReceived, acksTimeout atomic.Uint64
	gaps                      atomic.Uint64
	fanout, pushFanout        atomicHistogram

	// The open connections, by kind and by tenant (stats_conns.go).
	connMu  sync.Mutex
	open    [numKinds]uint64
	tenants map[string]*[numKinds]uint64

	// The broker's outages, from Node.Health.
	brokerMu    sync.Mutex
	brokerDown  bool
	outages     uint64
	outageStart time.Time
	outageEnd   time.Time

	sources statsSources
	// gapLog limits the Warn lines of broker gaps (stats_resync.go).
	gapLog logLimiter
}

func newStatsCounters() *statsCounters {
	return &statsCounters{tenants: make(map[string]*[numKinds]uint64)}
}

// resyncCause is why a subscription resyncs (ResyncStats).
type resyncCause uint8

const (
	resyncBufferMiss resyncCause = iota
	resyncBulkWrite
	resyncGap
	resyncVersionJump
	numResyncReasons
)

// resync counts n subscriptions resynced for why.
func (st *statsCounters) resync(why resyncCause, n int) {
	if st != nil && n > 0 {
		st.resyncs[why].Add(uint64(n))
	}
}

// published counts a record event accepted by the broker.
func (st *statsCounters) publishedEvent() {
	if st != nil {
		st.published.Add(1)
	}
}

// pushed counts a push that reached the broker.
func (st *statsCounters) pushed() {
	if st != nil {
		st.pushes.Add(1)
	}
}

// ackReceived counts an ack from a connection.
func (st *statsCounters) ackReceived() {
	if st != nil {
		st.acksReceived.Add(1)
	}
}

// acksTimedOut counts delivered connections that did not ack in time.
func (st *statsCounters) acksTimedOut(n int) {
	if st != nil && n > 0 {
		st.acksTimeout.Add(uint64(n))
	}
}

// gap counts a gap the broker reported.
func (st *statsCounters) gap() {
	if st != nil {
		st.gaps.Add(1)
	}
}

// fanoutSince observes a record event's fan-out, begun at start.
func (st *statsCounters) fanoutSince(start time.Time) {
	if st != nil {
		st.fanout.observe(fanoutBounds, time.Since(start))
	}
}

// pushFanoutSince observes a push's fan-out, begun at start.
func (st *statsCounters) pushFanoutSince(start time.Time) {
	if st != nil {
		st.pushFanout.observe(fanoutBounds, time.Since(start))
	}
}

// brokerHealth records the broker's state (Node.Health): the outages'
// count and bounds.
func (st *statsCounters) brokerHealth(err error) {
	if st == nil {
		return
	}
	st.brokerMu.Lock()
	defer st.brokerMu.Unlock()
	switch {
	case err != nil && !st.brokerDown:
		st.brokerDown = true
		st.outages++
		st.outageStart, st.outageEnd = time.Now(), time.Time{}
	case err == nil && st.brokerDown:
		st.brokerDown = false
		st.outageEnd = time.Now()
	}
}

// fill copies the counters into s.
func (st *statsCounters) fill(s *Stats) {
	s.Published = PublishStats{Events: st.published.Load(), Pushes: st.pushes.Load()}
	s.Resyncs = ResyncStats{
		BufferMiss:  st.resyncs[resyncBufferMiss].Load(),
		BulkWrite:   st.resyncs[resyncBulkWrite].Load(),
		Gap:         st.resyncs[resyncGap].Load(),
		VersionJump: st.resyncs[resyncVersionJump].Load(),
	}
	dis := func(r endReason) PerTransport {
		return perTransport(func(k connKind) uint64 { return st.disconnects[r][k].Load() })
	}
	s.Disconnects = DisconnectStats{
		Slow: dis(endSlow), Expired: dis(endExpired), Revoked: dis(endRevoked),
		Closed: dis(endClosed), Error: dis(endError),
	}
	a := func(r authReason) uint64 { return st.auth[r].Load() }
	s.AuthFailures = AuthFailureStats{
		Missing: a(authMissing), Malformed: a(authMalformed), Signature: a(authSignature),
		Expired: a(authExpired), Claims: a(authClaims), Scope: a(authScope), Origin: a(authOrigin),
		Other: a(authOther),
	}
	s.Acks = AckStats{Received: st.acksReceived.Load(), TimedOut: st.acksTimeout.Load()}
	s.Delivery.Fanout = st.fanout.snapshot(fanoutBounds)
	s.Delivery.PushFanout = st.pushFanout.snapshot(fanoutBounds)
	s.Broker.Gaps = st.gaps.Load()
	st.brokerMu.Lock()
	s.Broker.Outages = st.outages
	s.Broker.LastOutageStart, s.Broker.LastOutageEnd = st.outageStart, st.outageEnd
	st.brokerMu.Unlock()
}

// connections returns the open connections by kind and the top tenants.
func (st *statsCounters) connections(top int) (PerTransport, []TenantStats) {
	st.connMu.Lock()
	open := perTransport(func(k connKind) uint64 { return st.open[k] })
	var ts []TenantStats
	if top > 0 {
		ts = make([]TenantStats, 0, len(st.tenants))
		for name, n := range st.tenants {
			pt := perTransport(func(k connKind) uint64 { return n[k] })
			ts = append(ts, TenantStats{Tenant: name, Connections: pt, Total: pt.Total()})
		}
	}
	st.connMu.Unlock()
	slices.SortFunc(ts, func(a, b TenantStats) int {
		if c := cmp.Compare(b.Total, a.Total); c != 0 {
			return c
		}
		return cmp.Compare(a.Tenant, b.Tenant)
	})
	if len(ts) > top {
		ts = slices.Clip(ts[:top])
	}
	if ts == nil {
		ts = []TenantStats{}
	}
	return open, ts
}
