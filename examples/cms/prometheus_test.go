package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestPrometheusScrapesTheExample starts Debian's prometheus binary with a
// configuration of its own (a private data directory, a free port), lets
// it scrape the example's admin listener every 500 ms while a small
// workload runs, then asks its HTTP API whether each series moved as the
// workload says, and whether every query of the Grafana dashboard is valid.
// It needs the Debian package prometheus: on CI (CI=true) a missing binary
// is a failure (.ci/run installs it), elsewhere a skip; -short skips it.
func TestPrometheusScrapesTheExample(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the Prometheus test")
	}
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prometheus is required on CI (Debian package prometheus; .ci/run installs it)")
		}
		t.Skip("prometheus not installed (apt-get install prometheus)")
	}
	e := newEnv(t)
	admin, err := startAdmin(opsConfig{adminAddr: "127.0.0.1:0"}, e.app, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	prom := startPrometheus(t, bin, admin.Addr())
	// A scrape before the workload: the counters start from zero.
	prom.await(t, `up{job="cms"}`, 1)
	prom.await(t, `realtime_events_published_total{kind="record"}`, 0)

	// The workload.
	tok := token(t, "u1", "")
	post, _ := e.create(tok, "first", "body", false)
	s := e.subscribe("/api/v1/posts/"+post.ID+"/subscribe", tok)
	if f := s.next(); f.event != "snapshot" {
		t.Fatalf("first frame %+v", f)
	}
	for i := range 5 {
		r := e.do("PATCH", "/api/v1/posts/"+post.ID, tok, fmt.Sprintf(`{"title":"v%d"}`, i))
		wantStatus(t, "patch", r, http.StatusOK)
		if f := s.next(); f.event != "changed" {
			t.Fatalf("frame %+v, want changed", f)
		}
	}
	miss := e.subscribe("/api/v1/posts/"+post.ID+"/subscribe", tok, "Last-Event-ID", `"evicted"`)
	if f := miss.next(); f.event != "resync" {
		t.Fatalf("frame %+v, want resync", f)
	}
	for range 3 {
		r := e.do("GET", "/api/v1/posts/"+post.ID+"/subscribe", "not-a-jwt", "")
		wantStatus(t, "bad token", r, http.StatusUnauthorized)
	}
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(e.srv.URL, "http")+"/api/v1/ws?token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	pub, _ := signToken(testSecret, "ops", "default", "publish", time.Now().Add(time.Hour))
	wantStatus(t, "notify", e.do("POST", "/api/v1/notify", pub, `{"event":"hello","data":{}}`), http.StatusOK)
	// Prometheus sees the socket open, then closed.
	prom.await(t, `realtime_connections{transport="websocket"}`, 1)
	ws.Close()
	s.close()
	miss.close()

	// What the workload did, as Prometheus scraped it.
	for _, c := range []struct {
		query string
		want  float64
	}{
		{`realtime_events_published_total{kind="record"}`, 6}, // the create and 5 updates
		{`realtime_events_published_total{kind="push"}`, 1},
		{`realtime_frames_delivered_total{transport="sse_record"}`, 8}, // snapshot + 5 changed; resync + snapshot
		{`realtime_delivery_latency_seconds_count`, 5},                 // the 5 changed, live
		{`realtime_resyncs_total{reason="buffer-miss"}`, 1},
		{`realtime_auth_failures_total{reason="malformed"}`, 3},
		{`realtime_disconnects_total{reason="closed",transport="sse_record"}`, 2},
		{`realtime_disconnects_total{reason="closed",transport="websocket"}`, 1},
		{`realtime_connections{transport="sse_record"}`, 0},
		{`realtime_connections{transport="websocket"}`, 0},
		{`max_over_time(realtime_connections{transport="sse_record"}[5m])`, 2},
		{`realtime_broker_up`, 1},
		{`realtime_outbox_backlog`, 0},
		{`realtime_buffer_streams`, 2}, // the post's stream and its collection's
	} {
		prom.await(t, c.query, c.want)
	}
	if v := prom.value(t, `realtime_written_bytes_total{transport="sse_record"}`); v < 500 {
		t.Errorf("bytes written %v, want the frames' bytes", v)
	}
	if v := prom.value(t, `rate(realtime_frames_delivered_total{transport="sse_record"}[1m])`); v <= 0 {
		t.Errorf("delivery rate %v, want > 0", v)
	}

	// Every query of the dashboard is valid PromQL over these series.
	raw, err := os.ReadFile("../grafana/realtime.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	r := strings.NewReplacer("$instance", ".*", "$__rate_interval", "1m")
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			if _, err := prom.query(r.Replace(tg.Expr)); err != nil {
				t.Errorf("dashboard query %s: %v", tg.Expr, err)
			}
		}
	}
}

// promServer is a running prometheus.
type promServer struct {
	base string
}

// startPrometheus runs bin scraping target every 500 ms, on a free port
// with a data directory of its own; cleanup stops it.
func startPrometheus(t *testing.T, bin, target string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\nscrape_configs:\n"+
		"  - job_name: cms\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n    static_configs:\n      - targets: [%q]\n", target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn")
	logs, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(hangGuard):
			_ = cmd.Process.Kill()
			<-exited
		}
		logs.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("prometheus log:\n%s", b)
		}
	})
	p := &promServer{base: "http://" + addr}
	deadline := time.Now().Add(hangGuard)
	for {
		resp, err := http.Get(p.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logs.Name())
			t.Fatalf("prometheus exited: %v\n%s", err, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("prometheus not ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// freeAddr returns a loopback address with a port free now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// query evaluates q now: the values of its series.
func (p *promServer) query(q string) ([]float64, error) {
	resp, err := http.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Status != "success" {
		return nil, fmt.Errorf("query %s: %s %v %s", q, r.Status, err, r.Error)
	}
	var out []float64
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v", q, s.Value)
		}
		out = append(out, v)
	}
	return out, nil
}

// value is q's one value now (-1 when it has no series yet).
func (p *promServer) value(t *testing.T, q string) float64 {
	t.Helper()
	vs, err := p.query(q)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 {
		return -1
	}
	return vs[0]
}

// await waits until q's one value is want (a scrape after the workload).
func (p *promServer) await(t *testing.T, q string, want float64) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		v := p.value(t, q)
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s = %v, want %v", q, v, want)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
