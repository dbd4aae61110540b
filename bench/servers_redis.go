package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/centrifugal/centrifuge"
	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/redisbroker"
	"github.com/redis/go-redis/v9"
)

// redisConf is the broker of a two-node implementation: the Redis both
// nodes share and the key prefix of this run (fresh per run: no run sees
// another's keys).
type redisConf struct {
	url    string
	prefix string
}

// newTwoNodeImpl returns one node of a two-node implementation: the
// single-node implementation base with a Redis broker, everything else as
// on one node. Both nodes of a run are the same; the orchestrator connects
// the subscribers to one (B) and publishes on the other (A).
func newTwoNodeImpl(base string, rc redisConf) (impl, error) {
	if rc.url == "" || rc.prefix == "" {
		return nil, errors.New("a two-node implementation needs -redis and -prefix")
	}
	switch base {
	case "realtime-ws", "realtime-sse":
		return newRealtimeRedis(base == "realtime-ws", rc)
	case "centrifuge-ws", "centrifuge-sse":
		return newCentrifuge(base == "centrifuge-ws", &rc)
	}
	return nil, fmt.Errorf("no two-node variant of %q", base)
}

// newRealtimeRedis is the plugin with redisbroker: a go-redis client from
// the URL with its defaults and redisbroker.New(client, Config{Prefix})
// with every other field at its default, as redisbroker's doc shows.
func newRealtimeRedis(ws bool, rc redisConf) (*realtimeImpl, error) {
	opt, err := redis.ParseURL(rc.url)
	if err != nil {
		return nil, fmt.Errorf("-redis: %w", err)
	}
	client := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis at %s: %w", opt.Addr, err)
	}
	br, err := redisbroker.New(client, redisbroker.Config{Prefix: rc.prefix, Logger: discard})
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	cfg := realtime.Config{Broker: br}
	if ws {
		cfg = wsCaps(cfg)
	}
	r, err := newRealtime(cfg, ws, ws)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	r.perUser = ws
	r.closers = append(r.closers, func() { _ = client.Close() })
	r.broker = "redisbroker.New(redis.NewClient(redis.ParseURL(url)), redisbroker.Config{Prefix: fresh per run, Logger: discard}) " +
		"(go-redis v9 client at its defaults: PoolSize 10×GOMAXPROCS, no pipelining; broker defaults: Size 100 events per stream, MaxAge 1h, " +
		"StreamTTL 24h, ProbeInterval 2s, ProbeTimeout 3s; it is also the buffer and the presence store)"
	if ws {
		r.broker += "; a push is rt.Notify, which appends it to the channel's buffer (one script), publishes it on the tenant's topic " +
			"and returns once every node answered its delivery counts (PROTOCOL §7)"
	} else {
		r.broker += "; a publish is rt.Publish: one script appends to the record's and the collection's streams and publishes; it does not wait for the nodes"
	}
	return r, nil
}

// useRedis gives the node a Redis broker and presence manager on one shard,
// as centrifuge's documentation sets them up (NewRedisShard, NewRedisBroker,
// node.SetBroker; NewRedisPresenceManager, node.SetPresenceManager), with
// the run's prefix and every other option at its default.
func (c *centrifugeImpl) useRedis(rc redisConf) error {
	shard, err := centrifuge.NewRedisShard(c.node, centrifuge.RedisShardConfig{Address: rc.url})
	if err != nil {
		return err
	}
	c.shard = shard
	broker, err := centrifuge.NewRedisBroker(c.node, centrifuge.RedisBrokerConfig{Prefix: rc.prefix, Shards: []*centrifuge.RedisShard{shard}})
	if err != nil {
		return err
	}
	c.node.SetBroker(broker)
	pm, err := centrifuge.NewRedisPresenceManager(c.node, centrifuge.RedisPresenceManagerConfig{Prefix: rc.prefix, Shards: []*centrifuge.RedisShard{shard}})
	if err != nil {
		return err
	}
	c.node.SetPresenceManager(pm)
	c.broker = "Broker and presence manager on Redis, as centrifuge documents them: shard := NewRedisShard(node, RedisShardConfig{Address: url}) " +
		"(rueidis client, its defaults: ConnectTimeout 1s, IOTimeout 4s, AlwaysPipelining, MaxFlushDelay 100µs), " +
		"NewRedisBroker(node, RedisBrokerConfig{Prefix: fresh per run, Shards: [shard]}) (Redis streams for history, unused here: the publishes have no history; " +
		"PUB/SUB on one connection, NumCPU PUB/SUB processors) with node.SetBroker, and " +
		"NewRedisPresenceManager(node, RedisPresenceManagerConfig{Prefix, Shards: [shard]}) with node.SetPresenceManager (unused: no subscription asks for presence). " +
		"node.Publish returns once Redis answered the PUBLISH: it does not wait for the nodes' deliveries."
	return nil
}
