package gormhook

import (
	"context"
	"fmt"

	"github.com/ginrealtime/realtime"
)

// pendingRegistrar is the optional ability of a Publisher to ask the hook
// which version follows a resume point it no longer buffers
// (*realtime.Plugin's AddPendingEvents): db.Use registers the hook.
type pendingRegistrar interface {
	AddPendingEvents(realtime.PendingEvents)
}

var (
	_ pendingRegistrar       = (*realtime.Plugin)(nil)
	_ realtime.PendingEvents = (*Hook)(nil)
)

// NextPending implements realtime.PendingEvents: the version of ref's row
// in the outbox (committed, not published yet) whose PrevETag is etag. A
// subscriber reconnecting from etag after the engine restarted empty then
// waits for it rather than resync (realtime.Config.ResumeWait).
func (h *Hook) NextPending(ctx context.Context, ref realtime.Ref, etag string) (uint64, bool, error) {
	if h == nil || h.outbox == nil || etag == "" {
		return 0, false, nil
	}
	var versions []uint64
	err := h.outboxSession(ctx, nil).
		Where("ref = ? AND tenant = ? AND prev_etag = ? AND version > 0", refOf(ref.Collection, ref.ID), ref.Tenant, etag).
		Order("version").Limit(1).Pluck("version", &versions).Error
	if err != nil {
		return 0, false, fmt.Errorf("gormhook: look up a pending event: %w", err)
	}
	if len(versions) == 0 {
		return 0, false, nil
	}
	return versions[0], true, nil
}
