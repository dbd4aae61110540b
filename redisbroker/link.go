package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/redis/go-redis/v9"
)

// The Pub/Sub link. One goroutine (run) owns it: it opens a session (one
// *redis.PubSub, subscribed to every wanted channel), reads it, makes every
// Node call, and when the session ends (connection error, stall found by
// the probe, Stop) reports the outage and opens the next one. go-redis
// reconnects a PubSub by itself and silently; here any error ends the
// session instead, so that every reconnection is seen and followed by a
// catch-up of every watched stream.

const (
	kindStream = iota
	kindTopic
)

// chanState is a wanted channel: a watched stream or a listened topic.
type chanState struct {
	name  string
	kind  int
	key   realtime.StreamKey // kindStream
	topic string             // kindTopic
	count int                // Watch (Listen) calls not undone

	// epoch is the stream's epoch as the node knows it (watchedEpoch,
	// appendScript): every message and catch-up read carries the stream's
	// current one, and a different one means the stream was created again
	// (Redis restarted or flushed, its keys expired) and lost what the
	// node had not seen.
	// last is the id of the stream's last event handed to the node (or,
	// before any, the stream's last id when the watch began; "" for
	// none), in that epoch. lastKnown is false when they could not be
	// read (Redis was unreachable): the first event or reconnection then
	// reports a Gap.
	// top is the highest position handed to the node: a stream created
	// again may start below it (Redis's clock went back), and positions
	// handed to the node never go back.
	// Written by run only, once the state is in Broker.chans.
	epoch     string
	last      string
	lastKnown bool
	top       uint64
	// fresh is set until the first catch-up after the watch began: an
	// event missing from the stream then may have been appended after the
	// subscription took effect (its message is queued, not lost), so the
	// catch-up leaves it to the messages rather than report a Gap; an
	// event that was really missed shows in the next message's prev.
	fresh bool

	// confirmed is closed once the channel is subscribed on the current
	// session (isConfirmed); replaced when the session ends.
	confirmed   chan struct{}
	isConfirmed bool
}

// op is a subscription command whose confirmation is awaited.
type op struct {
	c     *chanState // nil: the probe channel
	sub   bool
	setup bool          // part of the session's initial subscriptions
	done  chan struct{} // if not nil, closed once confirmed
}

// session is one Pub/Sub connection and what is awaited on it.
type session struct {
	ps      *redis.PubSub
	n       int // number, the probes' payload
	started time.Time

	dead     chan struct{}
	drained  chan struct{} // closed once unsubscribed from all (Stop)
	killOnce sync.Once
	reason   error // why it ended; set before dead is closed

	// Under Broker.mu:
	pending      map[string][]op // confirmations awaited, in command order, by channel
	setupLeft    int
	subscribed   bool // the initial subscriptions are confirmed
	ready        bool // and the watched streams caught up
	probeSent    time.Time
	probing      bool
	lastProbeAt  time.Time
	probeStalled bool
}

func (s *session) kill(err error) {
	s.killOnce.Do(func() {
		s.reason = err
		close(s.dead)
		_ = s.ps.Close()
	})
}

func (s *session) isDead() bool {
	select {
	case <-s.dead:
		return true
	default:
		return false
	}
}

func (s *session) enqueue(name string, o op) {
	s.pending[name] = append(s.pending[name], o)
}

var (
	errStalled     = errors.New("pub/sub link stalled: probe not received in time")
	errSetupStall  = errors.New("pub/sub link stalled: subscriptions not confirmed in time")
	errNotStarted  = fmt.Errorf("%w: not started", ErrUnavailable)
	errLinkDown    = fmt.Errorf("%w: pub/sub link down", ErrUnavailable)
	errSubscribeKo = errors.New("subscription confirmations out of order")
)

// Start implements realtime.Broker: it starts the goroutine that owns the
// Pub/Sub link and the probe's. It does not wait for Redis: Watch and
// Listen wait for the first connection attempt, and Node.Health reports
// an unreachable Redis.
func (b *Broker) Start(n realtime.Node) error {
	if n == nil {
		return fmt.Errorf("%w: nil node", ErrInvalidConfig)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return ErrClosed
	}
	if b.started {
		return fmt.Errorf("%w: started twice", ErrInvalidConfig)
	}
	b.started = true
	b.node = n
	b.wg.Add(2)
	go b.run()
	go b.probeLoop()
	return nil
}

// Stop implements realtime.Broker: the goroutines end and Stop waits for
// them (or ctx). Once it returned nil, no call reaches the node. Append,
// Since, Invalidate, Publish and the presence methods keep working as
// long as the client is open.
func (b *Broker) Stop(ctx context.Context) error {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return b.wait(ctx)
	}
	b.stopped = true
	close(b.stop)
	b.cancel()
	s := b.sess
	b.mu.Unlock()
	if s != nil {
		b.drain(ctx, s)
		s.kill(ErrClosed)
	}
	return b.wait(ctx)
}

// drain unsubscribes s from every channel and waits for Redis to confirm
// it (or ctx, or ProbeTimeout), so that a Publish after Stop does not count
// this node.
func (b *Broker) drain(ctx context.Context, s *session) {
	if s.isDead() {
		return
	}
	b.cmdMu.Lock()
	err := s.ps.Unsubscribe(ctx)
	b.cmdMu.Unlock()
	if err != nil {
		return
	}
	t := time.NewTimer(b.cfg.ProbeTimeout)
	defer t.Stop()
	select {
	case <-s.drained:
	case <-s.dead:
	case <-ctx.Done():
	case <-t.C:
	}
}

func (b *Broker) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("redisbroker: stop: %w", ctx.Err())
	}
}

// run owns the link: sessions one after the other until Stop.
func (b *Broker) run() {
	defer b.wg.Done()
	delay := time.Duration(0)
	for {
		s, err := b.connect()
		if err == nil {
			err = b.serve(s)
		}
		wasReady := b.linkDown(s, err)
		if b.isStopped() {
			return
		}
		if wasReady {
			delay = 0
		} else {
			delay = min(max(2*delay, 50*time.Millisecond), 2*time.Second)
		}
		t := time.NewTimer(delay)
		select {
		case <-b.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (b *Broker) isStopped() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stopped
}

// connect opens a session subscribed to the probe channel and every wanted
// channel (their confirmations are awaited by serve).
func (b *Broker) connect() (*session, error) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.ProbeTimeout)
	defer cancel()
	s := &session{ps: b.client.Subscribe(ctx), started: time.Now(), dead: make(chan struct{}),
		drained: make(chan struct{}), pending: make(map[string][]op)}
	b.cmdMu.Lock()
	defer b.cmdMu.Unlock()
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		s.kill(ErrClosed)
		return s, ErrClosed
	}
	b.seq++
	s.n = b.seq
	names := []string{b.probe}
	s.enqueue(b.probe, op{sub: true, setup: true})
	for name, c := range b.chans {
		names = append(names, name)
		s.enqueue(name, op{c: c, sub: true, setup: true})
	}
	s.setupLeft = len(names)
	b.sess = s
	b.mu.Unlock()
	for len(names) > 0 {
		n := min(len(names), 1000)
		if err := s.ps.Subscribe(ctx, names[:n]...); err != nil {
			err = unavailable("subscribe", err)
			s.kill(err)
			return s, err
		}
		names = names[n:]
	}
	return s, nil
}

// linkDown ends s (nil: none) and reports the outage; it tells whether s
// had been ready.
func (b *Broker) linkDown(s *session, err error) bool {
	if s != nil {
		s.kill(err)
	}
	b.mu.Lock()
	wasReady := s != nil && s.ready
	if b.sess == s {
		b.sess = nil
	}
	for _, c := range b.chans {
		if c.isConfirmed {
			c.confirmed = make(chan struct{})
			c.isConfirmed = false
		}
	}
	b.tried = true
	close(b.linkCh)
	b.linkCh = make(chan struct{})
	report := b.healthy && !b.stopped
	if report {
		b.healthy = false
		b.counts.down(time.Now())
	}
	node := b.node
	b.mu.Unlock()
	if report {
		b.log.Warn("redisbroker: pub/sub link down", "err", err)
		node.Health(err)
	}
	return wasReady
}

// linkUp marks s ready and reports it.
func (b *Broker) linkUp(s *session) {
	b.mu.Lock()
	if s.isDead() || b.stopped {
		b.mu.Unlock()
		return
	}
	s.ready = true
	s.probeSent = time.Time{}
	b.tried = true
	close(b.linkCh)
	b.linkCh = make(chan struct{})
	report := !b.healthy
	b.healthy = true
	if report {
		b.counts.caughtUp(time.Now())
	}
	node := b.node
	b.mu.Unlock()
	if report {
		b.log.Info("redisbroker: pub/sub link up")
		node.Health(nil)
	}
}

// serve reads s until it ends.
func (b *Broker) serve(s *session) error {
	ctx := b.ctx
	for {
		msg, err := s.ps.Receive(ctx)
		if err != nil {
			s.kill(unavailable("receive", err))
			return s.reason
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "unsubscribe" && m.Count == 0 && b.isStopped() {
				close(s.drained) // Stop unsubscribed all: the session ends
				s.kill(ErrClosed)
				return s.reason
			}
			done, err := b.confirm(s, m)
			if err != nil {
				s.kill(err)
				return s.reason
			}
			if done {
				if err := b.resume(ctx, s); err != nil {
					s.kill(err)
					return s.reason
				}
				b.linkUp(s)
			}
		case *redis.Message:
			if err := b.handle(ctx, s, m); err != nil {
				s.kill(err)
				return s.reason
			}
		}
	}
}

// confirm matches a subscription confirmation with its command; it tells
// whether it was the last of the session's initial ones.
func (b *Broker) confirm(s *session, m *redis.Subscription) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := s.pending[m.Channel]
	if len(q) == 0 {
		return false, nil // not ours (an unsubscribe of nothing)
	}
	o := q[0]
	if len(q) == 1 {
		delete(s.pending, m.Channel)
	} else {
		s.pending[m.Channel] = q[1:]
	}
	isSub := m.Kind == "subscribe"
	if isSub != o.sub || (!isSub && m.Kind != "unsubscribe") {
		return false, errSubscribeKo
	}
	if o.done != nil {
		close(o.done)
	}
	if o.sub && o.c != nil && b.chans[o.c.name] == o.c && !o.c.isConfirmed {
		o.c.isConfirmed = true
		close(o.c.confirmed)
		if !o.setup {
			o.c.fresh = false // subscribed on a live session: no catch-up follows
		}
	}
	if o.setup {
		s.setupLeft--
		if s.setupLeft == 0 {
			s.subscribed = true
			return true, nil
		}
	}
	return false, nil
}

// streamsNow returns the watched streams.
func (b *Broker) streamsNow() []*chanState {
	b.mu.Lock()
	defer b.mu.Unlock()
	var cs []*chanState
	for _, c := range b.chans {
		if c.kind == kindStream {
			cs = append(cs, c)
		}
	}
	return cs
}

// toNode makes a node call about c (run only), unless c is no longer
// wanted: under dmu, so that once unwant returned no call about the
// channel reaches the node.
func (b *Broker) toNode(c *chanState, call func()) {
	b.dmu.Lock()
	defer b.dmu.Unlock()
	if b.wanted(c) {
		call()
	}
}

// wanted tells whether c is still watched.
func (b *Broker) wanted(c *chanState) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.chans[c.name] == c
}

// resume catches up every watched stream once a session is subscribed:
// what was appended while the link was down is delivered, or a Gap
// reported when it is no longer in the stream.
func (b *Broker) resume(ctx context.Context, s *session) error {
	cs := b.streamsNow()
	const batch = 128
	for len(cs) > 0 {
		n := min(len(cs), batch)
		part := cs[:n]
		cs = cs[n:]
		lasts := make([]string, n)
		epochs := make([]string, n)
		known := make([]bool, n)
		fresh := make([]bool, n)
		b.mu.Lock()
		for i, c := range part {
			lasts[i], epochs[i], known[i], fresh[i] = c.last, c.epoch, c.lastKnown, c.fresh
			c.fresh = false
		}
		b.mu.Unlock()
		run := func() ([]redis.Cmder, error) {
			return b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, c := range part {
					catchUpScript.EvalSha(ctx, p, catchUpKeys(c.name), catchUpArgs(b, lasts[i])...)
				}
				return nil
			})
		}
		cmds, err := run()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			if err = catchUpScript.Load(ctx, b.client).Err(); err == nil {
				cmds, err = run()
			}
		}
		if err != nil {
			return unavailable("catch up", err)
		}
		for i, c := range part {
			if !b.wanted(c) {
				continue
			}
			epoch, lastGen, ents, err := parseCatchUp(cmds[i].(*redis.Cmd).Val())
			if err != nil {
				b.log.Warn("redisbroker: unreadable entry", "err", err)
				ents = nil
			}
			if !known[i] || err != nil || epoch != epochs[i] {
				// Where the node was is unknown (the watch began while
				// Redis was unreachable), or the stream was created again
				// since (Redis restarted or was flushed, its keys expired):
				// resync from the stream's end.
				b.restart(c, epoch, lastGen)
				b.toNode(c, func() { b.node.Gap(c.key) })
				continue
			}
			if fresh[i] && !follows(ents, lasts[i]) {
				// A watch that began with this session: what the stream no
				// longer holds may still come as messages (see fresh).
				continue
			}
			if fresh[i] && len(ents) == 0 {
				continue // nothing after the watch's start, or all of it trimmed: the messages tell
			}
			if lost(lasts[i], lastGen) {
				// The stream no longer holds what the node saw although its
				// epoch is the same (its key alone was deleted or evicted):
				// whatever happened since is unknown.
				b.restart(c, epoch, lastGen)
				b.toNode(c, func() { b.node.Gap(c.key) })
				continue
			}
			b.apply(c, ents, lastGen, false)
		}
	}
	return nil
}

// follows reports whether ents (oldest first) continue from last: empty,
// or the first one's prev is last.
func follows(ents []entry, last string) bool {
	return len(ents) == 0 || ents[0].prev == last
}

// lost reports whether a stream whose last generated id is now lastGen
// ("" when it does not exist) has lost the event last the node saw: its
// ids never go back while it exists.
func lost(last, lastGen string) bool {
	if last == "" {
		return false
	}
	if lastGen == "" {
		return true
	}
	pl, _ := position(last)
	pg, _ := position(lastGen)
	return pg < pl
}

// maxID returns the larger of two entry ids.
func maxID(a, b string) string {
	pa, _ := position(a)
	pb, _ := position(b)
	if pb > pa {
		return b
	}
	return a
}

// after is the XRANGE start after id ("" for the whole stream).
func after(id string) string {
	if id == "" {
		return "-"
	}
	return "(" + id
}

// restart sets where c stands: at id of epoch (after a Gap).
func (b *Broker) restart(c *chanState, epoch, id string) {
	b.mu.Lock()
	c.epoch, c.last, c.lastKnown = epoch, id, true
	b.mu.Unlock()
}

// apply hands the entries (consecutive, oldest first, of c's epoch) after
// c's last to the node: a Gap first when the first one does not follow it.
// seen is an id known to exist ("" for none): if the entries do not reach
// it, the events up to it are gone, and a Gap is reported. One Gap covers
// every entry of the call (all were stored when it is reported); gapped
// tells that the caller reported one just before: no second one.
func (b *Broker) apply(c *chanState, ents []entry, seen string, gapped bool) {
	b.mu.Lock()
	last, top := c.last, c.top
	b.mu.Unlock()
	lastSeq, _ := position(last)
	gap := gapped
	reportGap := func() {
		if !gap {
			gap = true
			b.toNode(c, func() { b.node.Gap(c.key) })
		}
	}
	for _, e := range ents {
		if e.seq <= lastSeq {
			continue
		}
		if e.prev != last {
			reportGap()
		}
		last, lastSeq = e.id, e.seq
		if e.seq <= top {
			// A stream created again below the positions handed over
			// already: the node cannot take it, the Gap covers it.
			reportGap()
			continue
		}
		d, err := e.decode()
		if err != nil {
			b.log.Warn("redisbroker: unreadable entry", "err", err)
			reportGap()
			continue
		}
		top = e.seq
		b.toNode(c, func() { b.node.Deliver(c.key, d) })
	}
	if seen != "" {
		if seq, err := position(seen); err == nil && seq > lastSeq {
			reportGap()
			last = seen
		}
	}
	b.mu.Lock()
	c.last, c.top, c.lastKnown = last, top, true
	b.mu.Unlock()
}

// handle processes a message of s.
func (b *Broker) handle(ctx context.Context, s *session, m *redis.Message) error {
	if m.Channel == b.probe {
		if m.Payload == itoa(s.n) {
			b.mu.Lock()
			s.probeSent = time.Time{}
			b.mu.Unlock()
		}
		return nil
	}
	b.mu.Lock()
	c := b.chans[m.Channel]
	var epoch, last string
	var known bool
	if c != nil {
		epoch, last, known = c.epoch, c.last, c.lastKnown
	}
	b.mu.Unlock()
	if c == nil {
		return nil // no longer wanted
	}
	if c.kind == kindTopic {
		msg, err := topicMessage(m.Payload)
		if err != nil {
			b.log.Warn("redisbroker: unreadable message", "channel", m.Channel, "err", err)
			return nil
		}
		b.toNode(c, func() { b.node.Message(c.topic, msg) })
		return nil
	}
	msgEpoch, rest, ok0 := strings.Cut(m.Payload, "\n")
	id, rest, ok1 := strings.Cut(rest, "\n")
	prev, ev, ok2 := strings.Cut(rest, "\n")
	seq, err := position(id)
	if !ok0 || !ok1 || !ok2 || err != nil || msgEpoch == "" || id == "" {
		b.log.Warn("redisbroker: unreadable message", "channel", m.Channel)
		return nil
	}
	gapped := false
	if !known || msgEpoch != epoch {
		// The watch began while Redis was unreachable, or the stream was
		// created again since the node last saw it (Redis restarted or was
		// flushed, its keys expired): what came before is unknown.
		b.toNode(c, func() { b.node.Gap(c.key) })
		gapped = true
		epoch, last = msgEpoch, prev
		b.restart(c, epoch, prev)
	}
	lastSeq, _ := position(last)
	if seq <= lastSeq {
		return nil // seen already (a catch-up read it)
	}
	if prev == last {
		b.apply(c, []entry{{id: id, prev: prev, seq: seq, ev: ev}}, "", gapped)
		return nil
	}
	// Events were missed: read them back.
	nowEpoch, lastGen, ents, err := b.readAfter(ctx, c.name, last)
	if err != nil {
		return err
	}
	if nowEpoch != epoch {
		// Created again since this message was published: the events
		// after last are gone.
		b.restart(c, nowEpoch, lastGen)
		b.toNode(c, func() { b.node.Gap(c.key) })
		return nil
	}
	b.apply(c, ents, maxID(id, lastGen), gapped)
	return nil
}

// topicMessage is the Node's copy of a topic message: a push's message
// (Push) begins with its event's entry id, which becomes its position.
func topicMessage(payload string) ([]byte, error) {
	if payload == "" || payload[0] < '0' || payload[0] > '9' {
		return []byte(payload), nil
	}
	id, rest, ok := strings.Cut(payload, "\n")
	seq, err := position(id)
	if !ok || err != nil {
		return nil, fmt.Errorf("%w: a push without its position", ErrCorrupt)
	}
	msg := strconv.AppendUint(make([]byte, 0, 21+len(rest)), seq, 10)
	msg = append(msg, '\n')
	return append(msg, rest...), nil
}

// probeLoop publishes a probe on the broker's own channel every
// ProbeInterval and ends a session whose probe did not come back within
// ProbeTimeout (or whose subscriptions were not confirmed in time): a link
// that is open but no longer delivers.
func (b *Broker) probeLoop() {
	defer b.wg.Done()
	tick := time.NewTicker(max(min(b.cfg.ProbeInterval, b.cfg.ProbeTimeout)/4, 5*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
		}
		now := time.Now()
		b.mu.Lock()
		s := b.sess
		if s == nil || s.isDead() {
			b.mu.Unlock()
			continue
		}
		var stalled error
		switch {
		case !s.subscribed && now.Sub(s.started) > b.cfg.ProbeTimeout:
			stalled = errSetupStall
		case s.ready && !s.probeSent.IsZero() && now.Sub(s.probeSent) > b.cfg.ProbeTimeout:
			stalled = errStalled
		}
		send := stalled == nil && s.ready && !s.probing && now.Sub(s.lastProbeAt) >= b.cfg.ProbeInterval
		if send {
			s.probing = true
			s.lastProbeAt = now
			if s.probeSent.IsZero() {
				s.probeSent = now
			}
			b.wg.Add(1)
		}
		b.mu.Unlock()
		if stalled != nil {
			b.log.Warn("redisbroker: pub/sub link replaced", "err", stalled)
			s.kill(unavailable("probe", stalled))
			continue
		}
		if send {
			go b.sendProbe(s)
		}
	}
}

func (b *Broker) sendProbe(s *session) {
	defer b.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.ProbeTimeout)
	defer cancel()
	// An error leaves the probe unanswered: the timeout decides.
	_ = b.client.Publish(ctx, b.probe, itoa(s.n)).Err()
	b.mu.Lock()
	s.probing = false
	b.mu.Unlock()
}

// Watch implements realtime.Broker: it returns once the stream's channel
// is subscribed. The stream's last id is read first: the first event
// received is checked against it, so nothing appended after Watch returned
// is missed. When Redis is unreachable the watch is recorded, an error
// returned, and once the link is back the stream is subscribed and a Gap
// reported.
func (b *Broker) Watch(ctx context.Context, key realtime.StreamKey) error {
	return b.want(ctx, b.keys.stream(key), kindStream, key, "")
}

// Unwatch implements realtime.Broker.
func (b *Broker) Unwatch(ctx context.Context, key realtime.StreamKey) error {
	return b.unwant(ctx, b.keys.stream(key))
}

// Listen implements realtime.Broker (counted like Watch).
func (b *Broker) Listen(ctx context.Context, topic string) error {
	return b.want(ctx, b.keys.topic(topic), kindTopic, realtime.StreamKey{}, topic)
}

// Unlisten implements realtime.Broker.
func (b *Broker) Unlisten(ctx context.Context, topic string) error {
	return b.unwant(ctx, b.keys.topic(topic))
}

// Publish implements realtime.Broker. Every Broker has one Pub/Sub
// connection, so the receivers Redis counts are nodes.
func (b *Broker) Publish(ctx context.Context, topic string, msg []byte) (int, error) {
	n, err := b.client.Publish(ctx, b.keys.topic(topic), msg).Result()
	if err != nil {
		return 0, unavailable("publish", err)
	}
	return int(n), nil
}

// Push implements realtime.Pusher: with ev, the append script appends it
// and publishes msg on every topic, in one step; without, one pipeline
// publishes msg on every topic. Either is one round trip. A push whose
// script go-redis retried after a broken connection (it published in its
// first run) reports 0 nodes.
func (b *Broker) Push(ctx context.Context, key realtime.StreamKey, ev *realtime.Event, topics []string, msg []byte) (uint64, int, error) {
	channels := make([]string, len(topics))
	for i, t := range topics {
		channels[i] = b.keys.topic(t)
	}
	if ev != nil {
		seqs, _, nodes, err := b.appendRun(ctx, []realtime.StreamKey{key}, ev, randomID(), false, realtime.AppendInOrder,
			&pushArgs{msg: msg, channels: channels})
		if err != nil {
			return 0, 0, err
		}
		return seqs[0], nodes, nil
	}
	msgs := make([][]byte, len(channels))
	for i := range msgs {
		msgs[i] = msg
	}
	nodes, err := b.publishEach(ctx, channels, msgs)
	return 0, nodes, err
}

// PublishEach implements realtime.Pusher: one pipeline.
func (b *Broker) PublishEach(ctx context.Context, topics []string, msgs [][]byte) error {
	if len(topics) != len(msgs) {
		return fmt.Errorf("redisbroker: publish: %w: %d topics, %d messages", realtime.ErrBadRequest, len(topics), len(msgs))
	}
	channels := make([]string, len(topics))
	for i, t := range topics {
		channels[i] = b.keys.topic(t)
	}
	_, err := b.publishEach(ctx, channels, msgs)
	return err
}

// publishEach publishes msgs[i] on channels[i] in one pipeline and returns
// the receivers in all.
func (b *Broker) publishEach(ctx context.Context, channels []string, msgs [][]byte) (int, error) {
	switch len(channels) {
	case 0:
		return 0, nil
	case 1:
		n, err := b.client.Publish(ctx, channels[0], msgs[0]).Result()
		if err != nil {
			return 0, unavailable("publish", err)
		}
		return int(n), nil
	}
	cmds := make([]*redis.IntCmd, len(channels))
	_, err := b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range channels {
			cmds[i] = p.Publish(ctx, c, msgs[i])
		}
		return nil
	})
	if err != nil {
		return 0, unavailable("publish", err)
	}
	nodes := 0
	for _, c := range cmds {
		nodes += int(c.Val())
	}
	return nodes, nil
}

func (b *Broker) want(ctx context.Context, name string, kind int, key realtime.StreamKey, topic string) error {
	var base, baseEpoch string
	var baseErr error
	haveBase := kind != kindStream
	for {
		b.mu.Lock()
		if b.stopped {
			b.mu.Unlock()
			return ErrClosed
		}
		if !b.started {
			b.mu.Unlock()
			return errNotStarted
		}
		c := b.chans[name]
		b.mu.Unlock()
		if c == nil && !haveBase {
			baseEpoch, base, baseErr = b.watchBase(ctx, name)
			haveBase = true
		}

		b.cmdMu.Lock()
		b.mu.Lock()
		c = b.chans[name]
		if c == nil {
			if !haveBase { // unwatched and rewatched meanwhile: read again
				b.mu.Unlock()
				b.cmdMu.Unlock()
				continue
			}
			c = &chanState{name: name, kind: kind, key: key, topic: topic,
				epoch: baseEpoch, last: base, lastKnown: baseErr == nil, fresh: true, confirmed: make(chan struct{})}
			b.chans[name] = c
		}
		c.count++
		s := b.sess
		if c.count == 1 && s != nil && !s.isDead() {
			s.enqueue(name, op{c: c, sub: true})
			b.mu.Unlock()
			if err := s.ps.Subscribe(ctx, name); err != nil {
				s.kill(unavailable("subscribe", err))
			}
		} else {
			b.mu.Unlock()
		}
		b.cmdMu.Unlock()
		if err := b.awaitConfirmed(ctx, c); err != nil {
			return err
		}
		if baseErr != nil {
			// Subscribed, but where the stream was is unknown: the first
			// event reports a Gap.
			return baseErr
		}
		return nil
	}
}

// awaitConfirmed waits until c is subscribed on the current session.
func (b *Broker) awaitConfirmed(ctx context.Context, c *chanState) error {
	for {
		b.mu.Lock()
		if b.stopped {
			b.mu.Unlock()
			return ErrClosed
		}
		if c.isConfirmed {
			b.mu.Unlock()
			return nil
		}
		s, linkCh, conf, tried := b.sess, b.linkCh, c.confirmed, b.tried
		b.mu.Unlock()
		var dead chan struct{}
		if s != nil && !s.isDead() {
			dead = s.dead
		} else if tried {
			return errLinkDown
		}
		// else: the first attempt is under way; linkCh tells its end.
		select {
		case <-conf:
			return nil
		case <-dead:
			return errLinkDown
		case <-linkCh:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		case <-b.stop:
			return ErrClosed
		}
	}
}

func (b *Broker) unwant(ctx context.Context, name string) error {
	s, done := b.drop(ctx, name)
	if done != nil {
		// Wait for the confirmation: a Publish from then on does not
		// count this node.
		select {
		case <-done:
		case <-s.dead:
		case <-ctx.Done():
		}
	}
	// A node call about the channel under way ends first; none follows.
	b.dmu.Lock()
	b.dmu.Unlock() //nolint:staticcheck // a barrier
	return nil
}

// drop undoes one want of channel name; at zero it unsubscribes and
// returns the session and what its confirmation closes.
func (b *Broker) drop(ctx context.Context, name string) (*session, chan struct{}) {
	b.cmdMu.Lock()
	defer b.cmdMu.Unlock()
	b.mu.Lock()
	c := b.chans[name]
	if c == nil {
		b.mu.Unlock()
		return nil, nil
	}
	c.count--
	if c.count > 0 {
		b.mu.Unlock()
		return nil, nil
	}
	delete(b.chans, name)
	s := b.sess
	if s == nil || s.isDead() {
		b.mu.Unlock()
		return nil, nil // the next session does not subscribe it
	}
	done := make(chan struct{})
	s.enqueue(name, op{c: c, done: done})
	b.mu.Unlock()
	if err := s.ps.Unsubscribe(ctx, name); err != nil {
		s.kill(unavailable("unsubscribe", err))
		return nil, nil
	}
	return s, done
}
