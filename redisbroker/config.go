package redisbroker

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
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
	// StreamTTL is how long the keys of a stream (its entries, its epoch,
	// its record's last version) live without an Append (each Append
	// refreshes it). The nodes watching a stream whose keys expired get a
	// Gap with its next event, and its record takes any version next. It
	// must be at least MaxAge. Default: 24h.
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

// QueueConfig configures a Queue. Its zero value is usable: every zero
// field takes the default stated in its comment.
type QueueConfig struct {
	// Stream is the Redis stream other backends XADD their requests to.
	// Default: "rt:queue".
	Stream string
	// Group is the consumer group every node's Queue joins: each request
	// goes to one of them. Default: "realtime".
	Group string
	// Consumer names this Queue in the group; it must differ between the
	// Queues of one group. Default: "<hostname>-<pid>-<random hex>".
	Consumer string
	// DeadLetter is the stream requests that cannot be delivered are moved
	// to. Default: Stream + ":dead".
	DeadLetter string
	// DeadLetterMaxLen bounds DeadLetter (XADD MAXLEN ~, so Redis may keep
	// somewhat more). Default: 10000.
	DeadLetterMaxLen int64
	// Batch is the most requests read (or claimed) at once. Default: 100.
	Batch int
	// Concurrency is the most requests of a batch processed at once.
	// Default: 8.
	Concurrency int
	// Block is how long one XREADGROUP waits for new requests; it also
	// bounds how long Close waits for a read under way. Default: 2s.
	Block time.Duration
	// MaxAttempts is the number of deliveries of a request that fails for
	// a passing reason (Redis or the broker unavailable, the plugin
	// closing) before it is dead-lettered. Default: 5.
	MaxAttempts int
	// RetryAfter is how long a request stays pending (failed, or taken by
	// a node that died) before a Queue claims it again (XAUTOCLAIM) and
	// retries it. It must exceed the time one request takes. Default: 30s.
	RetryAfter time.Duration
	// MaxRequestBytes caps the size of the request field; a larger request
	// is dead-lettered. Default: 1 MiB (the HTTP endpoints' default cap).
	MaxRequestBytes int
	// Logger receives the queue's warnings (dead letters, retries, Redis
	// errors). Payloads are never logged. Default: slog.Default().
	Logger *slog.Logger
}

const (
	defaultQueueStream      = "rt:queue"
	defaultQueueGroup       = "realtime"
	defaultDeadLetterMaxLen = 10000
	defaultQueueBatch       = 100
	defaultQueueConcurrency = 8
	defaultQueueBlock       = 2 * time.Second
	defaultQueueAttempts    = 5
	defaultQueueRetryAfter  = 30 * time.Second
	defaultQueueMaxRequest  = 1 << 20
	maxQueueBatch           = 10000
)

// withDefaults returns a copy of c with the defaults applied, or an error
// wrapping ErrInvalidConfig.
func (c QueueConfig) withDefaults() (QueueConfig, error) {
	if c.Stream == "" {
		c.Stream = defaultQueueStream
	}
	if c.Group == "" {
		c.Group = defaultQueueGroup
	}
	if c.Consumer == "" {
		c.Consumer = defaultConsumer()
	}
	if c.DeadLetter == "" {
		c.DeadLetter = c.Stream + ":dead"
	}
	if c.DeadLetterMaxLen == 0 {
		c.DeadLetterMaxLen = defaultDeadLetterMaxLen
	}
	if c.Batch == 0 {
		c.Batch = defaultQueueBatch
	}
	if c.Concurrency == 0 {
		c.Concurrency = defaultQueueConcurrency
	}
	if c.Block == 0 {
		c.Block = defaultQueueBlock
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = defaultQueueAttempts
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = defaultQueueRetryAfter
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = defaultQueueMaxRequest
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.DeadLetter == c.Stream:
		return c, fmt.Errorf("%w: DeadLetter is Stream (%q)", ErrInvalidConfig, c.Stream)
	case c.DeadLetterMaxLen < 0:
		return c, fmt.Errorf("%w: negative DeadLetterMaxLen %d", ErrInvalidConfig, c.DeadLetterMaxLen)
	case c.Batch < 0 || c.Batch > maxQueueBatch:
		return c, fmt.Errorf("%w: Batch %d not in 1..%d", ErrInvalidConfig, c.Batch, maxQueueBatch)
	case c.Concurrency < 0:
		return c, fmt.Errorf("%w: negative Concurrency %d", ErrInvalidConfig, c.Concurrency)
	case c.Block < time.Millisecond:
		return c, fmt.Errorf("%w: Block %v under 1ms", ErrInvalidConfig, c.Block)
	case c.MaxAttempts < 0:
		return c, fmt.Errorf("%w: negative MaxAttempts %d", ErrInvalidConfig, c.MaxAttempts)
	case c.RetryAfter < time.Millisecond:
		return c, fmt.Errorf("%w: RetryAfter %v under 1ms", ErrInvalidConfig, c.RetryAfter)
	case c.MaxRequestBytes < 0:
		return c, fmt.Errorf("%w: negative MaxRequestBytes %d", ErrInvalidConfig, c.MaxRequestBytes)
	}
	return c, nil
}

// defaultConsumer is "<hostname>-<pid>-<8 random hex digits>": unique per
// process, recognisable in XINFO CONSUMERS.
func defaultConsumer() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
