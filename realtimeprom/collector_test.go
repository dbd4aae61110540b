package realtimeprom

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// newPlugin returns a plugin closed at the end of the test.
func newPlugin(t *testing.T) *realtime.Plugin {
	t.Helper()
	rt, err := realtime.New(realtime.Config{JWTSecret: []byte("prom-test-secret-0123456789")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return rt
}

// fakeStats is a StatsReader with fixed Stats.
type fakeStats struct{ s realtime.Stats }

func (f fakeStats) Stats() realtime.Stats { return f.s }
func (f fakeStats) TopTenants(n int) []realtime.TenantStats {
	return f.s.Tenants[:min(n, len(f.s.Tenants))]
}

// scrape returns the text exposition of a registry holding c.
func scrape(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestCollectorValues(t *testing.T) {
	s := realtime.Stats{
		Connections:   realtime.PerTransport{SSERecord: 3, WebSocket: 2},
		Tenants:       []realtime.TenantStats{{Tenant: "acme", Total: 4}, {Tenant: "zeta", Total: 1}},
		Subscriptions: realtime.SubscriptionStats{Records: 5, Channels: 2, RecordStreams: 4},
		Published:     realtime.PublishStats{Events: 7, Pushes: 1},
		Delivery: realtime.DeliveryStats{
			Frames:     realtime.PerTransport{SSERecord: 20},
			Latency:    realtime.Histogram{Bounds: []float64{0.001, 0.01}, Counts: []uint64{2, 3, 1}, Count: 6, Sum: 0.5},
			Fanout:     realtime.Histogram{Bounds: []float64{0.001}, Counts: []uint64{1, 0}, Count: 1, Sum: 0.0001},
			PushFanout: realtime.Histogram{Bounds: []float64{0.001}, Counts: []uint64{0, 0}},
		},
		Resyncs:      realtime.ResyncStats{Gap: 2},
		Disconnects:  realtime.DisconnectStats{Slow: realtime.PerTransport{WebSocket: 1}},
		AuthFailures: realtime.AuthFailureStats{Expired: 3},
		Broker:       realtime.BrokerStats{Up: true, Outages: 1, LastOutageStart: time.Unix(100, 0), LastOutageEnd: time.Unix(160, 0), CatchUpLag: 1500 * time.Millisecond},
		Queue:        realtime.QueueStats{Queues: 1, DeadLettered: 2},
		Outbox:       realtime.OutboxStats{Outboxes: 1, Backlog: 9},
	}
	c := New(fakeStats{s}, WithTenants(1), WithConstLabels(prometheus.Labels{"node": "n1"}))
	want := `
# HELP realtime_connections Open connections, by transport (poll: long polls waiting).
# TYPE realtime_connections gauge
realtime_connections{node="n1",transport="other"} 0
realtime_connections{node="n1",transport="poll"} 0
realtime_connections{node="n1",transport="sse_channel"} 0
realtime_connections{node="n1",transport="sse_collection"} 0
realtime_connections{node="n1",transport="sse_pushes"} 0
realtime_connections{node="n1",transport="sse_record"} 3
realtime_connections{node="n1",transport="websocket"} 2
# HELP realtime_tenant_connections Open connections of the tenants with the most.
# TYPE realtime_tenant_connections gauge
realtime_tenant_connections{node="n1",tenant="acme"} 4
# HELP realtime_delivery_latency_seconds Time from a record event's publish to its write to a subscriber (live events).
# TYPE realtime_delivery_latency_seconds histogram
realtime_delivery_latency_seconds_bucket{node="n1",le="0.001"} 2
realtime_delivery_latency_seconds_bucket{node="n1",le="0.01"} 5
realtime_delivery_latency_seconds_bucket{node="n1",le="+Inf"} 6
realtime_delivery_latency_seconds_sum{node="n1"} 0.5
realtime_delivery_latency_seconds_count{node="n1"} 6
# HELP realtime_broker_last_outage_end_timestamp_seconds End of the last outage (0: none, or still down).
# TYPE realtime_broker_last_outage_end_timestamp_seconds gauge
realtime_broker_last_outage_end_timestamp_seconds{node="n1"} 160
# HELP realtime_broker_catchup_lag_seconds The last catch-up's lag: from the link's loss to every watched stream read back.
# TYPE realtime_broker_catchup_lag_seconds gauge
realtime_broker_catchup_lag_seconds{node="n1"} 1.5
# HELP realtime_outbox_backlog Outbox events committed more than Grace ago, not yet published.
# TYPE realtime_outbox_backlog gauge
realtime_outbox_backlog{node="n1"} 9
# HELP realtime_queue_dead_lettered_total Queue requests moved to the dead-letter stream.
# TYPE realtime_queue_dead_lettered_total counter
realtime_queue_dead_lettered_total{node="n1"} 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"realtime_connections", "realtime_tenant_connections", "realtime_delivery_latency_seconds",
		"realtime_broker_last_outage_end_timestamp_seconds", "realtime_broker_catchup_lag_seconds",
		"realtime_outbox_backlog", "realtime_queue_dead_lettered_total"); err != nil {
		t.Error(err)
	}
	out := scrape(t, c)
	for _, line := range []string{
		`realtime_disconnects_total{node="n1",reason="slow",transport="websocket"} 1`,
		`realtime_resyncs_total{node="n1",reason="gap"} 2`,
		`realtime_auth_failures_total{node="n1",reason="expired"} 3`,
		`realtime_events_published_total{kind="record",node="n1"} 7`,
		`realtime_frames_delivered_total{node="n1",transport="sse_record"} 20`,
		`realtime_fanout_duration_seconds_count{kind="record",node="n1"} 1`,
		`realtime_broker_up{node="n1"} 1`,
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("scrape lacks %s", line)
		}
	}
	// No tenant series without WithTenants.
	if out := scrape(t, New(fakeStats{s})); strings.Contains(out, "tenant=") {
		t.Error("tenant series without WithTenants")
	}
}

// TestCollectorLint: the series of a live plugin pass client_golang's
// linter and a pedantic registry (consistent descriptions).
func TestCollectorLint(t *testing.T) {
	rt := newPlugin(t)
	if _, err := rt.Changed(context.Background(), "posts", "1", map[string]string{"id": "1"}); err != nil {
		t.Fatal(err)
	}
	c := New(rt, WithTenants(5))
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(c, "realtime_events_published_total"); n != 2 {
		t.Errorf("%d published series, want 2 (record, push)", n)
	}
	_ = scrape(t, c)
}

// TestPromtoolCheckMetrics runs Prometheus's own linter on a scrape. On CI
// (CI=true) a missing promtool is a failure (.ci/run installs prometheus).
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is required on CI (Debian package prometheus; .ci/run installs it)")
		}
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	rt := newPlugin(t)
	if _, err := rt.Changed(context.Background(), "posts", "1", map[string]string{"id": "1"}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(scrape(t, New(rt, WithTenants(3))))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || strings.TrimSpace(out.String()) != "" {
		t.Errorf("promtool check metrics: %v\n%s", err, out.String())
	}
}

// TestDashboardSeries: every series the Grafana dashboard queries is one
// the collector exposes.
func TestDashboardSeries(t *testing.T) {
	raw, err := os.ReadFile("../examples/grafana/realtime.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	ch := make(chan *prometheus.Desc, 64)
	New(newPlugin(t), WithTenants(1)).Describe(ch)
	close(ch)
	name := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range ch {
		known[name.FindStringSubmatch(d.String())[1]] = true
	}
	series := regexp.MustCompile(`realtime_[a-z_]+`)
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, s := range series.FindAllString(tg.Expr, -1) {
				n++
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(s, "_bucket"), "_sum"), "_count")
				if !known[base] {
					t.Errorf("panel %q queries %s, which the collector does not expose", p.Title, s)
				}
			}
		}
	}
	if n < 20 {
		t.Errorf("only %d series in the dashboard", n)
	}
}
