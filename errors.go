package realtime

import "errors"

// Sentinel errors. Every error the package returns wraps one of these with the
// operation that failed, so callers test them with errors.Is.
var (
	// ErrInvalidConfig reports a Config that New cannot use.
	ErrInvalidConfig = errors.New("realtime: invalid config")
	// ErrUnauthorized reports a missing, malformed, expired or otherwise invalid token.
	ErrUnauthorized = errors.New("realtime: unauthorized")
	// ErrForbidden is returned by an Authorizer (or the plugin) to refuse access.
	ErrForbidden = errors.New("realtime: forbidden")
	// ErrNotFound is returned by a RecordLoader for an absent record, and by an
	// Authorizer that wants to hide a record's existence.
	ErrNotFound = errors.New("realtime: not found")
	// ErrBadRequest reports input the plugin rejects (bad event, bad ETag, bad JSON).
	ErrBadRequest = errors.New("realtime: bad request")
	// ErrTooLarge reports a request body over the configured cap.
	ErrTooLarge = errors.New("realtime: too large")
	// ErrClosed is returned once Close has been called.
	ErrClosed = errors.New("realtime: closed")
	// ErrUnavailable reports a backend (buffer, broker) that cannot be reached.
	ErrUnavailable = errors.New("realtime: unavailable")
	// ErrSlowSubscriber is the reason a subscriber whose queue overflowed was disconnected.
	ErrSlowSubscriber = errors.New("realtime: subscriber too slow")
	// ErrOutOfOrder reports a record version published before the version
	// it follows (Publication.Version): nothing was published; publish it
	// again once the earlier versions are, or with Publication.Gap.
	ErrOutOfOrder = errors.New("realtime: version out of order")
	// ErrLastUnknown reports a record version published with
	// Publication.RequireLast while the engine does not know the record's
	// last version (never published, or forgotten: an engine restarted
	// empty, an expired or invalidated buffer): nothing was published. The
	// publisher makes sure the versions before it are published (none
	// still waiting to be) and publishes it again without RequireLast.
	ErrLastUnknown = errors.New("realtime: record's last version unknown")
	// ErrTooManyConnections reports a connection refused by a connection
	// cap: a WebSocket over the per-user or per-tenant cap, or any stream,
	// long poll or WebSocket over Config.MaxConnsPerIP (429
	// too_many_connections, or close 4429 on a WebSocket).
	ErrTooManyConnections = errors.New("realtime: too many connections")
	// ErrTimeout reports a request body not received within
	// Config.BodyTimeout (408 timeout).
	ErrTimeout = errors.New("realtime: timeout")
)

// Unexported sentinels: causes the plugin records, never returned.
var (
	// errClientGone is why a connection ended when its client left.
	errClientGone = errors.New("realtime: client went away")
	// errFrameField reports an SSE event name or id that cannot be
	// written safely (CR, LF or NUL).
	errFrameField = errors.New("realtime: SSE field contains CR, LF or NUL")
	// errClaimType reports a user or tenant claim that is neither a
	// string nor an integer (wrapped in ErrUnauthorized).
	errClaimType = errors.New("realtime: claim is neither a string nor an integer")
	// errCrossSite is why a state-changing request authenticated by a
	// credential its browser attaches by itself was refused (wrapped in
	// ErrForbidden; csrf.go).
	errCrossSite = errors.New("realtime: cross-site request")
)
