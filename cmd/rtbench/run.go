package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ginrealtime/realtime/internal/latency"
)

// plainIdleQueue is the channel size of the plain handler in the idle
// measurement: a small channel, as a minimal handler has (512 slots would add
// 4 KiB per connection).
const plainIdleQueue = 16

type runConfig struct {
	impls       []string
	conns       int
	subs        int
	procs       int
	perProc     int
	ports       int
	size        int
	warmup      int
	latRate     float64
	latDur      time.Duration
	burst       int
	burstMax    time.Duration
	sweep       []float64
	sweepDur    time.Duration
	profDir     string
	profSecs    int
	profPhase   string
	clientProcs int
	batch       time.Duration
	writers     int
	skipIdle    bool
	skipBurst   bool
	verbose     bool
	ws          bool   // WebSocket mode: realtime-ws and melody
	redis       string // realtime-redis: two nodes sharing this Redis
	wsQueues    []int  // extra idle columns: realtime-ws with these WSSendQueue values
}

// isWS reports whether impl is a WebSocket server.
func isWS(impl string) bool { return impl == "realtime-ws" || impl == "melody" }

func runMain(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	impls := fs.String("impls", "realtime,plain", "implementations to measure, in order")
	conns := fs.Int("conns", 10000, "idle connections for the memory measurement")
	subs := fs.Int("subs", 1000, "subscribers of one record for throughput and latency")
	procs := fs.Int("procs", 2, "client processes (at least conns/perproc)")
	perProc := fs.Int("perproc", 9000, "most connections one client process opens")
	ports := fs.Int("ports", 0, "SSE listen ports per server (0: one per 8,000 idle connections)")
	size := fs.Int("size", 120, "bytes of JSON data per event")
	warmup := fs.Int("warmup", 100, "events published (at 200/s) before measuring deliveries")
	latRate := fs.Float64("lat-rate", 100, "publishes/s of the latency run (× subs = deliveries/s)")
	latDur := fs.Duration("lat-dur", 3*time.Second, "duration of the latency run")
	burst := fs.Int("burst", 8000, "events of the throughput run, published as fast as possible (0: skip)")
	burstMax := fs.Duration("burst-max", 3*time.Second, "the throughput run's publisher stops after this long")
	sweep := fs.String("sweep", "500,1000,1500,2000", "paced publishes/s to try with the default queue (empty: skip)")
	sweepDur := fs.Duration("sweep-dur", 2*time.Second, "duration of each sweep step")
	profDir := fs.String("cpuprofile", "", "directory for a CPU profile of each server during the throughput run")
	profSecs := fs.Int("profile-seconds", 2, "length of the CPU profile")
	profPhase := fs.String("profile-phase", "throughput", "run profiled with -cpuprofile: throughput or latency")
	skipIdle := fs.Bool("skip-idle", false, "skip the idle memory measurement")
	verbose := fs.Bool("v", false, "log progress to stderr")
	batch := fs.Duration("client-batch", 0, "clients' pause after a wake-up that found few ready connections")
	clientProcs := fs.Int("client-gomaxprocs", 1, "GOMAXPROCS of each client process (0: Go's default); one epoll loop per P")
	writers := fs.Int("writers", 0, "realtime server's Config.Writers (0: the plugin's default)")
	ws := fs.Bool("ws", false, "WebSocket mode: measure realtime-ws (the plugin's WebSocket, rt.Notify on a channel) and melody (defaults, m.Broadcast); -impls defaults to realtime-ws,melody, -burst to 2000, -sweep to none")
	wsQueues := fs.String("ws-queues", "64,32", "WebSocket mode: also measure idle memory of realtime-ws with these WSSendQueue values")
	redisURL := fs.String("redis", "", "also measure realtime-redis: two plugin nodes sharing this Redis (e.g. redis://127.0.0.1:6379/0), subscribers on one, the publisher on the other (latency and throughput; its idle memory is realtime's)")
	_ = fs.Parse(args)
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *ws {
		if !set["impls"] {
			*impls = "realtime-ws,melody"
		}
		if !set["burst"] {
			*burst = 2000
		}
		if !set["sweep"] {
			*sweep = ""
		}
	}

	cfg := runConfig{
		conns: *conns, subs: *subs, procs: max(*procs, 1), perProc: max(*perProc, 1), ports: *ports,
		size: *size, warmup: *warmup, latRate: *latRate, latDur: *latDur, burst: *burst, burstMax: *burstMax,
		sweepDur: *sweepDur, profDir: *profDir, profSecs: *profSecs, profPhase: *profPhase, clientProcs: *clientProcs, batch: *batch, writers: *writers, skipIdle: *skipIdle, verbose: *verbose,
		skipBurst: *burst <= 0, ws: *ws, redis: *redisURL,
	}
	if cfg.redis != "" && !cfg.ws && !set["impls"] {
		*impls += ",realtime-redis"
	}
	if *ws {
		for _, q := range strings.Split(*wsQueues, ",") {
			if q = strings.TrimSpace(q); q != "" {
				v, err := strconv.Atoi(q)
				if err != nil || v <= 0 {
					return fmt.Errorf("bad -ws-queues value %q", q)
				}
				cfg.wsQueues = append(cfg.wsQueues, v)
			}
		}
	}
	for _, s := range strings.Split(*impls, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.impls = append(cfg.impls, s)
		}
	}
	for _, s := range strings.Split(*sweep, ",") {
		if s = strings.TrimSpace(s); s != "" {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil || v <= 0 {
				return fmt.Errorf("bad -sweep value %q", s)
			}
			cfg.sweep = append(cfg.sweep, v)
		}
	}
	if cfg.ports == 0 {
		cfg.ports = max(1, (cfg.conns+7999)/8000)
	}
	if cfg.profDir != "" {
		if err := os.MkdirAll(cfg.profDir, 0o755); err != nil {
			return err
		}
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	o := &orchestrator{cfg: cfg, self: self, redisPrefix: fmt.Sprintf("rtbench:%d:", time.Now().UnixNano())}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		o.killAll()
		os.Exit(130)
	}()
	defer o.killAll()

	// Phase by phase, every implementation in turn: the implementations
	// measured for one phase see about the same background load.
	results := make(map[string]*implResult)
	var cols []string
	for _, name := range cfg.impls {
		switch {
		case !cfg.ws && (name == "realtime" || name == "plain"):
		case !cfg.ws && name == "realtime-redis" && cfg.redis != "":
		case cfg.ws && isWS(name):
		default:
			return fmt.Errorf("unknown implementation %q (want realtime or plain; with -ws realtime-ws or melody)", name)
		}
		results[name] = &implResult{impl: name}
		cols = append(cols, name)
		if name == "realtime-ws" {
			for _, q := range cfg.wsQueues {
				col := fmt.Sprintf("realtime-ws, WSSendQueue %d", q)
				results[col] = &implResult{impl: name, queue: q, idleOnly: true}
				cols = append(cols, col)
			}
		}
	}
	o.cols = cols
	type phase struct {
		name string
		skip bool
		run  func(string, *implResult) error
	}
	for _, ph := range []phase{
		{"idle", cfg.skipIdle, o.idle},
		{"latency", false, o.paced},
		{"throughput", cfg.skipBurst, o.burstRun},
	} {
		if ph.skip {
			continue
		}
		for _, col := range cols {
			r := results[col]
			if r.idleOnly && ph.name != "idle" {
				continue
			}
			if r.impl == "realtime-redis" && ph.name == "idle" {
				continue // a node's idle connections cost what realtime's do
			}
			if err := ph.run(r.impl, r); err != nil {
				return fmt.Errorf("%s %s: %w", col, ph.name, err)
			}
		}
	}
	o.report(results)
	return nil
}

type implResult struct {
	impl     string
	queue    int  // WebSocket idle columns: the server's -queue (0: default)
	idleOnly bool // measured in the idle phase only
	// idle
	idleConns       int64
	rssBeforeKiB    int64
	rssAfterKiB     int64
	rssFreedKiB     int64 // after debug.FreeOSMemory
	goBefore        int
	goAfter         int
	heapStackBefore uint64
	heapStackAfter  uint64
	// latency (paced at latRate)
	lat stepResult
	// sweep
	sweep []stepResult
	// burst
	burst   stepResult
	profile string
}

type stepResult struct {
	rate        float64 // publishes/s asked (0: as fast as possible)
	published   int
	expected    int64
	events      int64
	seconds     float64 // first publish to last receive
	pubSeconds  float64 // first to last publish
	deliveries  float64 // per second
	p50, p99    time.Duration
	p999, max   time.Duration
	disconnects int64
	serverCPU   float64 // CPU seconds the server used during the step
	clientCPU   float64 // CPU seconds the client processes used
	ran         bool
}

// child is a process started by the orchestrator.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

type orchestrator struct {
	cfg  runConfig
	self string

	cols []string // the report's columns (implementations and variants)

	mu       sync.Mutex
	children []*child

	redisPrefix string // realtime-redis: the run's own keys and channels
}

func (o *orchestrator) logf(format string, args ...any) {
	if o.cfg.verbose {
		fmt.Fprintf(os.Stderr, "%s rtbench: "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
}

func (o *orchestrator) start(name string, env []string, args ...string) (*child, error) {
	cmd := exec.Command(o.self, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	o.mu.Lock()
	o.children = append(o.children, c)
	o.mu.Unlock()
	return c, nil
}

// line waits for the child's next stdout line.
func (c *child) line(timeout time.Duration) (string, error) {
	select {
	case l, ok := <-c.lines:
		if !ok {
			return "", fmt.Errorf("%s exited", c.name)
		}
		return l, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("%s: no answer in %v", c.name, timeout)
	}
}

// stop ends a child: a command, then closing stdin, then SIGKILL.
func (o *orchestrator) stop(c *child, cmd string) {
	if cmd != "" {
		_, _ = io.WriteString(c.stdin, cmd+"\n")
	}
	_ = c.stdin.Close()
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	o.mu.Lock()
	for i, x := range o.children {
		if x == c {
			o.children = append(o.children[:i], o.children[i+1:]...)
			break
		}
	}
	o.mu.Unlock()
}

func (o *orchestrator) killAll() {
	o.mu.Lock()
	cs := o.children
	o.children = nil
	o.mu.Unlock()
	for _, c := range cs {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

// server is a running server child.
type server struct {
	*child
	ready serverReady
	http  *http.Client
	// pub, for realtime-redis, is the other node: the publisher's.
	pub *server
}

// publisher is the server events are published on: the other node for
// realtime-redis, else s.
func (s *server) publisher() *server {
	if s.pub != nil {
		return s.pub
	}
	return s
}

// stopServer stops s and, for realtime-redis, the other node.
func (o *orchestrator) stopServer(s *server) {
	if s.pub != nil {
		o.stop(s.pub.child, "")
	}
	o.stop(s.child, "")
}

func (o *orchestrator) startServer(impl string, queue int) (*server, error) {
	addrs := make([]string, o.cfg.ports)
	for i := range addrs {
		addrs[i] = "127.0.0.1:0"
	}
	args := []string{"server", "-impl", impl, "-addr", strings.Join(addrs, ","),
		"-ctl", "127.0.0.1:0", "-queue", strconv.Itoa(queue), "-writers", strconv.Itoa(o.cfg.writers)}
	if impl == "realtime-redis" {
		args[2] = "realtime"
		args = append(args, "-redis", o.cfg.redis, "-redis-prefix", o.redisPrefix)
	}
	c, err := o.start("server "+impl, nil, args...)
	if err != nil {
		return nil, err
	}
	l, err := c.line(10 * time.Second)
	if err != nil {
		return nil, err
	}
	s := &server{child: c, http: &http.Client{Timeout: 2 * time.Minute}}
	if err := json.Unmarshal([]byte(l), &s.ready); err != nil {
		return nil, fmt.Errorf("server ready line %q: %w", l, err)
	}
	return s, nil
}

func (s *server) urls() []string {
	var out []string
	for _, a := range s.ready.SSE {
		p := plainPath
		switch s.ready.Impl {
		case "realtime":
			p = realtimePath + "?token=" + benchToken()
		case "realtime-ws":
			p = realtimeWSPath + "?token=" + benchToken()
		case "melody":
			p = melodyPath
		}
		out = append(out, "http://"+a+strings.Replace(p, "%s", "{id}", 1))
	}
	return out
}

func (s *server) stats(query string) (serverStats, error) {
	var st serverStats
	resp, err := s.http.Get("http://" + s.ready.Ctl + "/stats?" + query)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (s *server) publish(n int, rate float64, size int, maxDur time.Duration) (publishResult, error) {
	var res publishResult
	u := fmt.Sprintf("http://%s/publish?n=%d&rate=%g&size=%d&id=1&max=%s", s.ready.Ctl, n, rate, size, maxDur)
	resp, err := s.http.Post(u, "", nil)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return res, fmt.Errorf("publish: %s: %s", resp.Status, b)
	}
	return res, json.NewDecoder(resp.Body).Decode(&res)
}

func (s *server) profile(path string, secs int) error {
	resp, err := s.http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", s.ready.Ctl, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New("profile: " + resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// clientGroup is the client processes of one measurement.
type clientGroup struct {
	procs []*child
}

func (o *orchestrator) startClients(s *server, n int, distinct bool) (*clientGroup, clientStats, error) {
	np := max(o.cfg.procs, (n+o.cfg.perProc-1)/o.cfg.perProc)
	np = min(np, n)
	g := &clientGroup{}
	urls := strings.Join(s.urls(), ",")
	base := 0
	for i := range np {
		k := n / np
		if i < n%np {
			k++
		}
		ids := "same"
		if distinct {
			ids = "distinct"
		}
		var env []string
		if o.cfg.clientProcs > 0 {
			env = []string{"GOMAXPROCS=" + strconv.Itoa(o.cfg.clientProcs)}
		}
		args := []string{"clients", "-n", strconv.Itoa(k), "-url", urls,
			"-ids", ids, "-base", strconv.Itoa(base), "-batch", o.cfg.batch.String()}
		if isWS(s.ready.Impl) {
			args = append(args, "-ws")
			if s.ready.Impl == "realtime-ws" {
				args = append(args, "-ws-wait", `"type":"subscribed"`)
			}
		}
		c, err := o.start(fmt.Sprintf("clients#%d", i), env, args...)
		if err != nil {
			o.stopClients(g)
			return nil, clientStats{}, err
		}
		g.procs = append(g.procs, c)
		base += k
	}
	var total clientStats
	for _, c := range g.procs {
		l, err := c.line(2 * time.Minute)
		if err != nil {
			o.stopClients(g)
			return nil, total, err
		}
		var st clientStats
		if err := json.Unmarshal([]byte(l), &st); err != nil {
			o.stopClients(g)
			return nil, total, fmt.Errorf("%s: %q: %w", c.name, l, err)
		}
		total.Opened += st.Opened
		total.Failed += st.Failed
		if total.FirstErr == "" {
			total.FirstErr = st.FirstErr
		}
	}
	return g, total, nil
}

func (o *orchestrator) stopClients(g *clientGroup) {
	var wg sync.WaitGroup
	for _, c := range g.procs {
		wg.Add(1)
		go func() { defer wg.Done(); o.stop(c, "quit") }()
	}
	wg.Wait()
}

// command sends cmd to every client process and sums their answers.
func (g *clientGroup) command(cmd string) (clientStats, *latency.Hist, error) {
	var total clientStats
	h := new(latency.Hist)
	for _, c := range g.procs {
		if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
			return total, nil, err
		}
	}
	for _, c := range g.procs {
		l, err := c.line(30 * time.Second)
		if err != nil {
			return total, nil, err
		}
		var st clientStats
		if err := json.Unmarshal([]byte(l), &st); err != nil {
			return total, nil, fmt.Errorf("%s: %q: %w", c.name, l, err)
		}
		total.Opened += st.Opened
		total.Failed += st.Failed
		total.Closed += st.Closed
		total.Events += st.Events
		total.Bytes += st.Bytes
		if st.FirstNs != 0 && (total.FirstNs == 0 || st.FirstNs < total.FirstNs) {
			total.FirstNs = st.FirstNs
		}
		total.LastNs = max(total.LastNs, st.LastNs)
		total.CPUSeconds += st.CPUSeconds
		h.AddSparse(st.Hist)
	}
	return total, h, nil
}

// waitEvents polls until the clients have received want events, or nothing
// new arrived for stall, or limit passed.
func (g *clientGroup) waitEvents(want int64, stall, limit time.Duration) (clientStats, *latency.Hist, error) {
	deadline := time.Now().Add(limit)
	last, lastChange := int64(-1), time.Now()
	for {
		st, h, err := g.command("stats")
		if err != nil {
			return st, h, err
		}
		if st.Events >= want || time.Now().After(deadline) {
			return st, h, nil
		}
		if st.Events != last {
			last, lastChange = st.Events, time.Now()
		} else if time.Since(lastChange) > stall {
			return st, h, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// idle measures the memory and goroutines of cfg.conns idle connections.
func (o *orchestrator) idle(impl string, r *implResult) error {
	queue := r.queue
	if impl == "plain" {
		queue = plainIdleQueue
	}
	s, err := o.startServer(impl, queue)
	if err != nil {
		return err
	}
	defer o.stop(s.child, "")
	time.Sleep(300 * time.Millisecond)
	before, err := s.stats("gc=1")
	if err != nil {
		return err
	}
	o.logf("%s idle: before rss=%d KiB goroutines=%d; opening %d connections", impl, before.RSSKiB, before.Goroutines, o.cfg.conns)
	t0 := time.Now()
	g, st, err := o.startClients(s, o.cfg.conns, true)
	if err != nil {
		return err
	}
	defer o.stopClients(g)
	o.logf("%s idle: %d opened, %d failed (%v) in %v", impl, st.Opened, st.Failed, st.FirstErr, time.Since(t0))
	if st.Opened != int64(o.cfg.conns) {
		return fmt.Errorf("only %d of %d connections opened (first error: %s)", st.Opened, o.cfg.conns, st.FirstErr)
	}
	if err := s.waitSubscribers(int64(o.cfg.conns), 20*time.Second); err != nil {
		return err
	}
	time.Sleep(time.Second)
	after, err := s.stats("gc=1")
	if err != nil {
		return err
	}
	freed, err := s.stats("gc=1&free=1")
	if err != nil {
		return err
	}
	r.idleConns = int64(o.cfg.conns)
	r.rssBeforeKiB, r.rssAfterKiB, r.rssFreedKiB = before.RSSKiB, after.RSSKiB, freed.RSSKiB
	r.goBefore, r.goAfter = before.Goroutines, after.Goroutines
	r.heapStackBefore = before.HeapInuse + before.StackInuse
	r.heapStackAfter = after.HeapInuse + after.StackInuse
	o.logf("%s idle: after rss=%d KiB (freed %d) goroutines=%d", impl, after.RSSKiB, freed.RSSKiB, after.Goroutines)
	return nil
}

// waitSubscribers polls until the server counts n subscribers (WebSocket:
// open connections), for at most limit.
func (s *server) waitSubscribers(n int64, limit time.Duration) error {
	for deadline := time.Now().Add(limit); ; {
		cur, err := s.stats("gc=0")
		if err != nil {
			return err
		}
		if cur.Subscribers >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server counts %d subscribers, want %d", cur.Subscribers, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// subscribe starts a server and cfg.subs subscribers of record 1, and warms up.
func (o *orchestrator) subscribe(impl string, queue int) (*server, *clientGroup, error) {
	s, err := o.startServer(impl, queue)
	if err != nil {
		return nil, nil, err
	}
	if impl == "realtime-redis" {
		if s.pub, err = o.startServer(impl, queue); err != nil {
			o.stop(s.child, "")
			return nil, nil, err
		}
	}
	g, st, err := o.startClients(s, o.cfg.subs, false)
	if err != nil {
		o.stopServer(s)
		return nil, nil, err
	}
	if st.Opened != int64(o.cfg.subs) {
		o.stopClients(g)
		o.stopServer(s)
		return nil, nil, fmt.Errorf("only %d of %d subscribers connected: %s", st.Opened, o.cfg.subs, st.FirstErr)
	}
	fail := func(err error) (*server, *clientGroup, error) {
		o.stopClients(g)
		o.stopServer(s)
		return nil, nil, err
	}
	if err := s.waitSubscribers(int64(o.cfg.subs), 20*time.Second); err != nil {
		return fail(err)
	}
	if o.cfg.warmup > 0 {
		if _, err := s.publisher().publish(o.cfg.warmup, 200, o.cfg.size, time.Minute); err != nil {
			return fail(err)
		}
		st, _, err := g.waitEvents(int64(o.cfg.warmup*o.cfg.subs), time.Second, 10*time.Second)
		if err != nil {
			return fail(err)
		}
		if st.Closed > 0 || st.Events < int64(o.cfg.warmup*o.cfg.subs) {
			return fail(fmt.Errorf("warm-up: %d of %d delivered, %d subscribers disconnected", st.Events, o.cfg.warmup*o.cfg.subs, st.Closed))
		}
	}
	return s, g, nil
}

// step publishes n events at rate and waits for their deliveries.
func (o *orchestrator) step(s *server, g *clientGroup, n int, rate float64, maxDur time.Duration, profile string) (stepResult, error) {
	res := stepResult{rate: rate}
	before, _, err := g.command("stats")
	if err != nil {
		return res, err
	}
	sBefore, err := s.stats("gc=0")
	if err != nil {
		return res, err
	}
	if _, _, err := g.command("reset"); err != nil {
		return res, err
	}
	var profErr error
	var wg sync.WaitGroup
	if profile != "" {
		wg.Add(1)
		go func() { defer wg.Done(); profErr = s.profile(profile, o.cfg.profSecs) }()
		time.Sleep(50 * time.Millisecond)
	}
	if profile != "" {
		if _, _, err := g.command("profile-start " + strings.TrimSuffix(strings.Replace(profile, "server-", "clients-", 1), ".pprof")); err != nil {
			return res, err
		}
	}
	pub, err := s.publisher().publish(n, rate, o.cfg.size, maxDur)
	if err != nil {
		return res, err
	}
	res.published = pub.Published
	res.pubSeconds = float64(pub.EndNs-pub.StartNs) / 1e9
	res.expected = int64(pub.Published) * int64(o.cfg.subs)
	st, h, err := g.waitEvents(res.expected, 2*time.Second, 60*time.Second)
	if err != nil {
		return res, err
	}
	wg.Wait()
	if profErr != nil {
		return res, profErr
	}
	if profile != "" {
		if _, _, err := g.command("profile-stop"); err != nil {
			return res, err
		}
	}
	sAfter, err := s.stats("gc=0")
	if err != nil {
		return res, err
	}
	res.serverCPU = sAfter.CPUSeconds - sBefore.CPUSeconds
	res.clientCPU = st.CPUSeconds - before.CPUSeconds
	res.ran = true
	res.events = st.Events
	res.disconnects = st.Closed - before.Closed
	if st.LastNs > pub.StartNs {
		res.seconds = float64(st.LastNs-pub.StartNs) / 1e9
		res.deliveries = float64(st.Events) / res.seconds
	}
	res.p50, res.p99, res.p999 = h.Quantile(0.50), h.Quantile(0.99), h.Quantile(0.999)
	res.max = h.Quantile(1)
	if pub.Errors > 0 {
		o.logf("publish errors: %d (%s)", pub.Errors, pub.FirstErr)
	}
	return res, nil
}

// paced runs the latency measurement and the rate sweep on one server with
// the implementation's default queue.
func (o *orchestrator) paced(impl string, r *implResult) error {
	s, g, err := o.subscribe(impl, 0)
	if err != nil {
		return err
	}
	defer func() { o.stopClients(g); o.stopServer(s) }()
	n := int(o.cfg.latRate * o.cfg.latDur.Seconds())
	o.logf("%s latency: %d events at %g/s to %d subscribers", impl, n, o.cfg.latRate, o.cfg.subs)
	prof := ""
	if o.cfg.profDir != "" && o.cfg.profPhase == "latency" {
		prof = filepath.Join(o.cfg.profDir, "server-"+impl+"-latency.pprof")
		r.profile = prof
	}
	if r.lat, err = o.step(s, g, n, o.cfg.latRate, time.Minute, prof); err != nil {
		return err
	}
	o.logf("%s latency: %s", impl, r.lat)
	for _, rate := range o.cfg.sweep {
		if r.lat.disconnects > 0 {
			break
		}
		if len(r.sweep) > 0 {
			if last := r.sweep[len(r.sweep)-1]; last.disconnects > 0 {
				break // the subscribers are gone: the sustainable rate is below
			}
		}
		n := int(rate * o.cfg.sweepDur.Seconds())
		st, err := o.step(s, g, n, rate, time.Minute, "")
		if err != nil {
			return err
		}
		o.logf("%s sweep %g/s: %s", impl, rate, st)
		r.sweep = append(r.sweep, st)
	}
	return nil
}

// burstRun publishes cfg.burst events as fast as possible to cfg.subs
// subscribers whose queues hold the whole burst.
func (o *orchestrator) burstRun(impl string, r *implResult) error {
	s, g, err := o.subscribe(impl, o.cfg.burst+o.cfg.warmup+64)
	if err != nil {
		return err
	}
	defer func() { o.stopClients(g); o.stopServer(s) }()
	prof := ""
	if o.cfg.profDir != "" && o.cfg.profPhase == "throughput" {
		prof = filepath.Join(o.cfg.profDir, "server-"+impl+"-burst.pprof") // clients: clients-<impl>-burst-<pid>.pprof
	}
	o.logf("%s throughput: %d events as fast as possible (for at most %v) to %d subscribers", impl, o.cfg.burst, o.cfg.burstMax, o.cfg.subs)
	if r.burst, err = o.step(s, g, o.cfg.burst, 0, o.cfg.burstMax, prof); err != nil {
		return err
	}
	if prof != "" {
		r.profile = prof
	}
	o.logf("%s throughput: %s", impl, r.burst)
	return nil
}

func (s stepResult) String() string {
	return fmt.Sprintf("published=%d delivered=%d/%d in %.2fs = %.0f/s p50=%v p99=%v p99.9=%v max=%v disconnects=%d cpu: server %.2fs clients %.2fs (%s)",
		s.published, s.events, s.expected, s.seconds, s.deliveries, s.p50, s.p99, s.p999, s.max, s.disconnects,
		s.serverCPU, s.clientCPU, s.cpuPerDelivery())
}

// report prints the markdown table.
func (o *orchestrator) report(results map[string]*implResult) {
	cfg := o.cfg
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	fmt.Printf("## rtbench %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Printf("%d CPUs (GOMAXPROCS %d), %s, load average at the end %s; server and client processes on 127.0.0.1.\n\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), load)
	cols := o.cols
	fmt.Printf("| measurement | %s | target |\n|---|%s---|\n", strings.Join(cols, " | "), strings.Repeat("---|", len(cols)))
	idleRows := true
	row := func(name, target string, f func(r *implResult) string) {
		cells := make([]string, len(cols))
		for i, c := range cols {
			if r := results[c]; r.idleOnly && !idleRows {
				cells[i] = "–"
			} else {
				cells[i] = f(r)
			}
		}
		fmt.Printf("| %s | %s | %s |\n", name, strings.Join(cells, " | "), target)
	}
	idleTarget, burstTarget, latTarget, what := "≤ 8 KiB", "≥ 1.5 M/s", "p99 ≤ 15 ms", "record"
	if cfg.ws {
		idleTarget, burstTarget, latTarget, what = "≤ 12 KiB", "", "", "channel"
	}
	kib := func(v float64) string { return fmt.Sprintf("%.1f KiB", v) }
	if !cfg.skipIdle {
		n := float64(cfg.conns)
		row(fmt.Sprintf("idle RSS per connection (%d conns, after GC)", cfg.conns), idleTarget, func(r *implResult) string {
			return kib(float64(r.rssAfterKiB-r.rssBeforeKiB) / n)
		})
		row("idle RSS per connection after FreeOSMemory", "", func(r *implResult) string {
			return kib(float64(r.rssFreedKiB-r.rssBeforeKiB) / n)
		})
		row("Go heap + stacks in use per connection", "", func(r *implResult) string {
			return kib(float64(int64(r.heapStackAfter)-int64(r.heapStackBefore)) / 1024 / n)
		})
		goTarget := "≤ 1"
		if cfg.ws {
			goTarget = ""
		}
		row("goroutines per connection", goTarget, func(r *implResult) string {
			return fmt.Sprintf("%.2f", float64(r.goAfter-r.goBefore)/n)
		})
		row("server RSS before → with connections", "", func(r *implResult) string {
			return fmt.Sprintf("%.1f → %.1f MiB", float64(r.rssBeforeKiB)/1024, float64(r.rssAfterKiB)/1024)
		})
	}
	idleRows = false
	if !cfg.skipBurst {
		row(fmt.Sprintf("throughput, %d subscribers of one %s, publisher as fast as it can (%d events or %v)", cfg.subs, what, cfg.burst, cfg.burstMax), burstTarget,
			func(r *implResult) string {
				b := r.burst
				s := fmt.Sprintf("%.2f M deliveries/s (%d events published in %.2f s, delivered in %.2f s)", b.deliveries/1e6, b.published, b.pubSeconds, b.seconds)
				if b.events < b.expected {
					s += fmt.Sprintf(" (%d of %d delivered, %d disconnected)", b.events, b.expected, b.disconnects)
				}
				return s
			})
	}
	row(fmt.Sprintf("latency at %g publishes/s × %d = %.0f k deliveries/s: p50 / p99 / p99.9 / max", cfg.latRate, cfg.subs, cfg.latRate*float64(cfg.subs)/1000),
		latTarget, func(r *implResult) string {
			l := r.lat
			s := fmt.Sprintf("%s / %s / %s / %s", ms(l.p50), ms(l.p99), ms(l.p999), ms(l.max))
			if l.events < l.expected {
				s += fmt.Sprintf(" (%d of %d delivered)", l.events, l.expected)
			}
			return s
		})
	row("CPU per delivery, server + client processes: latency run / throughput run", "", func(r *implResult) string {
		out := r.lat.cpuPerDelivery()
		if !cfg.skipBurst {
			out += " / " + r.burst.cpuPerDelivery()
		}
		return out
	})
	for i, rate := range cfg.sweep {
		row(fmt.Sprintf("paced %g publishes/s (%.2f M/s asked): delivered/s, p50 / p99", rate, rate*float64(cfg.subs)/1e6), "", func(r *implResult) string {
			if i >= len(r.sweep) {
				return "not run (subscribers lost at a lower rate)"
			}
			st := r.sweep[i]
			s := fmt.Sprintf("%.2f M/s, %s / %s", st.deliveries/1e6, ms(st.p50), ms(st.p99))
			if st.disconnects > 0 || st.events < st.expected {
				s += fmt.Sprintf(", %d of %d delivered, %d disconnected", st.events, st.expected, st.disconnects)
			}
			return s
		})
	}
	fmt.Println()
	for _, c := range cols {
		if p := results[c].profile; p != "" && !results[c].idleOnly {
			fmt.Printf("CPU profile of the %s server during the %s run: %s (clients: %s-*.pprof)\n", c, cfg.profPhase, p,
				strings.TrimSuffix(strings.Replace(p, "server-", "clients-", 1), ".pprof"))
		}
	}
}

// cpuPerDelivery is the CPU time per delivery of the server and the clients.
func (s stepResult) cpuPerDelivery() string {
	if s.events == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f + %.2f µs", s.serverCPU/float64(s.events)*1e6, s.clientCPU/float64(s.events)*1e6)
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}
