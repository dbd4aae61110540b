// Package realtime is a gin plugin that makes an app's records live.
//
// Writes become record events (snapshot, changed, deleted) keyed by the
// record's ETag, the same string the app's REST handlers send in their ETag
// header. Browsers follow a record with a plain EventSource on
// GET {base}/:collection/:id/subscribe and resume after any disconnect from
// Last-Event-ID: they get every event they missed, or a resync frame and the
// fresh record when their place fell out of the buffer. Never a silent gap.
//
// # Concurrency contract
//
//   - Publishing never waits for a subscriber. Publish appends the event to
//     the record's and the collection's buffers and hands it to each
//     subscriber's queue under a per-stream lock, so every subscriber of a
//     stream sees its events in publish order, without duplicates.
//   - Every subscriber queue is bounded (Config.QueueSize). When it is full
//     the subscriber is disconnected (overflow policy: disconnect, never
//     drop); its client reconnects and resumes from its Last-Event-ID.
//   - Each event is encoded once; every subscriber's connection is written
//     the same bytes. HTTP/1.1 streams are taken over from net/http and
//     written by a fixed pool of Config.Writers goroutines that coalesce all
//     frames queued for a connection into one write; each such connection
//     has one goroutine of its own, a reader that notices the client
//     leaving. HTTP/2 streams (and all streams with DisableHijack) are
//     written by their handler goroutine.
//   - A peer that stops reading makes writes to it block once its kernel
//     buffers are full (until WriteTimeout cuts it). So that such peers never
//     hold up the others, a supervisor goroutine of the pool checks the
//     workers every 50 ms and, while jobs wait and no worker is idle,
//     starts an extra worker for each one stuck on its job for over 100 ms
//     (at most 1,024 extra); an extra worker retires once it finds nothing
//     to do while Config.Writers others can write.
//   - One ticker sends every stream its heartbeat; there is no timer per
//     connection.
//   - The Authorizer and RecordLoader are called from handler goroutines and,
//     for the per-frame check, from the writer goroutines: they must be safe
//     for concurrent use and should not block.
//   - WebSockets run on olahol/melody for the upgrade and the read loop
//     only: each connection has its handler goroutine (the read loop) and
//     melody's write goroutine. The read loop only queues the client's
//     frames to a bounded inbox (32 frames; when full the read loop waits:
//     nothing is dropped) handled in order by a goroutine started when the
//     inbox gets its first frame and ending when it is empty, so an idle
//     connection's read loop keeps the small stack of a blocked read;
//     melody's write goroutine
//     which never writes (a one-slot channel nothing is sent to, a ping
//     ticker that never fires) and ends with the socket. Connections are
//     indexed by id, by (tenant, user) and by channel pattern per tenant
//     under one RWMutex; a push reads the indexes under the read lock
//     (channel matches are serialised per tenant), encodes its envelope
//     once and queues the same bytes to every target without blocking.
//     Each connection has its own send queue, allocated when a frame is
//     queued (an idle connection holds none) and bounded
//     (Config.WSSendQueue); when it is full the connection is closed with
//     1013 (overflow policy: disconnect, never drop silently). A connection
//     with frames queued is scheduled, at most once, on the shared writer
//     pool (the one of the SSE streams): the worker holding it is its only
//     writer and writes its frames in queue order, one text frame each,
//     with a write deadline renewed at half-time. Pings come from one
//     ticker for all connections (Config.WSPingInterval), written by the
//     pool too; a peer silent for Config.WSPongWait is removed by its read
//     deadline. Close frames are written with gorilla's WriteControl (safe
//     alongside the worker's writes) ahead of the queued frames, by a
//     short-lived goroutine counted by the plugin, since a close is often
//     decided on a publisher's goroutine. Token expiry is checked by the
//     heartbeat ticker (no timer per connection) and closes with 1008.
//   - A record followed over a WebSocket (subscribe with records) is one
//     subscriber per (connection, record), attached to the hub like an SSE
//     subscriber: same buffer, same first frames (snapshot, replay, resync),
//     same hand-over without loss or duplicate, same bounded queue
//     (Config.QueueSize; overflow closes the connection with 1013). Its
//     frames are encoded once per event (Event.WSFrame) and written by the
//     shared writer pool, which checks the Authorizer before each frame and
//     queues the frame to the connection's bounded send queue without
//     blocking (Notify pushes and the connection's answers share that
//     queue, so a connection's frames leave in the order they were queued);
//     the publisher only schedules the subscriber. A subscriber
//     sits with at most one writer at a time, so each record's frames keep
//     the publish order (frames of different records may interleave). A
//     record the connection may no longer see ends that subscription only
//     (an error frame), not the connection. The subscribe and unsubscribe
//     messages run on the connection's inbox goroutine (which calls the
//     RecordLoader and Authorizer for the first frames); its subscribed
//     answer is queued before the first frames. When such a record may have
//     missed events (a bulk Resync, a gap in the broker's delivery), a
//     short-lived goroutine, counted by Close through the new subscriber,
//     replaces its subscriber with one resumed from nowhere (resync, then
//     the stored record: the Loader runs there). Unsubscribe, the end of the
//     connection and Close detach and untrack every such subscriber exactly
//     once (whoever removes it from the connection's record set).
//   - A push with a channel is appended to the channel's buffer (the
//     records' Buffer, stream key {tenant, "\x00channel", channel}) on the
//     caller's goroutine before it is handed to any target (with a Broker,
//     before it is published to the other nodes); its position travels
//     with it. A WebSocket subscribe with since runs on the connection's
//     inbox goroutine: it marks the channels as holding (a per-connection
//     list, under the connection's own lock, which pushes to that channel
//     then take), subscribes them, reads the buffer, queues the subscribed
//     answer, the replay and the held pushes, then stops holding; a push
//     at or below the newest position the replay read is dropped, so a
//     Notify racing the subscribe is delivered once. A connection without
//     such channels takes no extra lock (an atomic flag). The hold is
//     bounded by Config.WSSendQueue (overflow closes with 1013).
//   - An SSE channel stream (GET …/channels/subscribe) is a subscriber
//     like a record stream (same writer pool or handler goroutine, same
//     heartbeats, bounded queue with disconnect on overflow, Close) that
//     is also registered in the WebSocket registry as a push target of
//     its (tenant, user) with its patterns: Notify reaches it through the
//     same indexes, with the same cost, without presence, slot or acks.
//     It holds from the start, so its Last-Event-ID replay and the pushes
//     racing it are handed over by position as for records.
//   - Config.AuthorizeChannel is called on the WebSocket inbox goroutine
//     and on handler goroutines, once per channel or pattern at subscribe
//     or history time, never per push.
//   - Notify with AwaitAcks blocks its caller (never a connection) until the
//     acks arrive, AwaitAcks passes, its context ends or the plugin closes.
//   - With a Broker (many nodes), Publish hands the event to the broker and
//     returns; the broker's delivery goroutine brings it back (Node.Deliver)
//     and the plugin hands it to the local subscribers' queues as above,
//     without blocking. Broker calls that must not run on a caller's
//     goroutine (delivery counts, forwarded acks, unwatch, unlisten,
//     presence) go through one bounded queue (4,096) run in order by one
//     goroutine; when it is full the call runs on a goroutine of its own
//     (nothing is dropped, no caller waits; Close waits for them). Subscribing calls Broker.Watch and opening a WebSocket
//     calls Broker.Listen on the subscriber's goroutine, before the first
//     frames or the connected frame. Notify waits up to 2 s for the other
//     nodes' delivery counts. Presence is renewed by a ticker of the
//     heartbeat goroutine every 10 s.
//   - The plugin stops what it starts: Close ends every stream cleanly (a
//     final empty chunk), ends every long poll, closes every WebSocket with
//     1001, and waits for every goroutine before it returns (melody's write
//     goroutine ends as its socket closes, right after the handler
//     goroutine Close waits for; then the broker's queue drains and the
//     broker stops; the writer pool, shared with the streams, stops last).
package realtime
