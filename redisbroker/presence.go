package redisbroker

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/redis/go-redis/v9"
)

// Presence: per tenant a zset of its connections (member: escaped user,
// ':', connection id) and per user a zset of theirs (member: connection
// id), each scored with the connection's expiry in Redis's clock (ms).
// Expired members are dropped when read; the keys expire after the
// longest ttl given.

// byTenant groups conns by tenant, in first-seen order.
func byTenant(conns []realtime.PresenceConn) map[string][]realtime.PresenceConn {
	m := make(map[string][]realtime.PresenceConn)
	for _, c := range conns {
		m[c.Tenant] = append(m[c.Tenant], c)
	}
	return m
}

// presenceCall is one script run per tenant, all in one pipeline.
func (b *Broker) presenceCall(ctx context.Context, op string, script *redis.Script, conns []realtime.PresenceConn, head ...any) error {
	if len(conns) == 0 {
		return nil
	}
	type call struct {
		keys []string
		args []any
	}
	var calls []call
	for tenant, cs := range byTenant(conns) {
		keys := make([]string, 0, len(cs)+1)
		keys = append(keys, b.keys.presenceTenant(tenant))
		args := append(make([]any, 0, 2*len(cs)+len(head)), head...)
		for _, c := range cs {
			keys = append(keys, b.keys.presenceUser(tenant, c.User))
			args = append(args, presenceMember(c.User, c.ConnID), c.ConnID)
		}
		calls = append(calls, call{keys, args})
	}
	run := func() ([]redis.Cmder, error) {
		return b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, c := range calls {
				script.EvalSha(ctx, p, c.keys, c.args...)
			}
			return nil
		})
	}
	_, err := run()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err = script.Load(ctx, b.client).Err(); err == nil {
			_, err = run()
		}
	}
	if err != nil {
		return unavailable(op, err)
	}
	return nil
}

// AddPresence implements realtime.PresenceStore.
func (b *Broker) AddPresence(ctx context.Context, ttl time.Duration, conns ...realtime.PresenceConn) error {
	if ttl <= 0 {
		return fmt.Errorf("redisbroker: add presence: %w: ttl %v", realtime.ErrBadRequest, ttl)
	}
	return b.presenceCall(ctx, "add presence", presenceAddScript, conns, max(ttl.Milliseconds(), 1))
}

// RemovePresence implements realtime.PresenceStore.
func (b *Broker) RemovePresence(ctx context.Context, conns ...realtime.PresenceConn) error {
	return b.presenceCall(ctx, "remove presence", presenceRemoveScript, conns)
}

// Presence implements realtime.PresenceStore.
func (b *Broker) Presence(ctx context.Context, tenant string) ([]string, int, error) {
	members, err := presenceReadScript.Run(ctx, b.client, []string{b.keys.presenceTenant(tenant)}, "members").StringSlice()
	if err != nil {
		return nil, 0, unavailable("presence", err)
	}
	users := make([]string, 0, len(members))
	for _, m := range members {
		users = append(users, memberUser(m))
	}
	slices.Sort(users)
	return slices.Compact(users), len(members), nil
}

// UserPresence implements realtime.PresenceStore.
func (b *Broker) UserPresence(ctx context.Context, tenant, user string) (int, error) {
	n, err := presenceReadScript.Run(ctx, b.client, []string{b.keys.presenceUser(tenant, user)}, "count").Int()
	if err != nil {
		return 0, unavailable("user presence", err)
	}
	return n, nil
}
