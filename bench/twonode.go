package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Two nodes through one Redis: each two-node implementation (the *-redis
// specs) runs as two server processes of its single-node implementation,
// each with a Redis broker on the same Redis and the same key prefix, fresh
// for each run. The clients subscribe on node B; node A only publishes
// (its control endpoint's publish loop). A run is: a warm-up, the drained
// bursts and the latency run (the single-node phases' code, publishing on
// A), then the sequential publisher: up to cfg.seqCalls calls back to back
// for at most cfg.seqDur, each waiting for its answer (last: a peer whose
// publish does not wait may outrun its subscribers' queues).

// redisAdmin is the orchestrator's own client: it checks that Redis is
// there, reads its version for the report, and deletes each run's keys.
type redisAdmin struct {
	client  *redis.Client
	version string
	runs    atomic.Int64
}

// openRedis connects to cfg.redisURL when the run has two-node implementations.
func (o *orchestrator) openRedis() error {
	if _, double := o.splitImpls(); len(double) == 0 {
		return nil
	}
	opt, err := redis.ParseURL(o.cfg.redisURL)
	if err != nil {
		return fmt.Errorf("-redis: %w", err)
	}
	c := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return fmt.Errorf("redis at %s: %w", opt.Addr, err)
	}
	ra := &redisAdmin{client: c, version: "?"}
	if info, err := c.Info(ctx, "server").Result(); err == nil {
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "redis_version:"); ok {
				ra.version = v
			}
		}
	}
	o.redis = ra
	return nil
}

func (o *orchestrator) closeRedis() {
	if o.redis != nil {
		_ = o.redis.client.Close()
	}
}

// prefix is a key prefix no other run uses: the orchestrator's pid, the
// time and a counter ("bench:<pid>:<unix ms>:<n>:"). It has no '{' or '}'
// (redisbroker's hash tags) and ends with ':' (centrifuge adds ".…").
func (ra *redisAdmin) prefix() string {
	return fmt.Sprintf("bench:%d:%d:%d:", os.Getpid(), time.Now().UnixMilli(), ra.runs.Add(1))
}

// clean deletes the keys under prefix (the run's streams, presence, history).
func (ra *redisAdmin) clean(prefix string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := 0
	iter := ra.client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			if err := ra.client.Unlink(ctx, batch...).Err(); err != nil {
				return n, err
			}
			n += len(batch)
			batch = batch[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return n, err
	}
	if len(batch) > 0 {
		if err := ra.client.Unlink(ctx, batch...).Err(); err != nil {
			return n, err
		}
		n += len(batch)
	}
	return n, nil
}

// splitImpls returns the run's single-node and two-node implementations,
// in report order.
func (o *orchestrator) splitImpls() (single, double []string) {
	for _, name := range o.cfg.impls {
		if sp, _ := specOf(name); sp.twoNode() {
			double = append(double, name)
		} else {
			single = append(single, name)
		}
	}
	return single, double
}

// twoNode runs one two-node implementation: node B with cfg.subs
// subscribers, node A publishing.
func (o *orchestrator) twoNode(name string, r *repResult) error {
	prefix := o.redis.prefix()
	defer func() {
		if n, err := o.redis.clean(prefix); err != nil {
			o.logf("%s: deleting the keys under %s: %v", name, prefix, err)
		} else {
			o.vlogf("%s: deleted %d keys under %s", name, n, prefix)
		}
	}()
	flags := []string{"-redis", o.cfg.redisURL, "-prefix", prefix}
	b, err := o.startServer(name, flags...)
	if err != nil {
		return fmt.Errorf("node B: %w", err)
	}
	defer o.stop(b.child, "")
	a, err := o.startServer(name, flags...)
	if err != nil {
		return fmt.Errorf("node A: %w", err)
	}
	defer o.stop(a.child, "")
	g, err := o.startClients(b, o.cfg.subs)
	if err != nil {
		return err
	}
	defer o.stopClients(g)
	if err := b.waitSubscribers(int64(o.cfg.subs), 30*time.Second); err != nil {
		return err
	}
	var subs int64
	for _, k := range g.opened {
		subs += k
	}
	// The answers a push must give (the plugin's Notify; a peer's publish
	// answers no counts): every subscriber, and as many users (one each
	// when the spec gives each client its own token, else one).
	want := wantCounts{delivered: int(subs), users: 1}
	if sp, _ := specOf(name); sp.perConn {
		want.users = int(subs)
	}
	check := func(phase string, st stepResult) error {
		if st.closed > 0 || st.events < st.expected || st.wrong > 0 {
			return fmt.Errorf("%s: %d of %d delivered, %d subscribers closed, %d of %d answers wrong %s",
				phase, st.events, st.expected, st.closed, st.wrong, st.checked, st.firstWrong)
		}
		return nil
	}
	if o.cfg.warmup > 0 {
		st, _, err := o.stepOn(a, b, g, o.cfg.warmup, 200, o.cfg.stall, time.Minute, want)
		if err != nil {
			return err
		}
		if err := check("warm-up", st); err != nil {
			return err
		}
	}
	if r.drained, err = o.drainedBursts(a, b, g, want); err != nil {
		return err
	}
	o.vlogf("%s drained bursts: %s", name, r.drained)
	if err := check("drained bursts", r.drained); err != nil {
		return err
	}
	n := max(1, int(o.cfg.latRate*o.cfg.latDur.Seconds()))
	if r.lat, _, err = o.stepOn(a, b, g, n, o.cfg.latRate, o.cfg.stall, 2*time.Minute, want); err != nil {
		return err
	}
	o.vlogf("%s latency: %s", name, r.lat)
	if r.seq, _, err = o.stepOn(a, b, g, o.cfg.seqCalls, 0, o.cfg.stall, o.cfg.seqDur, want); err != nil {
		return err
	}
	o.vlogf("%s sequential: %s (%.0f calls/s)", name, r.seq, r.seq.callRate())
	return nil
}
