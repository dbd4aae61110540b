package redisbroker

import (
	"fmt"

	"github.com/ginrealtime/realtime"
)

// Sentinel errors. Each wraps the realtime sentinel of the same meaning, so
// errors.Is works with either.
var (
	// ErrInvalidConfig reports a Config (or client) that New cannot use.
	ErrInvalidConfig = fmt.Errorf("redisbroker: invalid config: %w", realtime.ErrInvalidConfig)
	// ErrUnavailable reports that Redis could not be reached (or did not
	// answer, or answered with an error): the plugin turns it into 503.
	ErrUnavailable = fmt.Errorf("redisbroker: unavailable: %w", realtime.ErrUnavailable)
	// ErrClosed is returned by Watch and Listen once Stop was called, and by
	// Start after Stop or when called twice.
	ErrClosed = fmt.Errorf("redisbroker: closed: %w", realtime.ErrClosed)
	// ErrOutOfOrder reports a record version appended before the version
	// it follows (AppendRecord without gap): nothing was appended; it is
	// not an outage.
	ErrOutOfOrder = fmt.Errorf("redisbroker: version out of order: %w", realtime.ErrOutOfOrder)
	// ErrLastUnknown reports a record version above 1 appended with
	// realtime.AppendIfLastKnown while the record has no version key
	// (never appended, expired, Redis restarted empty, Invalidate):
	// nothing was appended; it is not an outage.
	ErrLastUnknown = fmt.Errorf("redisbroker: record's last version unknown: %w", realtime.ErrLastUnknown)
	// ErrCorrupt reports an entry in Redis this package cannot read (written
	// by something else under the same prefix).
	ErrCorrupt = fmt.Errorf("redisbroker: corrupt entry: %w", realtime.ErrBadRequest)
)

// unavailable wraps a Redis error of op.
func unavailable(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
}
