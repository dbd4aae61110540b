package redisbroker

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Config configures a Broker. Its zero value is usable: every zero field
// takes the default stated in its comment.
type Config struct {
	// Prefix starts every Redis key and channel name of the broker, so that
	// several apps (or tests) share one Redis. It must not contain '{' or
	// '}' (the hash tags of the keys are the broker's). Default: "rt:".
	Prefix string
	// Size is the number of events kept per stream (the resume window).
	// Default: 100.
	Size int
	// MaxAge is how long an event serves as a resume point (checked when
	// read). Default: 1h.
	MaxAge time.Duration
	// StreamTTL is how long the keys of a stream live without an Append
	// (each Append refreshes it). It must be at least MaxAge. Default: 24h.
	StreamTTL time.Duration
	// ProbeInterval is the period of the liveness probe of the Pub/Sub
	// link (a message the broker publishes to itself). Default: 2s.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe (or the subscriptions of a new
	// link) may take before the link is deemed stalled and replaced.
	// Default: 3s.
	ProbeTimeout time.Duration
	// Logger receives the broker's warnings (link lost and back, stalls).
	// Tokens and payloads are never logged. Default: slog.Default().
	Logger *slog.Logger
}

const (
	defaultPrefix        = "rt:"
	defaultSize          = 100
	defaultMaxAge        = time.Hour
	defaultStreamTTL     = 24 * time.Hour
	defaultProbeInterval = 2 * time.Second
	defaultProbeTimeout  = 3 * time.Second

	maxSize = 1 << 20
	// dedupeTTL is how long an Append's dedupe key lives: longer than any
	// retry of one command.
	dedupeTTL = 300 * time.Second
)

// withDefaults returns a copy of c with the defaults applied, or an error
// wrapping ErrInvalidConfig.
func (c Config) withDefaults() (Config, error) {
	if c.Prefix == "" {
		c.Prefix = defaultPrefix
	}
	if c.Size == 0 {
		c.Size = defaultSize
	}
	if c.MaxAge == 0 {
		c.MaxAge = defaultMaxAge
	}
	if c.StreamTTL == 0 {
		c.StreamTTL = max(defaultStreamTTL, c.MaxAge)
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = defaultProbeInterval
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = defaultProbeTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case strings.ContainsAny(c.Prefix, "{}\r\n\x00"):
		return c, fmt.Errorf("%w: Prefix %q contains '{', '}', CR, LF or NUL", ErrInvalidConfig, c.Prefix)
	case len(c.Prefix) > 256:
		return c, fmt.Errorf("%w: Prefix longer than 256 bytes", ErrInvalidConfig)
	case c.Size < 0 || c.Size > maxSize:
		return c, fmt.Errorf("%w: Size %d not in 1..%d", ErrInvalidConfig, c.Size, maxSize)
	case c.MaxAge < 0:
		return c, fmt.Errorf("%w: negative MaxAge %v", ErrInvalidConfig, c.MaxAge)
	case c.StreamTTL < time.Second:
		return c, fmt.Errorf("%w: StreamTTL %v under 1s", ErrInvalidConfig, c.StreamTTL)
	case c.StreamTTL < c.MaxAge:
		return c, fmt.Errorf("%w: StreamTTL %v under MaxAge %v", ErrInvalidConfig, c.StreamTTL, c.MaxAge)
	case c.ProbeInterval < 0:
		return c, fmt.Errorf("%w: negative ProbeInterval %v", ErrInvalidConfig, c.ProbeInterval)
	case c.ProbeTimeout < 0:
		return c, fmt.Errorf("%w: negative ProbeTimeout %v", ErrInvalidConfig, c.ProbeTimeout)
	}
	return c, nil
}
