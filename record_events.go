package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Publication is a record event to publish.
type Publication struct {
	// Tenant owns the record. Default: the tenant of the context (WithTenant),
	// else DefaultTenant.
	Tenant string
	// Collection and ID address the record. Required.
	Collection string
	ID         string
	// Event is EventSnapshot, EventChanged or EventDeleted. Required.
	Event string
	// Record is the whole record after the write (snapshot, changed); it is
	// marshalled with encoding/json. Ignored when Data is set. For deleted it
	// is optional: the record as it was, never sent to subscribers but shown
	// to the Authorizer (Event.Prior), so that the deletion of a record a
	// subscriber may not see is not shown to it either.
	Record any
	// Data is the record's JSON, used instead of Record (for deleted: the
	// record as it was, like Record).
	Data json.RawMessage
	// ETag is the version's ETag. Default: computed like Plugin.ETag (for
	// deleted: TombstoneETag).
	ETag string
	// Version is this version's position in the record's order: 1, 2, 3, …,
	// consecutive per record, in commit order, assigned where the record's
	// writes are serialized (the GORM hook's outbox assigns it in the
	// write's transaction). With it, publishing is idempotent and ordered: a
	// version at or below the last one published for the record is a
	// duplicate (Publish returns its ETag and delivers nothing), and a
	// version published before the one it follows fails with ErrOutOfOrder.
	// Default: 0, taken from the record when it implements Versioner, else
	// none (events are ordered by publish order alone).
	Version uint64
	// Gap, with Version, says that the versions between the last one
	// published and this one can never be published: this one is published
	// after them anyway, and every subscriber of the record gets resync and
	// the current record before it. Default: false.
	Gap bool
	// RequireLast, with Version above 1, publishes only if the engine
	// knows the record's last version. When it does not (never published,
	// or forgotten: an engine restarted empty, a buffer expired or
	// invalidated), Publish publishes nothing and fails with an error
	// wrapping ErrLastUnknown, instead of taking this version as the first
	// (which would make a predecessor published later a duplicate, and its
	// subscribers see a jump): the publisher checks that the versions
	// before this one are published (none still waiting to be) and
	// publishes it again without RequireLast. Version 1 follows no version
	// and is published as usual. It cannot be combined with Gap
	// (ErrBadRequest). The GORM hook sets it. Default: false.
	RequireLast bool
	// PrevETag is the ETag of the record's version Version - 1 (for
	// version 1: of the record deleted before it, if any), when the
	// publisher knows it; it requires Version. A subscriber that got that
	// version as a snapshot (a Loader's, after a resync) and reconnects
	// with it then resumes exactly from this event instead of getting
	// resync (ResumeIn). The GORM hook sets it. Default: empty, unknown.
	PrevETag string
}

// Publish publishes a record event to every subscriber of the record and of
// its collection, after storing it in their buffers. It returns the event's
// ETag. It never waits for a subscriber.
func (p *Plugin) Publish(ctx context.Context, pub Publication) (string, error) {
	ev, err := p.newEvent(ctx, pub)
	if err != nil {
		return "", fmt.Errorf("realtime: publish %s/%s: %w", pub.Collection, pub.ID, err)
	}
	mode := AppendInOrder
	switch {
	case pub.Gap:
		mode = AppendGap
	case pub.RequireLast:
		mode = AppendIfLastKnown
	}
	if err := p.publish(ctx, ev, mode); err != nil {
		return "", fmt.Errorf("realtime: publish %s/%s: %w", pub.Collection, pub.ID, err)
	}
	return ev.ETag, nil
}

// Snapshot publishes a record's creation (or a full refresh).
func (p *Plugin) Snapshot(ctx context.Context, collection, id string, record any) (string, error) {
	return p.Publish(ctx, Publication{Collection: collection, ID: id, Event: EventSnapshot, Record: record})
}

// Changed publishes a record's new version after an update.
func (p *Plugin) Changed(ctx context.Context, collection, id string, record any) (string, error) {
	return p.Publish(ctx, Publication{Collection: collection, ID: id, Event: EventChanged, Record: record})
}

// Deleted publishes a record's deletion.
func (p *Plugin) Deleted(ctx context.Context, collection, id string) (string, error) {
	return p.Publish(ctx, Publication{Collection: collection, ID: id, Event: EventDeleted})
}

// Resync tells every subscriber of a collection (of the context's tenant,
// or DefaultTenant), on every node, that events may have been missed: a
// write changed records it cannot name (a bulk update by condition). The
// collection's and its records' buffers are forgotten; collection streams
// get a resync frame and SSE record streams end, so their clients resume
// and are resynced against the stored record; records followed over a
// WebSocket get a resync frame of their record (reason bulk-write), then
// the record as stored now (or deleted), then live events.
func (p *Plugin) Resync(ctx context.Context, collection string) error {
	tenant := TenantFrom(ctx)
	if err := validName("collection", collection); err != nil {
		return fmt.Errorf("realtime: resync %s: %w", collection, err)
	}
	if p.closed.Load() {
		return fmt.Errorf("realtime: resync %s: %w", collection, ErrClosed)
	}
	// Every node (this one included) resyncs its subscribers when the
	// message comes back; the buffer is shared.
	if err := p.cfg.Buffer.Invalidate(ctx, tenant, collection); err != nil {
		return fmt.Errorf("realtime: resync %s: %w: %w", collection, ErrUnavailable, err)
	}
	if _, err := p.node.publish(ctx, topicControl, &nodeMsg{Type: "resync", Tenant: tenant, Collection: collection}); err != nil {
		return fmt.Errorf("realtime: resync %s: %w", collection, err)
	}
	return nil
}

// newEvent validates a publication and builds its event.
func (p *Plugin) newEvent(ctx context.Context, pub Publication) (*Event, error) {
	if pub.Tenant == "" {
		pub.Tenant = TenantFrom(ctx)
	}
	for _, f := range [][2]string{{"tenant", pub.Tenant}, {"collection", pub.Collection}, {"id", pub.ID}} {
		if err := validName(f[0], f[1]); err != nil {
			return nil, err
		}
	}
	ref := Ref{Tenant: pub.Tenant, Collection: pub.Collection, ID: pub.ID}
	ev := &Event{Type: pub.Event, Ref: ref, Time: time.Now(), Version: pub.Version}
	if v, ok := pub.Record.(Versioner); ok && ev.Version == 0 {
		ev.Version = v.RecordVersion()
	}
	if pub.Gap && ev.Version == 0 {
		return nil, badRequest("gap needs a version")
	}
	if pub.RequireLast {
		if ev.Version == 0 {
			return nil, badRequest("requireLast needs a version")
		}
		if pub.Gap {
			return nil, badRequest("requireLast and gap exclude each other")
		}
	}
	if pub.PrevETag != "" {
		if ev.Version == 0 {
			return nil, badRequest("prevETag needs a version")
		}
		if !validETag(pub.PrevETag) {
			return nil, badRequest("prevETag must not contain CR, LF or NUL")
		}
		ev.PrevETag = pub.PrevETag
	}
	switch pub.Event {
	case EventSnapshot, EventChanged:
		var err error
		if pub.Data != nil {
			ev.Data, err = compactJSON(pub.Data)
		} else {
			ev.Data, err = recordJSON(pub.Record)
		}
		if err != nil {
			return nil, err
		}
		if string(ev.Data) == "null" {
			return nil, badRequest("data is required")
		}
		ev.ETag = pub.ETag
		if ev.ETag == "" {
			ev.ETag = p.etagOf(ref.Collection, ref.ID, pub.Record, ev.Data)
		}
	case EventDeleted:
		ev.Data, _ = json.Marshal(map[string]string{"id": pub.ID})
		var err error
		switch {
		case pub.Data != nil && string(pub.Data) != "null":
			ev.Prior, err = compactJSON(pub.Data)
		case pub.Record != nil:
			ev.Prior, err = recordJSON(pub.Record)
		}
		if err != nil {
			return nil, err
		}
		if string(ev.Prior) == "null" {
			ev.Prior = nil
		}
		ev.ETag = pub.ETag
		if ev.ETag == "" {
			ev.ETag = TombstoneETag(ref.Collection, ref.ID)
		}
	default:
		return nil, badRequest(fmt.Sprintf("unknown event %q (want snapshot, changed or deleted)", pub.Event))
	}
	if !validETag(ev.ETag) {
		return nil, badRequest("etag must be non-empty without CR, LF or NUL")
	}
	return ev, nil
}

// publish hands ev to the broker, which appends it to the record's and the
// collection's streams and brings it back to every node watching them,
// this one included (node.go: Deliver).
func (p *Plugin) publish(ctx context.Context, ev *Event, mode AppendMode) error {
	if p.closed.Load() {
		return ErrClosed
	}
	dup, err := p.broker.AppendRecord(ctx, ev, mode)
	if err != nil {
		if errors.Is(err, ErrOutOfOrder) || errors.Is(err, ErrLastUnknown) {
			return fmt.Errorf("broker: %w", err)
		}
		return fmt.Errorf("broker: %w: %w", ErrUnavailable, err)
	}
	if !dup {
		p.stats.publishedEvent()
	}
	return nil
}
