package realtime

import (
	"context"
	"sync"
)

// PendingEvents is the optional ability of an event source that keeps
// committed events until they are published (the GORM hook's outbox): it
// tells which version of a record follows a version the source has
// published, while that event is committed and not published yet.
//
// A client that reconnects from an ETag the buffer no longer holds (the
// engine restarted empty) while the versions after it wait in such a
// source would otherwise get resync and the stored record, then see those
// versions dropped as older. With a PendingEvents registered
// (AddPendingEvents; gormhook's db.Use registers its hook) its record
// subscription, on an SSE stream or a WebSocket, waits up to
// Config.ResumeWait for them as live events instead, in order, and gets
// resync and the stored record only if they do not come.
type PendingEvents interface {
	// NextPending returns the version of ref's committed, unpublished
	// event whose previous version's ETag (Publication.PrevETag) is etag;
	// ok is false when there is none.
	NextPending(ctx context.Context, ref Ref, etag string) (version uint64, ok bool, err error)
}

// AddPendingEvents registers src: a subscription whose resume point is not
// buffered asks it (and every source registered) whether the version
// after that point is on its way. A nil src is ignored.
func (p *Plugin) AddPendingEvents(src PendingEvents) {
	if src != nil {
		p.streams.pending.add(src)
	}
}

// pendingSources are the registered PendingEvents.
type pendingSources struct {
	mu   sync.RWMutex
	list []PendingEvents
}

func (ps *pendingSources) add(src PendingEvents) {
	ps.mu.Lock()
	ps.list = append(ps.list, src)
	ps.mu.Unlock()
}

// next asks every source for the version after etag: the first that knows
// it answers. A source that fails is taken as not knowing it (the
// subscriber then resyncs, as without sources).
func (ps *pendingSources) next(ctx context.Context, ref Ref, etag string) (uint64, bool) {
	ps.mu.RLock()
	list := ps.list
	ps.mu.RUnlock()
	for _, src := range list {
		if v, ok, err := src.NextPending(ctx, ref, etag); err == nil && ok {
			return v, true
		}
	}
	return 0, false
}
