// Package realtimeprom exposes realtime.Plugin.Stats as Prometheus
// metrics: a prometheus.Collector reading one Stats snapshot per scrape.
// It lives in a package of its own so that the realtime package does not
// depend on the Prometheus client.
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(realtimeprom.New(rt, realtimeprom.WithTenants(10)))
//	admin.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// The queue's and the outbox's series come from the components added to
// the plugin with AddStatsSource (redisbroker.Queue, gormhook.Hook).
//
// # Metrics
//
// Gauges (values now):
//
//	realtime_connections{transport}                     open connections (sse_record, sse_collection, sse_channel, sse_pushes, websocket, poll: waiting long polls, other)
//	realtime_tenant_connections{tenant}                 open connections of the top tenants (WithTenants; none by default)
//	realtime_subscriptions{kind}                        record, collection and channel subscriptions
//	realtime_streams{kind}                              distinct records and collections followed
//	realtime_broker_up                                  1 while the engine is reachable
//	realtime_broker_last_outage_start_timestamp_seconds the last outage's start (0: none)
//	realtime_broker_last_outage_end_timestamp_seconds   its end (0: none, or still down)
//	realtime_broker_catchup_lag_seconds                 the last catch-up's lag (link lost → caught up)
//	realtime_outbox_backlog                             outbox events older than Grace, not yet published
//	realtime_buffer_streams, realtime_buffer_entries, realtime_buffer_bytes
//	realtime_writer_workers, realtime_writer_extra_workers
//
// Counters:
//
//	realtime_events_published_total{kind}        record events and pushes this node published
//	realtime_frames_delivered_total{transport}   frames written (keepalives excluded)
//	realtime_written_bytes_total{transport}      bytes written
//	realtime_writes_total{transport}             writes (frames coalesce into one write)
//	realtime_resyncs_total{reason}               buffer-miss, bulk-write, gap, version-jump
//	realtime_disconnects_total{reason,transport} slow, expired, revoked, closed, error
//	realtime_auth_failures_total{reason}         missing, malformed, signature, expired, claims, scope, origin, other
//	realtime_acks_received_total, realtime_acks_timed_out_total
//	realtime_queue_consumed_total, realtime_queue_retried_total, realtime_queue_dead_lettered_total
//	realtime_broker_outages_total, realtime_broker_gaps_total, realtime_broker_catchups_total
//	realtime_buffer_evictions_total
//	realtime_writer_stalls_total                 extra writers started for peers that stopped reading
//
// Histograms:
//
//	realtime_delivery_latency_seconds            publish (Event.Time) to write, live record events
//	realtime_fanout_duration_seconds{kind}       one event queued to every subscriber of the node (record, push)
//
// No label names a record, a user or a connection; the tenant label is
// capped by WithTenants.
package realtimeprom

import (
	"github.com/ginrealtime/realtime"
	"github.com/prometheus/client_golang/prometheus"
)

// StatsReader is what the collector reads (*realtime.Plugin is one).
type StatsReader interface {
	Stats() realtime.Stats
	TopTenants(n int) []realtime.TenantStats
}

var _ StatsReader = (*realtime.Plugin)(nil)

// Option configures a Collector.
type Option func(*Collector)

// WithTenants exposes realtime_tenant_connections for the n tenants with
// the most open connections (0, the default: not exposed). Keep n small:
// each tenant is a series.
func WithTenants(n int) Option {
	return func(c *Collector) { c.tenants = max(n, 0) }
}

// WithConstLabels adds labels to every series (e.g. the node's name).
func WithConstLabels(l prometheus.Labels) Option {
	return func(c *Collector) { c.constLabels = l }
}

// Collector is a prometheus.Collector of a plugin's Stats. Safe for
// concurrent use; each Collect reads one snapshot.
type Collector struct {
	rt          StatsReader
	tenants     int
	constLabels prometheus.Labels
	d           descs
}

var _ prometheus.Collector = (*Collector)(nil)

// New returns a Collector of rt's Stats.
func New(rt StatsReader, opts ...Option) *Collector {
	c := &Collector{rt: rt}
	for _, o := range opts {
		if o != nil {
			o(c)
		}
	}
	c.d = newDescs(c.constLabels)
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.d.all() {
		if d == c.d.tenantConns && c.tenants == 0 {
			continue
		}
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.rt.Stats()
	d := &c.d
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	perTransport := func(desc *prometheus.Desc, t realtime.PerTransport, valueType prometheus.ValueType, labels ...string) {
		t.Each(func(transport string, n uint64) {
			ch <- prometheus.MustNewConstMetric(desc, valueType, float64(n), append(labels, transport)...)
		})
	}

	perTransport(d.connections, s.Connections, prometheus.GaugeValue)
	if c.tenants > 0 {
		for _, t := range c.rt.TopTenants(c.tenants) {
			gauge(d.tenantConns, float64(t.Total), t.Tenant)
		}
	}
	gauge(d.subscriptions, float64(s.Subscriptions.Records), "record")
	gauge(d.subscriptions, float64(s.Subscriptions.Collections), "collection")
	gauge(d.subscriptions, float64(s.Subscriptions.Channels), "channel")
	gauge(d.streams, float64(s.Subscriptions.RecordStreams), "record")
	gauge(d.streams, float64(s.Subscriptions.CollectionStreams), "collection")

	counter(d.published, s.Published.Events, "record")
	counter(d.published, s.Published.Pushes, "push")
	perTransport(d.frames, s.Delivery.Frames, prometheus.CounterValue)
	perTransport(d.bytes, s.Delivery.Bytes, prometheus.CounterValue)
	perTransport(d.writes, s.Delivery.Writes, prometheus.CounterValue)
	ch <- histogram(d.latency, s.Delivery.Latency)
	ch <- histogram(d.fanout, s.Delivery.Fanout, "record")
	ch <- histogram(d.fanout, s.Delivery.PushFanout, "push")

	counter(d.resyncs, s.Resyncs.BufferMiss, "buffer-miss")
	counter(d.resyncs, s.Resyncs.BulkWrite, "bulk-write")
	counter(d.resyncs, s.Resyncs.Gap, "gap")
	counter(d.resyncs, s.Resyncs.VersionJump, "version-jump")
	for _, r := range []struct {
		reason string
		t      realtime.PerTransport
	}{
		{"slow", s.Disconnects.Slow}, {"expired", s.Disconnects.Expired}, {"revoked", s.Disconnects.Revoked},
		{"closed", s.Disconnects.Closed}, {"error", s.Disconnects.Error},
	} {
		perTransport(d.disconnects, r.t, prometheus.CounterValue, r.reason)
	}
	a := s.AuthFailures
	for _, r := range []struct {
		reason string
		n      uint64
	}{
		{"missing", a.Missing}, {"malformed", a.Malformed}, {"signature", a.Signature}, {"expired", a.Expired},
		{"claims", a.Claims}, {"scope", a.Scope}, {"origin", a.Origin}, {"other", a.Other},
	} {
		counter(d.auth, r.n, r.reason)
	}
	counter(d.acksReceived, s.Acks.Received)
	counter(d.acksTimedOut, s.Acks.TimedOut)

	counter(d.queueConsumed, s.Queue.Consumed)
	counter(d.queueRetried, s.Queue.Retried)
	counter(d.queueDead, s.Queue.DeadLettered)

	up := 0.0
	if s.Broker.Up {
		up = 1
	}
	gauge(d.brokerUp, up)
	counter(d.brokerOutages, s.Broker.Outages)
	gauge(d.outageStart, unixSeconds(s.Broker.LastOutageStart))
	gauge(d.outageEnd, unixSeconds(s.Broker.LastOutageEnd))
	counter(d.gaps, s.Broker.Gaps)
	counter(d.catchUps, s.Broker.CatchUps)
	gauge(d.catchUpLag, s.Broker.CatchUpLag.Seconds())
	gauge(d.outboxBacklog, float64(s.Outbox.Backlog))

	gauge(d.bufferStreams, float64(s.Buffer.Streams))
	gauge(d.bufferEntries, float64(s.Buffer.Entries))
	gauge(d.bufferBytes, float64(s.Buffer.Bytes))
	counter(d.bufferEvictions, s.Buffer.Evictions)

	gauge(d.workers, float64(s.Writers.Workers))
	gauge(d.extraWorkers, float64(s.Writers.Extra))
	counter(d.stalls, s.Writers.Stalls)
}

// histogram converts a Stats histogram (counts per bucket) to a constant
// Prometheus histogram (cumulative buckets).
func histogram(desc *prometheus.Desc, h realtime.Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var cum uint64
	for i, b := range h.Bounds {
		cum += h.Counts[i]
		buckets[b] = cum
	}
	return prometheus.MustNewConstHistogram(desc, h.Count, h.Sum, buckets, labels...)
}
