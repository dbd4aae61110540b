// Package realtime is a gin plugin that makes an app's records live.
//
// Writes become record events (snapshot, changed, deleted) keyed by the
// record's ETag, the same string the app's REST handlers send in their ETag
// header. Browsers follow a record with a plain EventSource and resume
// after any disconnect from Last-Event-ID: they get every event they
// missed, or a resync frame and the fresh record. Never a duplicate, never
// out of order, never a silent gap. One WebSocket carries the same record
// streams and pushes to users and channels, with filters, acknowledgements
// and presence; where WebSockets cannot pass, the same pushes come over an
// SSE stream or a long poll. One node runs alone; many share a Redis
// (package redisbroker) and behave as one.
//
// # Concurrency contract
//
// Every Plugin method is safe for concurrent use. Publish and Notify never
// wait for a subscriber: each frame is queued to its connection's bounded
// queue, and a connection whose queue is full is disconnected (an SSE
// stream ends, a WebSocket closes with 1013), never slowed down for the
// others and never silently dropped from; its client reconnects and
// resumes. Notify waits only for the nodes' delivery counts (bounded), and
// with AwaitAcks for the acks. The app's callbacks (RecordLoader,
// Authorizer, ChannelAuthorizer) run concurrently, on handler and writer
// goroutines: they must be safe for concurrent use and must not block for
// long (the Authorizer runs before each frame). Close ends every stream and
// socket cleanly and waits for every goroutine the plugin started.
//
// # Quick start
//
//	rt, err := realtime.New(realtime.Config{
//		JWTSecret: []byte(os.Getenv("JWT_SECRET")),
//		Loader:    loadRecord, // snapshots and resync: func(ctx, realtime.Ref) (any, error)
//		Authorize: mayRead,    // per subscriber, and before each frame
//	})
//	if err != nil { … }
//	defer rt.Close(context.Background())
//
//	api := router.Group("/api/v1", rt.Authenticate())
//	api.GET("/posts/:id", getPost)      // the app's own routes …
//	rt.RegisterCollection(api, "posts") // … and the live ones next to them
//
//	db.Use(gormhook.New(rt, gormhook.Watch(&Post{}, "posts"))) // writes become events after commit
//
// In the REST handlers, send the plugin's ETag (Plugin.ETag) so that HTTP
// caching and stream resume points agree. Without the GORM hook, publish
// yourself after each commit with Publish (or Snapshot, Changed, Deleted).
//
// # Routes
//
// Register (every collection) or RegisterCollection (named collections,
// next to the app's own routes: gin's router does not backtrack) mounts:
//
//	GET  {base}/:collection/:id/subscribe  a record's events (SSE; Last-Event-ID resumes)
//	GET  {base}/:collection/subscribe      a collection's events (SSE)
//	GET  {base}/:collection/:id/poll       the same as a long poll (JSON)
//	POST {base}/:collection/:id/events     publish from another backend (publish scope)
//	GET  {base}/ws                         WebSocket: records, pushes, channels, acks
//	POST {base}/notify                     push to users or a channel (publish scope)
//	GET  {base}/presence[/:user]           who is connected (publish scope)
//	GET  {base}/channels/subscribe         channel pushes as SSE
//	GET  {base}/channels/:channel/history  a channel's recent pushes
//	GET  {base}/pushes/subscribe           the caller's pushes as SSE (no WebSocket needed)
//	GET  {base}/pushes/poll                the same as a long poll (JSON)
//	POST {base}/acks                       ack a push received over HTTP
//
// The wire format of each is the team's PROTOCOL.md; Authenticate is the
// middleware that verifies the same credentials for the app's routes.
//
// # Identity and cross-site requests
//
// A caller is identified by a JWT (the Authorization header, the cookie
// Config.TokenCookie or the token query parameter; its user and tenant
// claims named by Config.JWTUserClaim and Config.JWTTenantClaim, every
// claim kept in Identity.Claims) or by the app's own means
// (Config.Identify: its session cookie, its middleware's result). Every
// identity obeys the same rules: no wildcard, white space or control
// character in its user or tenant (401), so that "user.<User>" is always
// one concrete channel; PrivateUserChannels builds the channel rule of
// such private channels. Authenticate is the same identification for the
// app's routes.
//
// A request that changes state (any method but GET, HEAD, OPTIONS) and is
// authenticated by a credential the browser attaches by itself (the
// cookie, or Identify unless Config.IdentifyByHeader) must come from the
// request's own host or an origin of Config.CSRFTrustedOrigins, else 403:
// on the plugin's routes always, in Authenticate unless
// Config.DisableAuthenticateCSRF (csrf.go states the rule). A WebSocket
// handshake refused for its credentials or a connection cap is upgraded
// and closed with 4401, 4403 or 4429 after one error frame, so a browser
// can tell it from an outage (Config.WSRefuseBeforeUpgrade: plain HTTP).
//
// # Inputs, limits and expiry
//
// Every JSON object the plugin reads (request bodies, WebSocket messages,
// queued requests) is decoded strictly: an unknown field or a wrong type is
// refused with ErrBadRequest (400, or a bad_request error frame) naming the
// field, and nothing is published. A WebSocket client is rate-limited
// (Config.WSMessageRate, WSMessageBurst: a token bucket per connection;
// over it the socket closes with 1008), its frames are size-limited (1009)
// and must be UTF-8 (1007). No frame is written on any stream or socket
// after its token's exp + JWTLeeway (the writer compares before each
// write), and each is closed within a second of it (one deadline-ordered
// heap for every connection); a WebSocket client extends its connection
// with a refresh message carrying a fresh token of the same identity.
// Browsers publish to channels over their WebSocket only where the app
// enables it (Config.ClientPublish with AuthorizeChannel's
// ChannelOpPublish).
//
// # Order and resync
//
// Per record, every subscriber gets its events in publish order, without
// duplicates, and never misses one without a resync frame first. Events
// carry the record's version when the publisher knows it
// (Publication.Version, Versioner; the GORM hook assigns versions in the
// write's transaction): the broker drops a duplicate or older version,
// refuses one published before the version it follows (ErrOutOfOrder),
// and with Publication.RequireLast one whose record's last version it has
// forgotten (ErrLastUnknown: its predecessor may still be waiting to be
// published); a subscriber that would see a version skipped resumes from
// the last one it got, as a reconnecting client would (the events it
// missed from the buffer, or resync and the stored record), in place: on
// the same SSE stream or WebSocket (a long poll answers, and its next poll
// resumes). A RecordLoader
// that returns a VersionedRecord keeps subscribers from ever going back
// behind a snapshot.
//
// # Scaling
//
// Without Config.Broker the plugin is a single node, running on an
// in-process engine of its own (MemoryBroker). With a Broker (package
// redisbroker: one Redis shared by every instance) each instance is a node:
// a publish on any node reaches subscribers on every node, a client resumes
// on any node, pushes, presence and acks span them. Both take the same
// path: a publish goes to the broker, which orders it and brings it back to
// every node watching its streams. While the engine is unreachable,
// publishing fails with ErrUnavailable (503), and subscribers that may have
// missed events are resumed or resynced once it is back (a record's
// subscription, SSE or WebSocket, whose stored version is ahead of it
// while the missed versions are not buffered yet first waits up to
// Config.ResumeWait for them to be published: an outbox publishes them
// once the engine is back; so does a client reconnecting from a version
// no longer buffered whose next version a PendingEvents source, the GORM
// hook, has in its outbox). The GORM hook's outbox keeps the events of writes committed meanwhile and publishes them,
// in order, once it is back: a version whose record's last the engine has
// forgotten (Redis restarted empty) waits for its predecessors still in the
// outbox (Publication.RequireLast). A push costs its publisher one round
// trip to a Broker that is a Pusher; every node answers with counts: the
// connections it queued the push to, or, when each of its targets is sure
// to take it (open, no queue half full, no acks awaited), those it is
// about to queue it to, answered before the queueing. So
// that a busy node reads its engine at once, at most Config.WritersAtOnce
// writers write at one time (with a Broker, one P is left to the network).
// A WebSocket sent frames faster than it is written (8 or more in a write)
// waits up to Config.WriteCoalesce for more before its next write, until
// the node's fan-outs pause for 5ms, or until a waiting socket holds 128
// frames: a saturated node makes fewer, larger writes; one that keeps up
// writes each frame at once.
//
// # Observability
//
// Stats returns the plugin's counters and gauges (connections by
// transport and tenant, deliveries and their latency, resyncs and
// disconnects by reason, authentication failures, acks, the broker's
// state, the buffer, the writers), cheap enough to call on every scrape;
// components outside it (redisbroker.Queue, gormhook.Hook) report through
// AddStatsSource. Counting costs no lock and no allocation per delivered
// frame. Package realtimeprom exposes Stats to Prometheus. Logs go to
// Config.Logger: Debug for each connection's open and close, Warn for slow
// subscribers disconnected and broker gaps.
//
// # Types
//
// Config configures a Plugin; Publication and Notification are what it
// publishes; Identity is a verified caller; Buffer (MemoryBuffer) keeps the
// recent events resumes are served from; Broker and Node connect the
// nodes (MemoryBroker in process, redisbroker.Broker on Redis); errors wrap
// the sentinels of errors.go (ErrUnauthorized, ErrForbidden, ErrNotFound,
// ErrBadRequest, ErrUnavailable, ErrTooManyConnections, ErrTimeout, …).
package realtime
