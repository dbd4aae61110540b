package realtime

import (
	"sync"
	"time"
)

// Stats is a snapshot of what the plugin is doing on this node
// (Plugin.Stats): gauges (connections, subscriptions, buffer, broker
// state) as they are now, counters (every field named in a past tense or
// a plural of events) since New. Counters only grow; a collector turns
// them into rates. JSON-encodable: durations are nanoseconds, times RFC
// 3339 (omitted when zero).
type Stats struct {
	// Connections are the connections open now, by transport: SSE record,
	// collection and channel streams, WebSockets, and long polls waiting.
	Connections PerTransport `json:"connections"`
	// Tenants are the DefaultStatsTenants tenants with the most open
	// connections, most first (Plugin.TopTenants for another bound).
	Tenants []TenantStats `json:"tenants"`
	// Subscriptions are the records, collections and channels followed now.
	Subscriptions SubscriptionStats `json:"subscriptions"`
	// Published counts what this node published.
	Published PublishStats `json:"published"`
	// Delivery counts what this node wrote to its clients.
	Delivery DeliveryStats `json:"delivery"`
	// Resyncs counts subscriptions resynced, by reason.
	Resyncs ResyncStats `json:"resyncs"`
	// Disconnects counts the connections that ended, by reason and
	// transport (long polls answering are not disconnects: not counted).
	Disconnects DisconnectStats `json:"disconnects"`
	// AuthFailures counts refused requests by reason. The reason is never
	// told to the client (PROTOCOL.md §1): it is for operators only.
	AuthFailures AuthFailureStats `json:"authFailures"`
	// Acks counts acknowledgements of pushes.
	Acks AckStats `json:"acks"`
	// Queue is the queue way in (redisbroker.Queue), reported by the
	// queues added with AddStatsSource.
	Queue QueueStats `json:"queue"`
	// Broker is the state of the link to the engine connecting the nodes.
	Broker BrokerStats `json:"broker"`
	// Outbox is the GORM hook's outbox (gormhook.Hook), reported by the
	// hooks added with AddStatsSource.
	Outbox OutboxStats `json:"outbox"`
	// Buffer is the event buffer, when it reports itself (MemoryBuffer, the
	// in-process engine); Reported is false otherwise (Redis).
	Buffer BufferStats `json:"buffer"`
	// Writers is the writer pool.
	Writers WriterStats `json:"writers"`
}

// PerTransport is a number per transport.
type PerTransport struct {
	SSERecord     uint64 `json:"sseRecord"`
	SSECollection uint64 `json:"sseCollection"`
	SSEChannel    uint64 `json:"sseChannel"`
	// SSEPushes counts the pushes streams ({base}/pushes/subscribe).
	SSEPushes uint64 `json:"ssePushes"`
	WebSocket uint64 `json:"webSocket"`
	Poll      uint64 `json:"poll"`
	// Other counts connections of a transport that does not name itself.
	Other uint64 `json:"other"`
}

// Total is the sum over every transport.
func (t PerTransport) Total() uint64 {
	return t.SSERecord + t.SSECollection + t.SSEChannel + t.SSEPushes + t.WebSocket + t.Poll + t.Other
}

// Each calls f with each transport's label ("sse_record", "sse_collection",
// "sse_channel", "sse_pushes", "websocket", "poll", "other") and number, in that order.
func (t PerTransport) Each(f func(transport string, n uint64)) {
	for _, k := range []struct {
		kind connKind
		n    uint64
	}{
		{kindSSERecord, t.SSERecord}, {kindSSECollection, t.SSECollection}, {kindSSEChannel, t.SSEChannel}, {kindSSEPushes, t.SSEPushes},
		{kindWebSocket, t.WebSocket}, {kindPoll, t.Poll}, {kindOther, t.Other},
	} {
		f(kindNames[k.kind], k.n)
	}
}

// TenantStats is one tenant's open connections.
type TenantStats struct {
	Tenant      string       `json:"tenant"`
	Connections PerTransport `json:"connections"`
	Total       uint64       `json:"total"`
}

// SubscriptionStats are the streams followed on this node now.
type SubscriptionStats struct {
	// Records are record subscriptions: SSE record streams, long polls and
	// records followed over WebSockets (one per connection and record).
	Records uint64 `json:"records"`
	// Collections are SSE collection streams.
	Collections uint64 `json:"collections"`
	// Channels are channel patterns subscribed, summed over connections
	// (WebSockets and SSE channel streams).
	Channels uint64 `json:"channels"`
	// RecordStreams and CollectionStreams are the distinct records and
	// collections followed (the streams this node watches).
	RecordStreams     uint64 `json:"recordStreams"`
	CollectionStreams uint64 `json:"collectionStreams"`
}

// PublishStats counts what this node published.
type PublishStats struct {
	// Events are record events accepted by the broker (Publish, the GORM
	// hook, POST …/events, the queue); duplicates dropped are not counted.
	Events uint64 `json:"events"`
	// Pushes are Notify calls that reached the broker.
	Pushes uint64 `json:"pushes"`
}

// DeliveryStats counts what this node wrote to its clients.
type DeliveryStats struct {
	// Frames are the frames written (SSE events, WebSocket messages, long
	// poll events; keepalives excluded), by transport.
	Frames PerTransport `json:"frames"`
	// Bytes are the bytes written to sockets (SSE streams: with their
	// HTTP/1.1 chunk framing; long polls: not counted), by transport.
	Bytes PerTransport `json:"bytes"`
	// Writes are the writes: several frames queued for one connection
	// leave in one write.
	Writes PerTransport `json:"writes"`
	// Latency is, for each live record event written (published after its
	// subscription began: not a replay, not a Loader snapshot), the time
	// from its publish (Event.Time, on whichever node) to its write.
	Latency Histogram `json:"latency"`
	// Fanout is, for each record event the broker brought to this node,
	// the time to queue it to every subscriber of the node.
	Fanout Histogram `json:"fanout"`
	// PushFanout is the same for pushes (Notify).
	PushFanout Histogram `json:"pushFanout"`
}

// Histogram is a distribution of durations in seconds. Counts[i] is the
// number of observations at most Bounds[i] (and above Bounds[i-1]); the
// last count, one more than Bounds, is those above every bound.
type Histogram struct {
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"`
	// Count is the number of observations, Sum their total in seconds.
	Count uint64  `json:"count"`
	Sum   float64 `json:"sum"`
}

// ResyncStats counts subscriptions told to resync (or resumed from their
// last event, which ends in a resync when the buffer no longer has it).
type ResyncStats struct {
	// BufferMiss: a resume point (Last-Event-ID, since) not in the buffer.
	BufferMiss uint64 `json:"bufferMiss"`
	// BulkWrite: a bulk write (Plugin.Resync).
	BulkWrite uint64 `json:"bulkWrite"`
	// Gap: the broker reported events possibly lost (an outage, a link
	// that reconnected).
	Gap uint64 `json:"gap"`
	// VersionJump: a record event skipped a version.
	VersionJump uint64 `json:"versionJump"`
}

// DisconnectStats counts the connections that ended, by reason.
type DisconnectStats struct {
	// Slow: its queue overflowed (SSE stream ended, WebSocket 1013).
	Slow PerTransport `json:"slow"`
	// Expired: its token expired.
	Expired PerTransport `json:"expired"`
	// Revoked: the Authorizer refused a frame of its record stream.
	Revoked PerTransport `json:"revoked"`
	// Closed: the client left, the plugin closed, or the server ended the
	// stream so that its client resumes (a gap, a bulk write).
	Closed PerTransport `json:"closed"`
	// Error: a write failed or timed out.
	Error PerTransport `json:"error"`
}

// AuthFailureStats counts requests refused by authentication or by a
// check of the caller, by reason.
type AuthFailureStats struct {
	Missing   uint64 `json:"missing"`   // no token
	Malformed uint64 `json:"malformed"` // not a JWT
	Signature uint64 `json:"signature"` // bad signature, algorithm not allowed, no key
	Expired   uint64 `json:"expired"`   // exp passed
	Claims    uint64 `json:"claims"`    // nbf, iat, iss, aud, sub or another claim refused
	Scope     uint64 `json:"scope"`     // publish scope missing
	Origin    uint64 `json:"origin"`    // WebSocket Origin not allowed
	Other     uint64 `json:"other"`
}

// AckStats counts acknowledgements.
type AckStats struct {
	// Received are the acks connections sent.
	Received uint64 `json:"received"`
	// TimedOut are the delivered connections that did not ack within a
	// Notify's AwaitAcks.
	TimedOut uint64 `json:"timedOut"`
}

// QueueStats counts the requests of the queue way in (PROTOCOL.md §8),
// summed over the queues added with AddStatsSource.
type QueueStats struct {
	// Queues is the number of queues that reported.
	Queues int `json:"queues"`
	// Consumed are requests delivered and acknowledged.
	Consumed uint64 `json:"consumed"`
	// Retried are requests that failed for a passing reason, left to be
	// retried.
	Retried uint64 `json:"retried"`
	// DeadLettered are requests moved to the dead-letter stream.
	DeadLettered uint64 `json:"deadLettered"`
}

// BrokerStats is the link to the engine connecting the nodes. A single
// node's in-process engine is always up.
type BrokerStats struct {
	// Up is false while the engine is unreachable (Plugin.Health).
	Up bool `json:"up"`
	// Outages counts the times it became unreachable.
	Outages uint64 `json:"outages"`
	// LastOutageStart and LastOutageEnd bound the last outage (End zero
	// while it lasts; both zero: none).
	LastOutageStart time.Time `json:"lastOutageStart,omitzero"`
	LastOutageEnd   time.Time `json:"lastOutageEnd,omitzero"`
	// Gaps counts the streams whose events may have been lost (each
	// reported gap of a watched stream).
	Gaps uint64 `json:"gaps"`
	// CatchUps counts the catch-ups after the link came back, and
	// CatchUpLag is the last one's lag: from the link going down to every
	// watched stream read back (reported by redisbroker).
	CatchUps   uint64        `json:"catchUps"`
	CatchUpLag time.Duration `json:"catchUpLag"`
}

// OutboxStats is the GORM hook's outbox, summed over the hooks added with
// AddStatsSource.
type OutboxStats struct {
	// Outboxes is the number of hooks that reported.
	Outboxes int `json:"outboxes"`
	// Backlog is the number of events committed more than the outbox's
	// Grace ago and not yet published, as its drainer last counted them.
	Backlog int64 `json:"backlog"`
}

// BufferStats is the event buffer.
type BufferStats struct {
	// Reported is false when the buffer does not report itself.
	Reported bool `json:"reported"`
	// Streams, Entries and Bytes (estimated) are held now.
	Streams int   `json:"streams"`
	Entries int   `json:"entries"`
	Bytes   int64 `json:"bytes"`
	// Evictions counts the events dropped early to keep the memory cap
	// (BufferMemory), not those that aged out or were pushed out by
	// newer ones.
	Evictions uint64 `json:"evictions"`
}

// WriterStats is the writer pool (Config.Writers).
type WriterStats struct {
	// Workers is the number of core workers.
	Workers int `json:"workers"`
	// Stalls counts the extra workers started because every worker was
	// blocked writing to a peer that stopped reading; Extra are running now.
	Stalls uint64 `json:"stalls"`
	Extra  int    `json:"extra"`
}

// DefaultStatsTenants bounds Stats.Tenants.
const DefaultStatsTenants = 10

// StatsSource is a component outside the plugin whose counters Plugin.Stats
// reports: a redisbroker.Queue (Stats.Queue), a gormhook.Hook
// (Stats.Outbox). The plugin's Buffer and Broker are sources when they
// implement it (MemoryBuffer: Stats.Buffer; redisbroker.Broker:
// Stats.Broker's catch-ups).
//
// ReportStats adds the source's counts to its own section of s (adds, so
// that several sources of a kind sum up) and touches nothing else. It is
// called on every Stats call: it must be cheap (no I/O), safe for
// concurrent use, and must not call back into the plugin.
type StatsSource interface {
	ReportStats(s *Stats)
}

// statsSources are the sources added with AddStatsSource.
type statsSources struct {
	mu   sync.Mutex
	list []*StatsSource
}

// AddStatsSource makes Stats report src's counters until remove is called.
// The app adds its queue consumers and GORM hooks:
//
//	rt.AddStatsSource(queue) // redisbroker.Queue
//	rt.AddStatsSource(hook)  // gormhook.Hook
func (p *Plugin) AddStatsSource(src StatsSource) (remove func()) {
	entry := &src
	ss := &p.stats.sources
	ss.mu.Lock()
	ss.list = append(ss.list, entry)
	ss.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			ss.mu.Lock()
			defer ss.mu.Unlock()
			for i, e := range ss.list {
				if e == entry {
					ss.list = append(ss.list[:i], ss.list[i+1:]...)
					return
				}
			}
		})
	}
}

// Stats returns a snapshot of the plugin's counters and gauges (see
// Stats). It is cheap (atomic loads, a few short locks none of which the
// delivery path takes per frame, no I/O) and safe for concurrent use; it
// may be called after Close (the counters stay).
func (p *Plugin) Stats() Stats {
	var s Stats
	s.Connections, s.Tenants = p.stats.connections(DefaultStatsTenants)
	p.stats.fill(&s)
	p.pool.meter.fill(&s)
	s.Writers.Workers, s.Writers.Extra = p.pool.sizes()
	s.Subscriptions = p.streams.hub.counts()
	s.Subscriptions.Channels = p.pushes.reg.channelCount()
	s.Broker.Up = p.Health() == nil
	if src, ok := p.cfg.Buffer.(StatsSource); ok {
		src.ReportStats(&s) // the Broker when one is set
	}
	p.stats.sources.mu.Lock()
	list := append([]*StatsSource(nil), p.stats.sources.list...)
	p.stats.sources.mu.Unlock()
	for _, src := range list {
		(*src).ReportStats(&s)
	}
	return s
}

// TopTenants returns the n tenants with the most open connections on this
// node, most first (ties by name).
func (p *Plugin) TopTenants(n int) []TenantStats {
	_, top := p.stats.connections(n)
	return top
}

// sizes returns the pool's core and extra workers.
func (w *writerPool) sizes() (core, extra int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n, w.extra
}
