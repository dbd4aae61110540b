package realtime

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"runtime"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// RecordLoader loads the current version of a record for snapshots and for
// resync. It returns ErrNotFound (possibly wrapped) when the record is absent.
// The returned value is marshalled with encoding/json; a json.RawMessage or
// []byte is taken as the record's JSON as is.
type RecordLoader func(ctx context.Context, ref Ref) (any, error)

// ETagFunc computes the ETag of a record version from its collection, id and
// JSON. It must return a valid HTTP entity tag, quotes included.
type ETagFunc func(collection, id string, recordJSON []byte) string

// IdentifyFunc identifies the caller of a request by the app's own means
// (a session cookie, its own middleware's result in the request's
// context): see Config.Identify. It returns the caller's identity, or an
// error: one wrapping ErrForbidden refuses with 403, ErrUnavailable with
// 503, any other (and a nil identity) with 401. The error is not logged
// and never shown to the client. It runs on handler goroutines, once per
// request (a stream or a WebSocket keeps its identity): it must be safe for
// concurrent use.
type IdentifyFunc func(r *http.Request) (*Identity, error)

// Config configures a Plugin. The zero value of every field means its default;
// only a way to identify callers is required: a JWT key (JWTSecret or
// JWTKeyfunc) or Identify.
type Config struct {
	// JWTSecret is the HMAC key for HS256 tokens. Required unless JWTKeyfunc
	// or Identify is set.
	JWTSecret []byte
	// JWTKeyfunc supplies verification keys for other algorithms (RS256, ES256,
	// EdDSA, key rotation). Default: nil, HS256 with JWTSecret.
	JWTKeyfunc jwt.Keyfunc
	// JWTAlgorithms is the allow-list of signing algorithms. Default: ["HS256"]
	// with JWTSecret (which verifies HS256/HS384/HS512 only); with JWTKeyfunc
	// it must be set.
	JWTAlgorithms []string
	// JWTLeeway is the clock skew tolerated on exp, nbf and iat. Default: 5s.
	JWTLeeway time.Duration
	// JWTIssuer, when set, is required in the iss claim. Default: not checked.
	JWTIssuer string
	// JWTAudience, when set, is required in the aud claim. Default: not checked.
	JWTAudience string
	// TokenCookie is the name of the cookie a token may be read from. Default: "realtime_token".
	TokenCookie string
	// DisableQueryToken turns off the ?token= query parameter. Default: false (allowed).
	DisableQueryToken bool
	// JWTUserClaim names the claim that holds the user id (Identity.User).
	// A name that is not a top-level claim and contains dots is a path into
	// nested objects ("user.id" reads {"user":{"id":…}}). The value must be
	// a non-empty string or an integer. Default: "sub".
	JWTUserClaim string
	// JWTTenantClaim names the claim that holds the tenant id
	// (Identity.Tenant), nested like JWTUserClaim; an absent claim is
	// DefaultTenant. Default: "tenant".
	JWTTenantClaim string

	// Identify, when set, identifies the caller of every plugin route and
	// of Authenticate instead of a JWT (the app's own sessions or
	// middleware); VerifyToken still verifies JWTs when a key is set. Its
	// identities obey the same rules as a token's (see Identity). Default:
	// nil, a JWT from the Authorization header, the cookie or the query.
	Identify IdentifyFunc
	// IdentifyByHeader tells that Identify reads a credential a browser
	// never attaches by itself (a header): its identities are then not
	// subject to the cross-site check of CSRFTrustedOrigins. Default:
	// false, Identify is taken to read a cookie.
	IdentifyByHeader bool
	// CSRFTrustedOrigins are the origins (scheme://host[:port]) besides the
	// request's own host whose pages may send state-changing requests (any
	// method but GET, HEAD and OPTIONS) authenticated by a credential the
	// browser attaches by itself: the token cookie, or Identify without
	// IdentifyByHeader. Such a request from any other origin, or without
	// Origin, is refused with 403 on the plugin's routes and in
	// Authenticate, whatever CORSAllowedOrigins says (PROTOCOL.md §1; the
	// exact rule is in csrf.go). "*" is refused. Default: none, the
	// request's own host only.
	CSRFTrustedOrigins []string
	// DisableAuthenticateCSRF turns the cross-site check off in
	// Authenticate, for an app with CSRF protection of its own; the
	// plugin's own routes keep it. Default: false (checked).
	DisableAuthenticateCSRF bool

	// Loader loads records for snapshots and resync. Default: nil, no snapshots
	// (subscribers get nothing until the next event; a miss gives resync only).
	Loader RecordLoader
	// Authorize is checked at subscribe time and before each frame. Default: nil,
	// every identity may see every record of its own tenant.
	Authorize Authorizer
	// AuthorizeChannel decides who may subscribe to a channel (WebSocket
	// subscribe, SSE channel and pushes streams) or read its history
	// (PROTOCOL.md §8), and, with ClientPublish, who may publish on it. It
	// sees patterns as sent and must refuse those that would reach a
	// channel the identity may not read (see ChannelAuthorizer);
	// PrivateUserChannels is such a rule for per-user channels, ChannelRules
	// combines rules. Default: nil, every channel of the token's tenant (and
	// no client publishing).
	AuthorizeChannel ChannelAuthorizer
	// ClientPublish lets WebSocket clients publish to channels
	// ({"type":"publish"}, PROTOCOL.md §6) where AuthorizeChannel allows
	// ChannelOpPublish: an AuthorizeChannel is then required, and it must
	// look at ChannelAccess.Op (one written before ChannelOpPublish existed
	// would allow every channel it lets clients read). Default: false,
	// every client publish is refused (forbidden).
	ClientPublish bool
	// ETag computes record ETags. Default: DefaultETag. A record value that
	// implements ETagger supplies its own ETag instead.
	ETag ETagFunc

	// Buffer stores the recent events of every record and collection. Default:
	// the Broker when one is set, else an in-memory buffer bounded by
	// BufferSize, BufferMaxAge and BufferMemory. Setting both is an error.
	Buffer Buffer
	// Broker connects the nodes of one app (PROTOCOL.md §9): events,
	// pushes, presence and acks span every node sharing it, and it is the
	// shared buffer. Default: nil, a single node.
	Broker Broker
	// BufferSize is the number of events kept per record, per collection
	// and per channel (channel history), and the largest history limit. Default: 100.
	BufferSize int
	// BufferMaxAge is how long an event is kept. Default: 1h.
	BufferMaxAge time.Duration
	// BufferMemory caps the in-memory buffer's total size in bytes; the least
	// recently active records are evicted first. Default: 64 MiB.
	BufferMemory int64

	// ResumeWait is how long a record's subscription (an SSE stream or a
	// WebSocket's record) that the Broker told it may have missed events
	// (its link to the engine was down) waits for the versions after its
	// own to be published, when the stored record is ahead of it and the
	// buffer does not hold them yet: the GORM hook's outbox publishes the
	// writes committed during an outage once the engine is back, within
	// its Grace and Interval. They then reach the subscriber as events; if
	// they have not by then, it gets resync and the stored record (or,
	// when the engine is unreachable again then, it resumes once it is
	// back). A client reconnecting from a version the buffer does not hold
	// waits the same way when a PendingEvents source (AddPendingEvents: the
	// GORM hook) has the next version on its way. Default: 3s.
	ResumeWait time.Duration

	// Retry is the reconnection delay sent to SSE clients in the first bytes. Default: 2s.
	Retry time.Duration
	// Heartbeat is the interval of SSE keepalive comments. Default: 30s.
	// (Expired tokens are looked for every 250 ms, whatever it is.)
	Heartbeat time.Duration
	// QueueSize bounds the frames waiting for one subscriber of an SSE
	// stream or a long poll; when it is full the subscriber is
	// disconnected and resumes on reconnect. A queued frame costs 16 bytes
	// (the encoded event is shared by every subscriber), so the default
	// holds an unpaced burst of thousands of events to every stream, and a
	// writer's pause of a few hundred milliseconds, without disconnecting
	// a client that reads. Default: 4096.
	QueueSize int
	// WriteTimeout bounds the writes to a subscriber (each write has between
	// half of it and all of it: the deadline is renewed when half is left); a
	// subscriber that cannot
	// take a write in that time is disconnected. Default: 10s.
	WriteTimeout time.Duration
	// Writers is the number of goroutines that write to SSE connections
	// and WebSockets. Default: 4 × GOMAXPROCS.
	Writers int
	// WritersAtOnce is the most writers writing at one time (a writer
	// blocked on a peer for more than 100 ms no longer counts). Go reads
	// the network only when a P runs out of work, or every 10 ms: writers
	// that take every P make the node read its Broker's messages late (the
	// delivery counts a push waits for, acks, record events), and a push
	// then costs one write per connection where it would have shared
	// writes with the pushes behind it. Default: with a Broker,
	// GOMAXPROCS − 1 (at least 1), leaving one P to the network; without
	// one, Writers.
	WritersAtOnce int
	// WriteCoalesce is how long a WebSocket that is sent frames faster
	// than it is written waits for more before its next write. A write
	// that carries 8 frames or more marks such a socket (the node is past
	// what it can write frame by frame): its next write waits up to this
	// long after its next frame, so that the node makes fewer, larger writes
	// and leaves CPU to its other work (publishing, reading the Broker,
	// answering pushes), and its client wakes less often. The wait ends
	// early once the node has queued nothing to any connection for 5ms
	// (the burst is over), and once a waiting socket holds 128 frames (a
	// write as large as it needs to be). A socket whose writes carry fewer
	// frames is written at once, and so is one whose queue is more than
	// half full (WSSendQueue). SSE streams and long polls are always
	// written at once. At most 1s. Default: 100ms.
	WriteCoalesce time.Duration
	// DisableWriteCoalesce writes every WebSocket as soon as a writer is
	// free, however many frames each write carries. Default: false.
	DisableWriteCoalesce bool
	// DisableHijack keeps every SSE stream on its handler goroutine instead of
	// taking HTTP/1.1 connections over (use it when a middleware must see the
	// response body). HTTP/2 streams always stay on their handler. Default: false.
	DisableHijack bool

	// PollTimeout is the default wait of a long poll. Default: 25s.
	PollTimeout time.Duration
	// PollMaxTimeout caps the timeout a long poll may ask for. Default: 60s.
	PollMaxTimeout time.Duration
	// MaxBodyBytes caps the body of the publish endpoint. Default: 1 MiB.
	MaxBodyBytes int64
	// BodyTimeout bounds the reading of a request body by the plugin's
	// endpoints that take one (POST events, POST notify): a body not
	// received in that time is answered 408 with the error code "timeout".
	// Default: 10s.
	BodyTimeout time.Duration
	// MaxConnsPerIP caps the open connections of one client IP across SSE
	// streams (record, collection, channel), long polls and WebSockets:
	// one more is refused with 429 too_many_connections (close 4429 on a
	// WebSocket). The IP is gin's Context.ClientIP, so it honours the
	// engine's trusted proxies. Default: 0, no cap.
	MaxConnsPerIP int
	// CORSAllowedOrigins are the origins (scheme://host[:port], or "*")
	// whose pages may call the publish endpoints (POST events, POST
	// notify, GET presence) from a browser: their preflight is answered
	// and their requests get CORS headers; a request from another origin
	// is refused with 403 and no CORS headers. Default: none (no CORS: a
	// cross-origin browser call fails its preflight).
	CORSAllowedOrigins []string

	// WSAllowedOrigins lists the Origin values (scheme://host[:port]) allowed
	// to open a WebSocket on GET {base}/ws; "*" allows any. A request without
	// an Origin header (a non-browser client) is always allowed. Default: nil,
	// only an Origin whose host equals the request's Host.
	WSAllowedOrigins []string
	// WSMaxConnsPerUser caps the push connections of one user of one
	// tenant: WebSockets, pushes streams and pushes polls together (a
	// WebSocket closes with 4429, see WSRefuseBeforeUpgrade; a stream or
	// poll answers 429). Default: 16.
	WSMaxConnsPerUser int
	// WSMaxConnsPerTenant caps the push connections of one tenant
	// (WebSockets, pushes streams and polls; 4429 or 429). Default: 10000.
	WSMaxConnsPerTenant int
	// WSRefuseBeforeUpgrade answers a WebSocket handshake refused for its
	// credentials or a connection cap with a plain 401, 403 or 429 before
	// the upgrade. Default: false, the upgrade is accepted, one error frame
	// ({"type":"error","code":…,"message":…}) is sent and the socket is
	// closed with 4401, 4403 or 4429, which a browser can read (it cannot
	// read the status of a refused handshake); nothing is subscribed or
	// registered on such a socket. A foreign Origin is always 403 before
	// the upgrade.
	WSRefuseBeforeUpgrade bool
	// WSMaxMessageBytes is the largest frame a client may send; a larger one
	// closes the connection with 1009. Default: 64 KiB.
	WSMaxMessageBytes int64
	// WSSendQueue bounds the frames waiting to be written to one WebSocket;
	// when it is full the connection is closed with 1013 (overflow policy:
	// disconnect, never drop silently). A queued frame costs 16 bytes (the
	// encoded event is shared by every subscriber), so the default holds
	// an unpaced burst of thousands of events to every socket without
	// closing it. Default: 4096.
	WSSendQueue int
	// WSPingInterval is the interval of WebSocket pings. Default: 25s.
	WSPingInterval time.Duration
	// WSPongWait is how long a WebSocket may stay silent (no pong, no frame)
	// before it is considered dead and removed; it must exceed
	// WSPingInterval. Default: 60s.
	WSPongWait time.Duration
	// WSMaxChannels caps the channel patterns one WebSocket may subscribe
	// to. Default: 100.
	WSMaxChannels int
	// WSMaxRecords caps the records one WebSocket may follow at once
	// (subscribe with records); beyond it the subscribe is refused with a
	// bad_request error frame. Default: 100.
	WSMaxRecords int
	// WSMessageRate is how many messages per second one WebSocket client
	// may send on average (a token bucket per connection, computed on each
	// message); a client over it is closed with 1008. Default: 50.
	WSMessageRate float64
	// WSMessageBurst is how many messages one WebSocket client may send at
	// once above WSMessageRate (the bucket's size). Default: 100.
	WSMessageBurst int

	// Logger receives the plugin's logs. Default: slog.Default().
	Logger *slog.Logger
}

// withDefaults returns a copy of c with every zero field set to its default,
// or an error wrapping ErrInvalidConfig.
func (c Config) withDefaults() (Config, error) {
	jwtKey := len(c.JWTSecret) > 0 || c.JWTKeyfunc != nil
	if !jwtKey && c.Identify == nil {
		return c, fmt.Errorf("%w: JWTSecret, JWTKeyfunc or Identify is required", ErrInvalidConfig)
	}
	if err := c.claimDefaults(); err != nil {
		return c, err
	}
	// With Identify and no key, no JWT is ever verified: no algorithm.
	if jwtKey && len(c.JWTAlgorithms) == 0 {
		if c.JWTKeyfunc != nil {
			return c, fmt.Errorf("%w: JWTAlgorithms must list the algorithms JWTKeyfunc serves", ErrInvalidConfig)
		}
		c.JWTAlgorithms = []string{"HS256"}
	}
	for _, a := range c.JWTAlgorithms {
		if a == "" || a == "none" || jwt.GetSigningMethod(a) == nil {
			return c, fmt.Errorf("%w: unknown or unsafe JWT algorithm %q", ErrInvalidConfig, a)
		}
		if _, hmac := jwt.GetSigningMethod(a).(*jwt.SigningMethodHMAC); c.JWTKeyfunc == nil && !hmac {
			// JWTSecret verifies HMAC only: every such token would be refused.
			return c, fmt.Errorf("%w: JWT algorithm %q needs JWTKeyfunc", ErrInvalidConfig, a)
		}
	}
	type dur struct {
		name string
		v    *time.Duration
		def  time.Duration
	}
	for _, d := range []dur{
		{"JWTLeeway", &c.JWTLeeway, 5 * time.Second},
		{"BufferMaxAge", &c.BufferMaxAge, time.Hour},
		{"Retry", &c.Retry, 2 * time.Second},
		{"ResumeWait", &c.ResumeWait, 3 * time.Second},
		{"Heartbeat", &c.Heartbeat, 30 * time.Second},
		{"WriteTimeout", &c.WriteTimeout, 10 * time.Second},
		{"WriteCoalesce", &c.WriteCoalesce, 100 * time.Millisecond},
		{"PollTimeout", &c.PollTimeout, 25 * time.Second},
		{"PollMaxTimeout", &c.PollMaxTimeout, 60 * time.Second},
		{"WSPingInterval", &c.WSPingInterval, 25 * time.Second},
		{"WSPongWait", &c.WSPongWait, 60 * time.Second},
		{"BodyTimeout", &c.BodyTimeout, 10 * time.Second},
	} {
		if *d.v < 0 {
			return c, fmt.Errorf("%w: %s is negative", ErrInvalidConfig, d.name)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.WriteCoalesce > maxWriteCoalesce {
		return c, fmt.Errorf("%w: WriteCoalesce exceeds %v", ErrInvalidConfig, maxWriteCoalesce)
	}
	if c.PollTimeout > c.PollMaxTimeout {
		return c, fmt.Errorf("%w: PollTimeout exceeds PollMaxTimeout", ErrInvalidConfig)
	}
	type num struct {
		name string
		v    *int
		def  int
	}
	for _, n := range []num{
		{"BufferSize", &c.BufferSize, 100},
		{"QueueSize", &c.QueueSize, 4096},
		{"Writers", &c.Writers, 4 * runtime.GOMAXPROCS(0)},
		{"WritersAtOnce", &c.WritersAtOnce, writersAtOnce(c.Broker != nil)},
		{"WSMaxConnsPerUser", &c.WSMaxConnsPerUser, 16},
		{"WSMaxConnsPerTenant", &c.WSMaxConnsPerTenant, 10000},
		{"WSSendQueue", &c.WSSendQueue, 4096},
		{"WSMaxChannels", &c.WSMaxChannels, 100},
		{"WSMaxRecords", &c.WSMaxRecords, 100},
		{"MaxConnsPerIP", &c.MaxConnsPerIP, 0},
		{"WSMessageBurst", &c.WSMessageBurst, 100},
	} {
		if *n.v < 0 {
			return c, fmt.Errorf("%w: %s is negative", ErrInvalidConfig, n.name)
		}
		if *n.v == 0 {
			*n.v = n.def
		}
	}
	if c.WritersAtOnce == 0 || c.WritersAtOnce > c.Writers {
		c.WritersAtOnce = c.Writers
	}
	if _, err := newOriginPolicy(c.CSRFTrustedOrigins); err != nil {
		return c, err
	}
	if c.ClientPublish && c.AuthorizeChannel == nil {
		return c, fmt.Errorf("%w: ClientPublish needs an AuthorizeChannel deciding ChannelOpPublish", ErrInvalidConfig)
	}
	if len(c.CORSAllowedOrigins) > 0 {
		if _, err := corsConfig(c.CORSAllowedOrigins); err != nil {
			return c, err
		}
	}
	if c.BufferMemory < 0 || c.MaxBodyBytes < 0 {
		return c, fmt.Errorf("%w: BufferMemory and MaxBodyBytes must not be negative", ErrInvalidConfig)
	}
	if c.WSPingInterval >= c.WSPongWait {
		return c, fmt.Errorf("%w: WSPingInterval must be shorter than WSPongWait", ErrInvalidConfig)
	}
	if c.WSMessageRate < 0 || math.IsNaN(c.WSMessageRate) || math.IsInf(c.WSMessageRate, 0) {
		return c, fmt.Errorf("%w: WSMessageRate must be a positive number", ErrInvalidConfig)
	}
	if c.WSMessageRate == 0 {
		c.WSMessageRate = 50
	}
	if c.WSMaxMessageBytes < 0 {
		return c, fmt.Errorf("%w: WSMaxMessageBytes is negative", ErrInvalidConfig)
	}
	if c.WSMaxMessageBytes == 0 {
		c.WSMaxMessageBytes = 64 << 10
	}
	for _, o := range c.WSAllowedOrigins {
		if o == "" {
			return c, fmt.Errorf("%w: empty entry in WSAllowedOrigins", ErrInvalidConfig)
		}
	}
	if c.BufferMemory == 0 {
		c.BufferMemory = 64 << 20
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.TokenCookie == "" {
		c.TokenCookie = "realtime_token"
	}
	if c.ETag == nil {
		c.ETag = DefaultETag
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Broker != nil {
		if c.Buffer != nil {
			return c, fmt.Errorf("%w: set Buffer or Broker, not both (a Broker is the buffer)", ErrInvalidConfig)
		}
		c.Buffer = c.Broker
	}
	if c.Buffer == nil {
		c.Buffer = NewMemoryBuffer(MemoryBufferConfig{
			Size: c.BufferSize, MaxAge: c.BufferMaxAge, MaxBytes: c.BufferMemory,
		})
	}
	return c, nil
}

// claimDefaults applies the defaults of the claim names and checks them.
func (c *Config) claimDefaults() error {
	if c.JWTUserClaim == "" {
		c.JWTUserClaim = "sub"
	}
	if c.JWTTenantClaim == "" {
		c.JWTTenantClaim = "tenant"
	}
	for _, n := range []struct{ field, claim string }{{"JWTUserClaim", c.JWTUserClaim}, {"JWTTenantClaim", c.JWTTenantClaim}} {
		if _, ok := parseClaimPath(n.claim); !ok {
			return fmt.Errorf("%w: %s is empty", ErrInvalidConfig, n.field)
		}
	}
	return nil
}

// writersAtOnce is the default of Config.WritersAtOnce: one P left to the
// network on a node of many (0: Writers, no limit).
func writersAtOnce(broker bool) int {
	if !broker {
		return 0
	}
	return max(1, runtime.GOMAXPROCS(0)-1)
}

// maxWriteCoalesce bounds Config.WriteCoalesce: the delay a busy
// connection's frames may get.
const maxWriteCoalesce = time.Second

// writeCoalesce is the writer pool's delay for busy connections (0: none).
func (c *Config) writeCoalesce() time.Duration {
	if c.DisableWriteCoalesce {
		return 0
	}
	return c.WriteCoalesce
}
