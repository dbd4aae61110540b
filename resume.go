package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// firstFrames decides what a subscriber of key receives before live
// events (§3), whether it subscribes, reconnects from its Last-Event-ID or
// resumes in place after a gap: the same rules, once.
//
// wait, when not 0, is the version a resuming subscription holds (a
// record's subscription after the broker's gap report, resumeFrom): when
// lastID is not buffered and the stored record is ahead of it, the
// versions in between may still be on their way (an outbox publishing
// once the engine is back): the start then carries no frames and waits
// for them (start.await) rather than resync.
func (rs *recordStreams) firstFrames(ctx context.Context, key StreamKey, ident *Identity, lastID string, wait uint64) (start, error) {
	if key.ID == "" {
		return rs.firstCollectionFrames(ctx, key, ident, lastID)
	}
	cur, err := rs.loadCurrent(ctx, key)
	if err != nil {
		return start{}, err
	}
	a := Access{Identity: ident, Ref: key}
	if cur.ev != nil {
		a.Record = cur.ev.Data
	}
	if err := rs.access.record(ctx, a); err != nil {
		return start{}, fmt.Errorf("subscribe %s/%s: %w", key.Collection, key.ID, err)
	}
	loader := rs.loader != nil
	if lastID == "" {
		if !loader {
			return start{}, nil
		}
		if cur.ev == nil {
			return start{}, fmt.Errorf("subscribe %s/%s: %w", key.Collection, key.ID, ErrNotFound)
		}
		return rs.fromSnapshot(ctx, key, cur, nil)
	}
	if st, ok, err := rs.replay(ctx, key, lastID); ok || err != nil {
		return st, err
	}
	// Unknown resume point.
	if !loader {
		return start{first: []item{{ev: resyncEvent}}}, nil
	}
	if cur.ev == nil {
		tomb := TombstoneETag(key.Collection, key.ID)
		if lastID == tomb {
			return start{skip: lastID, version: cur.version}, nil // it knows the record is gone
		}
		t := rs.tombstone(key)
		t.Version = cur.version
		return start{first: []item{{ev: resyncEvent}, {ev: t}}, version: cur.version}, nil
	}
	if cur.ev.ETag == lastID {
		return start{skip: lastID, version: cur.version}, nil // up to date with the stored record
	}
	if wait > 0 && cur.version > wait {
		return start{version: wait, await: cur.version}, nil
	}
	return rs.fromSnapshot(ctx, key, cur, []item{{ev: resyncEvent}})
}

// current is a record as loaded: its snapshot event (nil when absent) and
// the version it was loaded at (0: unknown).
type current struct {
	ev      *Event
	version uint64
}

// fromSnapshot queues cur as a snapshot after prefix, followed by whatever
// the buffer holds after that version.
func (rs *recordStreams) fromSnapshot(ctx context.Context, key StreamKey, cur current, prefix []item) (start, error) {
	first := append(prefix, item{ev: cur.ev})
	lk, err := rs.buf.Since(ctx, key, cur.ev.ETag)
	if err != nil {
		// The shared buffer is unreachable: the snapshot stands alone (its
		// version, when known, keeps older events from following it).
		rs.log.Warn("realtime: buffer unavailable, serving the stored record", "op", "subscribe", "err", err)
		return start{first: first, skip: cur.ev.ETag, version: cur.version}, nil
	}
	switch lk.Status {
	case LookupFound:
		return start{first: append(first, bridged(cur.version, lk.Events)...), base: lk.Seq, version: cur.version}, nil
	case LookupUpToDate:
		return start{first: first, base: lk.Seq, version: cur.version}, nil
	}
	return start{first: first, skip: cur.ev.ETag, version: cur.version}, nil
}

func (rs *recordStreams) firstCollectionFrames(ctx context.Context, key StreamKey, ident *Identity, lastID string) (start, error) {
	if err := rs.access.record(ctx, Access{Identity: ident, Ref: key}); err != nil {
		return start{}, fmt.Errorf("subscribe %s: %w", key.Collection, err)
	}
	if lastID == "" {
		return start{}, nil
	}
	if st, ok, err := rs.replay(ctx, key, lastID); ok || err != nil {
		return st, err
	}
	return start{first: []item{{ev: resyncEvent}}}, nil
}

// replay looks lastID up in key's buffer: ok when the buffer can serve it
// (the events after it, maybe none), not ok when it is unknown there, or
// when what follows it skips a version of the record (those versions can
// never be sent: the subscriber needs resync).
func (rs *recordStreams) replay(ctx context.Context, key StreamKey, lastID string) (start, bool, error) {
	lk, err := rs.buf.Since(ctx, key, lastID)
	if err != nil {
		// The buffer is unreachable (a shared engine down): the subscriber
		// gets resync (and the stored record) rather than an error its
		// EventSource would not retry.
		rs.log.Warn("realtime: buffer unavailable, resyncing the subscriber", "op", "subscribe", "err", err)
		return start{}, false, nil
	}
	switch lk.Status {
	case LookupUpToDate:
		return start{base: lk.Seq, version: lk.Version}, true, nil
	case LookupFound:
		if key.ID == "" {
			return start{first: entriesToOuts(lk.Events), base: lk.Seq}, true, nil
		}
		return start{first: bridged(lk.Version, lk.Events), base: lk.Seq, version: lk.Version}, true, nil
	}
	return start{}, false, nil
}

// bridged turns a record's buffered events after a resume point of
// version from (0: unknown) into outs. Where they skip a version (a gap the
// publisher declared, Publication.Gap), the versions from there up to the
// newest can never be sent exactly: a resync frame, then the newest event,
// stand for them.
func bridged(from uint64, es []Entry) []item {
	v := from
	for i, e := range es {
		if ev := e.Event; ev.Version > 0 {
			if v > 0 && ev.Version != v+1 {
				o := entriesToOuts(es[:i])
				last := es[len(es)-1]
				return append(o, item{ev: resyncEvent}, item{ev: last.Event, seq: last.Seq})
			}
			v = ev.Version
		}
	}
	return entriesToOuts(es)
}

func entriesToOuts(es []Entry) []item {
	o := make([]item, len(es))
	for i, e := range es {
		o[i] = item{ev: e.Event, seq: e.Seq}
	}
	return o
}

// loadCurrent loads the record of key as a snapshot event (nil when it is
// absent or no loader is configured), with the version it was loaded at
// when the loader tells (VersionedRecord, Versioner).
func (rs *recordStreams) loadCurrent(ctx context.Context, key StreamKey) (current, error) {
	if rs.loader == nil {
		return current{}, nil
	}
	rec, err := rs.loader(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return current{}, nil
	}
	if err != nil {
		return current{}, fmt.Errorf("load %s/%s: %w", key.Collection, key.ID, err)
	}
	var version uint64
	switch v := rec.(type) {
	case VersionedRecord:
		rec, version = v.Record, v.Version
	case *VersionedRecord:
		if v == nil {
			return current{}, nil
		}
		rec, version = v.Record, v.Version
	}
	if rec == nil {
		return current{version: version}, nil
	}
	if vr, ok := rec.(Versioner); ok && version == 0 {
		version = vr.RecordVersion()
	}
	data, err := recordJSON(rec)
	if err != nil {
		return current{}, fmt.Errorf("load %s/%s: %w", key.Collection, key.ID, err)
	}
	if string(data) == "null" { // a typed nil pointer: absent
		return current{version: version}, nil
	}
	etag := rs.etagOf(key.Collection, key.ID, rec, data)
	if !validETag(etag) {
		return current{}, fmt.Errorf("load %s/%s: invalid ETag %q", key.Collection, key.ID, etag)
	}
	ev := &Event{Type: EventSnapshot, Ref: key, ETag: etag, Data: data, Version: version}
	return current{ev: ev, version: version}, nil
}

// tombstone is the deleted event of a record that is gone.
func (rs *recordStreams) tombstone(key StreamKey) *Event {
	data, _ := json.Marshal(map[string]string{"id": key.ID})
	return &Event{Type: EventDeleted, Ref: key, ETag: TombstoneETag(key.Collection, key.ID), Data: data}
}
