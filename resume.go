package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// firstFrames decides what a new subscriber of key receives before live
// events (§3): base is the stream position those frames bring it to, and
// skip the ETag of a snapshot it was sent (a live event of the same version
// is not sent again).
func (p *Plugin) firstFrames(ctx context.Context, key StreamKey, ident *Identity, lastID string) (first []item, base uint64, skip string, err error) {
	if key.ID == "" {
		return p.firstCollectionFrames(ctx, key, ident, lastID)
	}
	cur, err := p.loadCurrent(ctx, key)
	if err != nil {
		return nil, 0, "", err
	}
	if auth := p.cfg.Authorize; auth != nil {
		a := Access{Identity: ident, Ref: key}
		if cur != nil {
			a.Record = cur.Data
		}
		if err := auth(ctx, a); err != nil {
			return nil, 0, "", fmt.Errorf("subscribe %s/%s: %w", key.Collection, key.ID, err)
		}
	}
	loader := p.cfg.Loader != nil
	if lastID == "" {
		if !loader {
			return nil, 0, "", nil
		}
		if cur == nil {
			return nil, 0, "", fmt.Errorf("subscribe %s/%s: %w", key.Collection, key.ID, ErrNotFound)
		}
		return p.fromSnapshot(ctx, key, cur, nil)
	}
	if first, base, ok, err := p.replay(ctx, key, lastID); ok || err != nil {
		return first, base, "", err
	}
	// Unknown resume point.
	if !loader {
		return []item{{ev: resyncEvent}}, 0, "", nil
	}
	if cur == nil {
		if lastID == TombstoneETag(key.Collection, key.ID) {
			return nil, 0, lastID, nil // it knows the record is gone
		}
		return []item{{ev: resyncEvent}, {ev: p.tombstone(key)}}, 0, "", nil
	}
	if cur.ETag == lastID {
		return nil, 0, lastID, nil // up to date with the stored record
	}
	return p.fromSnapshot(ctx, key, cur, []item{{ev: resyncEvent}})
}

// fromSnapshot queues cur as a snapshot after prefix, followed by whatever
// the buffer holds after that version.
func (p *Plugin) fromSnapshot(ctx context.Context, key StreamKey, cur *Event, prefix []item) ([]item, uint64, string, error) {
	first := append(prefix, item{ev: cur})
	lk, err := p.cfg.Buffer.Since(ctx, key, cur.ETag)
	if err != nil {
		if p.cluster == nil {
			return nil, 0, "", fmt.Errorf("subscribe: buffer: %w: %w", ErrUnavailable, err)
		}
		// The shared buffer is unreachable: the snapshot stands alone.
		p.log.Warn("realtime: buffer unavailable, serving the stored record", "err", err)
		return first, 0, cur.ETag, nil
	}
	switch lk.Status {
	case LookupFound:
		return append(first, entriesToItems(lk.Events)...), lk.Seq, "", nil
	case LookupUpToDate:
		return first, lk.Seq, "", nil
	}
	return first, 0, cur.ETag, nil
}

func (p *Plugin) firstCollectionFrames(ctx context.Context, key StreamKey, ident *Identity, lastID string) ([]item, uint64, string, error) {
	if auth := p.cfg.Authorize; auth != nil {
		if err := auth(ctx, Access{Identity: ident, Ref: key}); err != nil {
			return nil, 0, "", fmt.Errorf("subscribe %s: %w", key.Collection, err)
		}
	}
	if lastID == "" {
		return nil, 0, "", nil
	}
	if first, base, ok, err := p.replay(ctx, key, lastID); ok || err != nil {
		return first, base, "", err
	}
	return []item{{ev: resyncEvent}}, 0, "", nil
}

// replay looks lastID up in key's buffer: ok when the buffer can serve it
// (the events after it, maybe none), with the position they bring the
// subscriber to; not ok when it is unknown there.
func (p *Plugin) replay(ctx context.Context, key StreamKey, lastID string) (first []item, base uint64, ok bool, err error) {
	lk, err := p.cfg.Buffer.Since(ctx, key, lastID)
	if err != nil {
		if p.cluster == nil {
			return nil, 0, false, fmt.Errorf("subscribe: buffer: %w: %w", ErrUnavailable, err)
		}
		// The shared buffer is unreachable: the subscriber gets resync
		// (and the stored record) rather than an error its EventSource
		// would not retry.
		p.log.Warn("realtime: buffer unavailable, resyncing the subscriber", "err", err)
		return nil, 0, false, nil
	}
	switch lk.Status {
	case LookupUpToDate:
		return nil, lk.Seq, true, nil
	case LookupFound:
		return entriesToItems(lk.Events), lk.Seq, true, nil
	}
	return nil, 0, false, nil
}

func entriesToItems(es []Entry) []item {
	out := make([]item, len(es))
	for i, e := range es {
		out[i] = item{ev: e.Event, seq: e.Seq}
	}
	return out
}

// loadCurrent loads the record of key as a snapshot event; nil, nil when it
// is absent or no loader is configured.
func (p *Plugin) loadCurrent(ctx context.Context, key StreamKey) (*Event, error) {
	if p.cfg.Loader == nil {
		return nil, nil
	}
	rec, err := p.cfg.Loader(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load %s/%s: %w", key.Collection, key.ID, err)
	}
	if rec == nil {
		return nil, nil
	}
	data, err := recordJSON(rec)
	if err != nil {
		return nil, fmt.Errorf("load %s/%s: %w", key.Collection, key.ID, err)
	}
	if string(data) == "null" { // a typed nil pointer: absent
		return nil, nil
	}
	etag := p.etagOf(key.Collection, key.ID, rec, data)
	if !validETag(etag) {
		return nil, fmt.Errorf("load %s/%s: invalid ETag %q", key.Collection, key.ID, etag)
	}
	return &Event{Type: EventSnapshot, Ref: key, ETag: etag, Data: data, Time: time.Now()}, nil
}

// tombstone is the deleted event of a record that is gone.
func (p *Plugin) tombstone(key StreamKey) *Event {
	data, _ := json.Marshal(map[string]string{"id": key.ID})
	return &Event{Type: EventDeleted, Ref: key, ETag: TombstoneETag(key.Collection, key.ID), Data: data, Time: time.Now()}
}
