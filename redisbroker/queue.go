package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/redis/go-redis/v9"
)

// Target is what a Queue hands its requests to. *realtime.Plugin is one.
type Target interface {
	Publish(ctx context.Context, pub realtime.Publication) (string, error)
	Notify(ctx context.Context, n realtime.Notification) (realtime.NotifyResult, error)
}

var _ Target = (*realtime.Plugin)(nil)

// Queue consumes the publish requests other backends XADD to a Redis
// stream (QueueConfig.Stream) and hands them to a Target: one Queue per
// node, every node in one consumer group. See "The queue" in the package
// documentation for the request format and the delivery guarantees.
type Queue struct {
	client redis.UniversalClient
	target Target
	cfg    QueueConfig
	log    *slog.Logger

	mu      sync.Mutex
	started bool
	closed  bool

	stop chan struct{} // closed by Close: read no more
	done chan struct{} // closed when the loop has returned
	// work is the context of the requests under way and of the queue's
	// commands; cancelled when Close's context ends first.
	work       context.Context
	cancelWork context.CancelFunc

	counts queueCounts // Stats (stats.go)
}

// NewQueue returns a Queue on client handing requests to target, with cfg
// (zero fields take their defaults). It does not contact Redis: Start does.
// The app closes client itself, after Close.
func NewQueue(client redis.UniversalClient, target Target, cfg QueueConfig) (*Queue, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: nil redis client", ErrInvalidConfig)
	}
	if target == nil {
		return nil, fmt.Errorf("%w: nil target", ErrInvalidConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	work, cancel := context.WithCancel(context.Background())
	return &Queue{
		client: client, target: target, cfg: cfg, log: cfg.Logger,
		stop: make(chan struct{}), done: make(chan struct{}),
		work: work, cancelWork: cancel,
	}, nil
}

// Consumer is the name of this Queue in the consumer group.
func (q *Queue) Consumer() string { return q.cfg.Consumer }

// Start starts consuming in a goroutine of its own (creating the stream
// and the group if needed, retrying while Redis is unreachable). It returns
// ErrClosed when called twice or after Close.
func (q *Queue) Start() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.started || q.closed {
		return fmt.Errorf("%w: queue already started or closed", ErrClosed)
	}
	q.started = true
	go q.run()
	return nil
}

// Close stops reading, lets the requests under way finish and acknowledges
// them, and waits for all of it. When ctx ends first, the requests under
// way are cancelled (they stay pending: another node retries them after
// RetryAfter) and Close returns ctx's error; the goroutine then ends within
// Block. Close may be called more than once.
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.stop)
		if !q.started {
			close(q.done)
		}
	}
	q.mu.Unlock()
	select {
	case <-q.done:
		q.cancelWork()
		return nil
	case <-ctx.Done():
		q.cancelWork()
		return fmt.Errorf("redisbroker: queue close: %w", ctx.Err())
	}
}

func (q *Queue) stopping() bool {
	select {
	case <-q.stop:
		return true
	default:
		return false
	}
}

// run is the consumer loop: claim what has been pending too long, read new
// requests, process them, acknowledge them; back off on Redis errors.
func (q *Queue) run() {
	defer close(q.done)
	var (
		ready     bool // the group exists
		failing   bool // a Redis error was logged; not yet back
		backoff   time.Duration
		nextClaim time.Time // zero: now (what a dead node left pending)
	)
	claimEvery := min(max(q.cfg.RetryAfter/2, time.Millisecond), 5*time.Second)
	for !q.stopping() {
		var err error
		if !ready {
			if err = q.createGroup(); err == nil {
				ready = true
			}
		}
		if err == nil && !time.Now().Before(nextClaim) {
			var more bool
			if more, err = q.claim(); err == nil && !more {
				nextClaim = time.Now().Add(claimEvery)
			}
		}
		if err == nil && !q.stopping() {
			err = q.read()
		}
		if err == nil {
			if failing {
				q.log.Info("redisbroker: queue: Redis is back", "stream", q.cfg.Stream)
				failing = false
			}
			backoff = 0
			continue
		}
		if q.work.Err() != nil { // Close gave up waiting
			break
		}
		if isNoGroup(err) {
			ready = false // the stream (or group) was deleted: create it again
		}
		if !failing {
			q.log.Warn("redisbroker: queue: Redis error, retrying", "stream", q.cfg.Stream, "err", err)
			failing = true
		}
		backoff = min(max(2*backoff, 50*time.Millisecond), 2*time.Second)
		select {
		case <-q.stop:
		case <-time.After(backoff):
		}
	}
	q.leaveGroup()
}

// createGroup creates the stream and the group reading it from its start
// ("0"): requests XADDed before any node ever ran are processed too. An
// existing group keeps where it stands.
func (q *Queue) createGroup() error {
	err := q.client.XGroupCreateMkStream(q.work, q.cfg.Stream, q.cfg.Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return unavailable("queue: create group", err)
	}
	return nil
}

func isNoGroup(err error) bool { return strings.Contains(err.Error(), "NOGROUP") }

// leaveGroup removes this consumer from the group when it holds nothing
// pending (its name is random: it will not come back), so that XINFO
// CONSUMERS lists live nodes. With requests pending it stays: they are
// claimed by the others after RetryAfter.
func (q *Queue) leaveGroup() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(q.work), time.Second)
	defer cancel()
	p, err := q.client.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: q.cfg.Stream, Group: q.cfg.Group, Start: "-", End: "+", Count: 1, Consumer: q.cfg.Consumer,
	}).Result()
	if err == nil && len(p) == 0 {
		_ = q.client.XGroupDelConsumer(ctx, q.cfg.Stream, q.cfg.Group, q.cfg.Consumer).Err()
	}
}

// read reads and processes the next batch of new requests.
func (q *Queue) read() error {
	// The blocking read is not cancelled by Close (Block bounds it): what
	// it returns is this consumer's and is processed before the loop ends.
	res, err := q.client.XReadGroup(context.WithoutCancel(q.work), &redis.XReadGroupArgs{
		Group: q.cfg.Group, Consumer: q.cfg.Consumer, Streams: []string{q.cfg.Stream, ">"},
		Count: int64(q.cfg.Batch), Block: q.cfg.Block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return unavailable("queue: read", err)
	}
	var jobs []*job
	for _, s := range res {
		for _, m := range s.Messages {
			jobs = append(jobs, &job{msg: m, attempt: 1})
		}
	}
	return q.process(jobs)
}

// claim takes over up to Batch requests pending longer than RetryAfter (a
// failure, or a node that died with them) and processes them. It reports
// whether more may be waiting.
func (q *Queue) claim() (bool, error) {
	// XPENDING first: it gives each request's delivery count; XCLAIM with
	// the same minimum idle time then takes only those still idle (another
	// node may have been quicker) and counts one more delivery.
	pend, err := q.client.XPendingExt(q.work, &redis.XPendingExtArgs{
		Stream: q.cfg.Stream, Group: q.cfg.Group, Idle: q.cfg.RetryAfter,
		Start: "-", End: "+", Count: int64(q.cfg.Batch),
	}).Result()
	if err != nil {
		return false, unavailable("queue: pending", err)
	}
	if len(pend) == 0 {
		return false, nil
	}
	count := make(map[string]int64, len(pend))
	ids := make([]string, len(pend))
	for i, p := range pend {
		ids[i] = p.ID
		count[p.ID] = p.RetryCount
	}
	msgs, err := q.client.XClaim(q.work, &redis.XClaimArgs{
		Stream: q.cfg.Stream, Group: q.cfg.Group, Consumer: q.cfg.Consumer,
		MinIdle: q.cfg.RetryAfter, Messages: ids,
	}).Result()
	if err != nil {
		return false, unavailable("queue: claim", err)
	}
	jobs := make([]*job, 0, len(msgs))
	for _, m := range msgs {
		jobs = append(jobs, &job{msg: m, attempt: count[m.ID] + 1})
	}
	return len(pend) == q.cfg.Batch, q.process(jobs)
}

// outcome is what became of one request.
type outcome int

const (
	outPending outcome = iota // failed for a passing reason: retried after RetryAfter
	outDone                   // delivered: acknowledge
	outDead                   // dead-letter, then acknowledge
)

type job struct {
	msg     redis.XMessage
	attempt int64 // this delivery's number (1: first)
	req     request
	out     outcome
	reason  string // outDead: why
	err     error  // outPending: the failure
}

// process handles one batch: the requests of one lane one after the
// other, lanes concurrently (at most Concurrency at once); then the dead
// letters are written and everything done is acknowledged.
func (q *Queue) process(jobs []*job) error {
	if len(jobs) == 0 {
		return nil
	}
	var lanes [][]*job
	byLane := make(map[string]int)
	for _, j := range jobs {
		req, err := parseRequest(j.msg.Values, q.cfg.MaxRequestBytes)
		switch {
		case err != nil:
			j.out, j.reason = outDead, err.Error()
			continue
		case j.attempt > int64(q.cfg.MaxAttempts):
			// A delivery that never ended (its node died, or was closed
			// under way) too often: it may be what kills nodes.
			j.out, j.reason = outDead, fmt.Sprintf("delivered %d times without success", j.attempt-1)
			continue
		}
		j.req = req
		if req.lane == "" {
			lanes = append(lanes, []*job{j})
			continue
		}
		if i, ok := byLane[req.lane]; ok {
			lanes[i] = append(lanes[i], j)
			continue
		}
		byLane[req.lane] = len(lanes)
		lanes = append(lanes, []*job{j})
	}
	if len(lanes) > 0 {
		stopBeat := q.heartbeat(jobs)
		next := make(chan []*job)
		var wg sync.WaitGroup
		for range min(q.cfg.Concurrency, len(lanes)) {
			wg.Go(func() {
				for lane := range next {
					for _, j := range lane {
						q.deliver(j)
					}
				}
			})
		}
		for _, l := range lanes {
			next <- l
		}
		close(next)
		wg.Wait()
		stopBeat()
	}
	return q.finish(jobs)
}

// deliver hands one request to the target and records the outcome.
func (q *Queue) deliver(j *job) {
	ctx, cancel := context.WithTimeout(q.work, q.cfg.RetryAfter)
	defer cancel()
	var err error
	if j.req.pub != nil {
		_, err = q.target.Publish(ctx, *j.req.pub)
	} else {
		_, err = q.target.Notify(ctx, *j.req.note)
	}
	switch {
	case err == nil:
		j.out = outDone
	case errors.Is(err, realtime.ErrBadRequest), errors.Is(err, realtime.ErrTooLarge):
		j.out, j.reason = outDead, err.Error()
	case q.work.Err() != nil:
		j.out, j.err = outPending, err // Close gave up: not the request's fault
	case j.attempt >= int64(q.cfg.MaxAttempts):
		j.out, j.reason = outDead, fmt.Sprintf("failed %d times, last: %v", j.attempt, err)
	default:
		j.out, j.err = outPending, err
	}
}

// heartbeat keeps the batch's requests this consumer's while they are
// processed (XCLAIM JUSTID resets their idle time, not their delivery
// count), so that a slow batch is not claimed by another node meanwhile.
// The returned func stops it.
func (q *Queue) heartbeat(jobs []*job) func() {
	every := q.cfg.RetryAfter / 3
	if every <= 0 {
		return func() {}
	}
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.msg.ID
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				_ = q.client.XClaimJustID(q.work, &redis.XClaimArgs{
					Stream: q.cfg.Stream, Group: q.cfg.Group, Consumer: q.cfg.Consumer, Messages: ids,
				}).Err()
			}
		}
	})
	return func() { close(stop); wg.Wait() }
}

// finish writes the batch's dead letters, then acknowledges (XACK) and
// deletes (XDEL) every request delivered or dead-lettered: the stream only
// holds requests not yet processed. A request whose dead letter could not
// be written stays pending.
func (q *Queue) finish(jobs []*job) error {
	ctx := context.WithoutCancel(q.work) // what was done is acknowledged even when Close gave up
	var (
		done    []string
		dead    []*job
		retried int
		lastErr error
	)
	for _, j := range jobs {
		switch j.out {
		case outDone:
			done = append(done, j.msg.ID)
		case outDead:
			dead = append(dead, j)
		default:
			retried++
			lastErr = j.err
		}
	}
	q.counts.consumed.Add(uint64(len(done)))
	q.counts.retried.Add(uint64(retried))
	if retried > 0 {
		q.log.Warn("redisbroker: queue: requests failed, retrying after RetryAfter",
			"stream", q.cfg.Stream, "failed", retried, "err", lastErr)
	}
	var firstErr error
	if len(dead) > 0 {
		cmds, _ := q.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, j := range dead {
				p.XAdd(ctx, &redis.XAddArgs{
					Stream: q.cfg.DeadLetter, MaxLen: q.cfg.DeadLetterMaxLen, Approx: true,
					Values: deadLetter(j),
				})
			}
			return nil
		})
		for i, j := range dead {
			if err := cmds[i].Err(); err != nil {
				firstErr = firstOf(firstErr, unavailable("queue: dead letter", err))
				continue
			}
			q.counts.deadLettered.Add(1)
			q.log.Warn("redisbroker: queue: request dead-lettered", "stream", q.cfg.Stream,
				"entry", j.msg.ID, "attempts", j.attempt, "reason", j.reason)
			done = append(done, j.msg.ID)
		}
	}
	if len(done) == 0 {
		return firstErr
	}
	_, err := q.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.XAck(ctx, q.cfg.Stream, q.cfg.Group, done...)
		p.XDel(ctx, q.cfg.Stream, done...)
		return nil
	})
	if err != nil {
		firstErr = firstOf(firstErr, unavailable("queue: ack", err))
	}
	return firstErr
}

func firstOf(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// deadLetter is the dead-letter entry of j: the original fields (sorted by
// name), then reason, attempts (deliveries so far) and entry (the id the
// request had in the queue stream). A field of the original of one of
// these three names is replaced.
func deadLetter(j *job) []any {
	names := make([]string, 0, len(j.msg.Values))
	for k := range j.msg.Values {
		switch k {
		case "reason", "attempts", "entry":
		default:
			names = append(names, k)
		}
	}
	sort.Strings(names)
	vals := make([]any, 0, 2*len(names)+6)
	for _, k := range names {
		vals = append(vals, k, j.msg.Values[k])
	}
	return append(vals, "reason", j.reason, "attempts", strconv.FormatInt(j.attempt, 10), "entry", j.msg.ID)
}
