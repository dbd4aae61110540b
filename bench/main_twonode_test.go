package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// testRedisURL is the Redis of the two-node smoke test: BENCH_REDIS_URL,
// else the local default. Unreachable, the test is skipped, or fails when
// CI=true (CI provides one).
func testRedisURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("BENCH_REDIS_URL")
	if u == "" {
		u = "redis://127.0.0.1:6379/0"
	}
	opt, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("BENCH_REDIS_URL: %v", err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis at %s unreachable: %v", opt.Addr, err)
		}
		t.Skipf("redis at %s unreachable: %v", opt.Addr, err)
	}
	return u
}

// TestSmokeTwoNodes runs every two-node implementation at a scale of ten
// subscribers: each run's phases ran, every delivery arrived, the plugin's
// push answers were checked (and right) on every call, the report has its
// tables and the servers' broker configuration, and no key of the runs is
// left in Redis. It checks the harness, not performance.
func TestSmokeTwoNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a few dozen processes")
	}
	url := testRedisURL(t)
	raiseNOFILE()
	cfg, err := parseRun([]string{"-mode", "smoke", "-redis", url, "-subs", "10", "-seq", "50", "-seq-dur", "2s"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.impls) != len(twoNodeSpecs) {
		t.Fatalf("-redis without -impls runs %v, want the two-node implementations", cfg.impls)
	}
	o, res, err := execute(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range cfg.impls {
		sp, _ := specOf(name)
		reps := res[name]
		if len(reps) != 1 {
			t.Fatalf("%s: %d repetitions", name, len(reps))
		}
		r := reps[0]
		for _, e := range r.errs {
			t.Errorf("%s: %s", name, e)
		}
		for phase, st := range map[string]stepResult{"drained": r.drained, "latency": r.lat, "sequential": r.seq} {
			if !st.ran || st.expected == 0 || st.events != st.expected || st.closed != 0 || st.p99 <= 0 || st.callRate() <= 0 {
				t.Errorf("%s %s: %s", name, phase, st)
			}
			counted := sp.base == "realtime-ws"
			if counted && (st.checked != st.published || st.wrong != 0) || !counted && st.checked != 0 {
				t.Errorf("%s %s: %d of %d answers checked, %d wrong (%s)", name, phase, st.checked, st.published, st.wrong, st.firstWrong)
			}
		}
	}
	var out bytes.Buffer
	o.report(&out, res)
	report := out.String()
	t.Log(report)
	for _, want := range []string{"### WebSocket, two nodes through one Redis", "### SSE, two nodes through one Redis",
		"Ratios to realtime-ws-redis", "Ratios to realtime-sse-redis", "Redis 7", "publish calls/s",
		"redisbroker.New(", "NewRedisBroker(node", "push answers with wrong counts (delivered, users) | 0 (of "} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	opt, _ := redis.ParseURL(url)
	c := redis.NewClient(opt)
	defer c.Close()
	left, err := c.Keys(context.Background(), fmt.Sprintf("bench:%d:*", os.Getpid())).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("%d keys of the runs left in Redis, e.g. %s", len(left), left[0])
	}
}
