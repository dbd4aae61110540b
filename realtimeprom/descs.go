package realtimeprom

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// descs are the collector's metric descriptions (see the package
// documentation for the list).
type descs struct {
	connections, tenantConns, subscriptions, streams           *prometheus.Desc
	published, frames, bytes, writes, latency, fanout          *prometheus.Desc
	resyncs, disconnects, auth, acksReceived, acksTimedOut     *prometheus.Desc
	queueConsumed, queueRetried, queueDead                     *prometheus.Desc
	brokerUp, brokerOutages, outageStart, outageEnd, gaps      *prometheus.Desc
	catchUps, catchUpLag, outboxBacklog                        *prometheus.Desc
	bufferStreams, bufferEntries, bufferBytes, bufferEvictions *prometheus.Desc
	workers, extraWorkers, stalls                              *prometheus.Desc
}

func newDescs(constLabels prometheus.Labels) descs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("realtime_"+name, help, labels, constLabels)
	}
	return descs{
		connections:   d("connections", "Open connections, by transport (poll: long polls waiting).", "transport"),
		tenantConns:   d("tenant_connections", "Open connections of the tenants with the most.", "tenant"),
		subscriptions: d("subscriptions", "Subscriptions now: record (streams, polls, WebSocket records), collection, channel (patterns).", "kind"),
		streams:       d("streams", "Distinct records and collections followed on this node.", "kind"),

		published: d("events_published_total", "Record events and pushes this node published.", "kind"),
		frames:    d("frames_delivered_total", "Frames written to clients (keepalives excluded).", "transport"),
		bytes:     d("written_bytes_total", "Bytes written to clients.", "transport"),
		writes:    d("writes_total", "Writes to clients (queued frames coalesce into one write).", "transport"),
		latency:   d("delivery_latency_seconds", "Time from a record event's publish to its write to a subscriber (live events)."),
		fanout:    d("fanout_duration_seconds", "Time to queue one event to every subscriber of this node.", "kind"),

		resyncs:      d("resyncs_total", "Subscriptions resynced, by reason.", "reason"),
		disconnects:  d("disconnects_total", "Connections ended, by reason and transport.", "reason", "transport"),
		auth:         d("auth_failures_total", "Requests refused by authentication, by reason (never told to the client).", "reason"),
		acksReceived: d("acks_received_total", "Acks received from connections."),
		acksTimedOut: d("acks_timed_out_total", "Delivered connections that did not ack within AwaitAcks."),

		queueConsumed: d("queue_consumed_total", "Queue requests delivered and acknowledged."),
		queueRetried:  d("queue_retried_total", "Queue requests left for a retry after a passing failure."),
		queueDead:     d("queue_dead_lettered_total", "Queue requests moved to the dead-letter stream."),

		brokerUp:      d("broker_up", "1 while the engine connecting the nodes is reachable."),
		brokerOutages: d("broker_outages_total", "Times the engine became unreachable."),
		outageStart:   d("broker_last_outage_start_timestamp_seconds", "Start of the last outage (0: none)."),
		outageEnd:     d("broker_last_outage_end_timestamp_seconds", "End of the last outage (0: none, or still down)."),
		gaps:          d("broker_gaps_total", "Watched streams whose events may have been lost."),
		catchUps:      d("broker_catchups_total", "Catch-ups after the link to the engine came back."),
		catchUpLag:    d("broker_catchup_lag_seconds", "The last catch-up's lag: from the link's loss to every watched stream read back."),
		outboxBacklog: d("outbox_backlog", "Outbox events committed more than Grace ago, not yet published."),

		bufferStreams:   d("buffer_streams", "Streams held by the event buffer."),
		bufferEntries:   d("buffer_entries", "Events held by the event buffer."),
		bufferBytes:     d("buffer_bytes", "Estimated bytes held by the event buffer."),
		bufferEvictions: d("buffer_evictions_total", "Events dropped early to keep the buffer's memory cap."),

		workers:      d("writer_workers", "Core workers of the writer pool."),
		extraWorkers: d("writer_extra_workers", "Extra workers running for stalled peers."),
		stalls:       d("writer_stalls_total", "Extra workers started because every worker was blocked writing to a peer."),
	}
}

// all returns every description.
func (d *descs) all() []*prometheus.Desc {
	return []*prometheus.Desc{
		d.connections, d.tenantConns, d.subscriptions, d.streams,
		d.published, d.frames, d.bytes, d.writes, d.latency, d.fanout,
		d.resyncs, d.disconnects, d.auth, d.acksReceived, d.acksTimedOut,
		d.queueConsumed, d.queueRetried, d.queueDead,
		d.brokerUp, d.brokerOutages, d.outageStart, d.outageEnd, d.gaps,
		d.catchUps, d.catchUpLag, d.outboxBacklog,
		d.bufferStreams, d.bufferEntries, d.bufferBytes, d.bufferEvictions,
		d.workers, d.extraWorkers, d.stalls,
	}
}

// unixSeconds is t as Unix seconds (0 for the zero time).
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}
