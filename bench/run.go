package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ginrealtime/realtime/internal/latency"
)

// runConfig is one run's scale. smokeConfig and fullConfig are the two
// presets; flags override single values.
type runConfig struct {
	mode        string
	impls       []string
	reps        int
	idleConns   int           // connections of the idle and wide fan-out phase
	wideRates   []float64     // publishes/s of the wide fan-out steps
	wideDur     time.Duration // length of each wide fan-out step
	subs        int           // subscribers of the 1,000-subscriber phase
	size        int           // bytes of JSON data per event
	warmup      int           // events (at 200/s) before measuring
	bursts      int           // drained bursts
	burstEvents int           // events per drained burst
	latRate     float64       // publishes/s of the latency run
	latDur      time.Duration
	unpaced     int           // events of the unpaced burst
	procs       int           // client processes at least
	perProc     int           // connections per client process at most
	ports       int           // listen ports per server (0: one per 8,000 idle connections)
	settle      time.Duration // pause between the last connection and the idle memory reading
	stall       time.Duration // a step ends when nothing arrived for this long
	verbose     bool
	// two nodes (twonode.go)
	redisURL string        // the Redis both nodes share ("": no two-node implementations)
	seqCalls int           // calls of the sequential publisher, at most
	seqDur   time.Duration // … and for at most this long
}

func fullConfig() runConfig {
	return runConfig{mode: "full", reps: 3, idleConns: 10_000, wideRates: []float64{10, 50}, wideDur: 3 * time.Second,
		subs: 1000, size: 120, warmup: 100, bursts: 10, burstEvents: 100, latRate: 100, latDur: 3 * time.Second,
		unpaced: 5000, procs: 2, perProc: 9000, settle: time.Second, stall: 3 * time.Second, seqCalls: 2000, seqDur: 10 * time.Second}
}

func smokeConfig() runConfig {
	return runConfig{mode: "smoke", reps: 1, idleConns: 200, wideRates: []float64{10, 50}, wideDur: 500 * time.Millisecond,
		subs: 50, size: 120, warmup: 10, bursts: 3, burstEvents: 20, latRate: 100, latDur: 500 * time.Millisecond,
		unpaced: 300, procs: 1, perProc: 9000, settle: 200 * time.Millisecond, stall: time.Second, seqCalls: 200, seqDur: 2 * time.Second}
}

func runMain(args []string, out io.Writer) error {
	cfg, err := parseRun(args)
	if err != nil {
		return err
	}
	o, res, err := execute(cfg)
	if err != nil {
		return err
	}
	o.report(out, res)
	return nil
}

// parseRun builds a run's configuration from the mode and the flags.
func parseRun(args []string) (runConfig, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	mode := fs.String("mode", "smoke", "smoke (tiny scale, seconds) or full (the real numbers)")
	impls := fs.String("impls", "", "implementations, comma-separated (default: every single-node one; with -redis every two-node one): "+strings.Join(specNames(), ","))
	reps := fs.Int("reps", 0, "repetitions (0: the mode's: smoke 1, full 3)")
	idle := fs.Int("conns", 0, "connections of the idle memory and wide fan-out phase (0: the mode's: 200 / 10,000)")
	subs := fs.Int("subs", 0, "subscribers of the burst, latency and unpaced phases (0: the mode's: 50 / 1,000)")
	wideRates := fs.String("wide-rates", "", "publishes/s of the wide fan-out steps (default 10,50)")
	wideDur := fs.Duration("wide-dur", 0, "length of each wide fan-out step (0: the mode's: 0.5 s / 3 s)")
	unpaced := fs.Int("unpaced", 0, "events of the unpaced burst (0: the mode's: 300 / 5,000)")
	verbose := fs.Bool("v", false, "log every step to stderr")
	redisURL := fs.String("redis", "", "Redis URL (redis://127.0.0.1:6379/0): run the two-node implementations (*-redis), two server processes sharing it")
	seqCalls := fs.Int("seq", 0, "two nodes: calls of the sequential publisher, at most (0: the mode's: 200 / 2,000)")
	seqDur := fs.Duration("seq-dur", 0, "two nodes: … and for at most this long (0: the mode's: 2 s / 10 s)")
	if err := fs.Parse(args); err != nil {
		return runConfig{}, err
	}
	var cfg runConfig
	switch *mode {
	case "smoke":
		cfg = smokeConfig()
	case "full":
		cfg = fullConfig()
	default:
		return cfg, fmt.Errorf("unknown -mode %q (smoke or full)", *mode)
	}
	cfg.verbose = *verbose
	cfg.redisURL = *redisURL
	if *seqCalls > 0 {
		cfg.seqCalls = *seqCalls
	}
	if *seqDur > 0 {
		cfg.seqDur = *seqDur
	}
	if *reps > 0 {
		cfg.reps = *reps
	}
	if *idle > 0 {
		cfg.idleConns = *idle
	}
	if *subs > 0 {
		cfg.subs = *subs
	}
	if *wideDur > 0 {
		cfg.wideDur = *wideDur
	}
	if *unpaced > 0 {
		cfg.unpaced = *unpaced
	}
	if *wideRates != "" {
		cfg.wideRates = nil
		for _, s := range strings.Split(*wideRates, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil || v <= 0 {
				return cfg, fmt.Errorf("bad -wide-rates value %q", s)
			}
			cfg.wideRates = append(cfg.wideRates, v)
		}
	}
	cfg.impls = nil
	if *impls == "" {
		for _, sp := range specs {
			if sp.twoNode() == (cfg.redisURL != "") {
				cfg.impls = append(cfg.impls, sp.name)
			}
		}
	} else {
		for _, s := range strings.Split(*impls, ",") {
			s = strings.TrimSpace(s)
			sp, ok := specOf(s)
			if !ok {
				return cfg, fmt.Errorf("unknown implementation %q (known: %s)", s, strings.Join(specNames(), ","))
			}
			if sp.twoNode() && cfg.redisURL == "" {
				return cfg, fmt.Errorf("%s runs as two nodes sharing one Redis: give -redis URL", s)
			}
			cfg.impls = append(cfg.impls, s)
		}
	}
	if cfg.ports == 0 {
		cfg.ports = max(1, (cfg.idleConns+7999)/8000)
	}
	return cfg, nil
}

// execute runs the measurements of cfg; every process it starts is ended
// before it returns.
func execute(cfg runConfig) (*orchestrator, map[string][]*repResult, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	o := &orchestrator{cfg: cfg, self: self, configs: map[string]string{}}
	if err := o.openRedis(); err != nil {
		return nil, nil, err
	}
	defer o.closeRedis()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	defer func() { signal.Stop(sig); close(done) }()
	go func() {
		select {
		case <-sig:
			o.killAll()
			os.Exit(130)
		case <-done:
		}
	}()
	defer o.killAll()
	res := o.run()
	return o, res, nil
}

func specNames() []string {
	var out []string
	for _, s := range specs {
		out = append(out, s.name)
	}
	return out
}

// repResult is one implementation's measurements in one repetition.
type repResult struct {
	errs []string
	// idle
	idleConns       int
	rssBefore       int64 // KiB, after GC
	rssAfter        int64
	rssFreedBefore  int64 // KiB, after FreeOSMemory
	rssFreedAfter   int64
	heapStackBefore uint64
	heapStackAfter  uint64
	goBefore        int
	goAfter         int
	idleOK          bool
	// wide fan-out, one per rate
	wide []stepResult
	// 1,000 subscribers
	drained stepResult
	lat     stepResult
	unpaced stepResult
	// two nodes: the sequential publisher
	seq stepResult
}

type stepResult struct {
	ran        bool
	published  int
	expected   int64
	events     int64
	seconds    float64 // first publish to last receive
	pubSeconds float64 // first to last publish
	rate       float64 // deliveries per second
	p50, p99   time.Duration
	serverCPU  float64 // CPU seconds of the server process (from /proc) during the step
	clientCPU  float64
	closed     int64          // subscribers that ended during the step
	codes      map[string]int // their WebSocket close codes
	pubCPU     float64        // CPU seconds of the publisher's process (two nodes: node A; else the server)
	checked    int            // answers checked against the expected delivery counts
	wrong      int            // … that were wrong
	firstWrong string
}

func (s stepResult) cpuPerDelivery() float64 {
	if s.events == 0 {
		return 0
	}
	return s.serverCPU / float64(s.events) * 1e6
}

// callRate is the publisher's calls per second.
func (s stepResult) callRate() float64 {
	if s.pubSeconds <= 0 {
		return 0
	}
	return float64(s.published) / s.pubSeconds
}

func (s stepResult) String() string {
	str := fmt.Sprintf("published=%d delivered=%d/%d in %.2fs (publishing %.2fs) = %.0f/s p50=%v p99=%v closed=%d codes=%v server %.2f µs/delivery",
		s.published, s.events, s.expected, s.seconds, s.pubSeconds, s.rate, s.p50, s.p99, s.closed, s.codes, s.cpuPerDelivery())
	if s.checked > 0 {
		str += fmt.Sprintf(" answers checked=%d wrong=%d", s.checked, s.wrong)
		if s.firstWrong != "" {
			str += " (first: " + s.firstWrong + ")"
		}
	}
	return str
}

// loadSample is one reading of /proc/loadavg.
type loadSample struct {
	at   time.Time
	one  float64
	five float64
}

type orchestrator struct {
	cfg  runConfig
	self string

	mu       sync.Mutex
	children []*child
	configs  map[string]string // implementation → its server's configuration

	loads      []loadSample
	start, end time.Time

	redis *redisAdmin // two nodes: the orchestrator's own client (prefixes, cleanup)
}

func (o *orchestrator) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (o *orchestrator) vlogf(format string, args ...any) {
	if o.cfg.verbose {
		o.logf(format, args...)
	}
}

// run measures every implementation cfg.reps times, interleaved: within a
// repetition each phase runs every implementation in turn (A B C … A B C …),
// so that all see about the same background load.
func (o *orchestrator) run() map[string][]*repResult {
	res := map[string][]*repResult{}
	o.start = time.Now()
	stopLoad := o.sampleLoad()
	defer stopLoad()
	for rep := range o.cfg.reps {
		rs := map[string]*repResult{}
		for _, name := range o.cfg.impls {
			rs[name] = &repResult{}
			res[name] = append(res[name], rs[name])
		}
		single, double := o.splitImpls()
		for _, name := range single {
			o.logf("repetition %d/%d: %s: idle memory at %d connections, wide fan-out", rep+1, o.cfg.reps, name, o.cfg.idleConns)
			if err := o.idleAndWide(name, rs[name]); err != nil {
				rs[name].errs = append(rs[name].errs, "idle/wide: "+err.Error())
				o.logf("%s: %v", name, err)
			}
		}
		for _, name := range single {
			o.logf("repetition %d/%d: %s: %d subscribers: drained bursts, latency, unpaced burst", rep+1, o.cfg.reps, name, o.cfg.subs)
			if err := o.thousand(name, rs[name]); err != nil {
				rs[name].errs = append(rs[name].errs, "bursts/latency: "+err.Error())
				o.logf("%s: %v", name, err)
			}
		}
		for _, name := range double {
			o.logf("repetition %d/%d: %s: two nodes through Redis, %d subscribers on node B: drained bursts, latency, sequential publisher", rep+1, o.cfg.reps, name, o.cfg.subs)
			if err := o.twoNode(name, rs[name]); err != nil {
				rs[name].errs = append(rs[name].errs, "two nodes: "+err.Error())
				o.logf("%s: %v", name, err)
			}
		}
	}
	o.end = time.Now()
	return res
}

// sampleLoad reads /proc/loadavg every 5 s until the returned func is called.
func (o *orchestrator) sampleLoad() func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	read := func() {
		if one, five, ok := loadavg(); ok {
			o.mu.Lock()
			o.loads = append(o.loads, loadSample{time.Now(), one, five})
			o.mu.Unlock()
		}
	}
	read()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				read()
			case <-done:
				read()
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func loadavg() (one, five float64, ok bool) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, 0, false
	}
	one, err1 := strconv.ParseFloat(f[0], 64)
	five, err2 := strconv.ParseFloat(f[1], 64)
	return one, five, err1 == nil && err2 == nil
}

// --- processes ---

// child is a process started by the orchestrator.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func (o *orchestrator) startChild(name string, env []string, args ...string) (*child, error) {
	cmd := exec.Command(o.self, args...)
	cmd.Env = append(append(os.Environ(), "BENCH_CHILD=1"), env...)
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
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case l, ok := <-c.lines:
		if !ok {
			return "", fmt.Errorf("%s exited", c.name)
		}
		return l, nil
	case <-t.C:
		return "", fmt.Errorf("%s: no answer in %v", c.name, timeout)
	}
}

// stop ends a child: a command, then closing stdin, then SIGKILL to its pid.
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

// killAll kills the children still running, each by its own pid.
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

// server is a running server process.
type server struct {
	*child
	ready serverReady
	http  *http.Client
}

// startServer starts a server process; extra are more flags (a two-node
// implementation's -redis and -prefix).
func (o *orchestrator) startServer(name string, extra ...string) (*server, error) {
	addrs := make([]string, o.cfg.ports)
	for i := range addrs {
		addrs[i] = "127.0.0.1:0"
	}
	args := append([]string{"server", "-impl", name, "-addr", strings.Join(addrs, ","), "-ctl", "127.0.0.1:0"}, extra...)
	c, err := o.startChild("server "+name, nil, args...)
	if err != nil {
		return nil, err
	}
	l, err := c.line(20 * time.Second)
	if err != nil {
		o.stop(c, "")
		return nil, err
	}
	s := &server{child: c, http: &http.Client{Timeout: 5 * time.Minute}}
	if err := json.Unmarshal([]byte(l), &s.ready); err != nil {
		o.stop(c, "")
		return nil, fmt.Errorf("server ready line %q: %w", l, err)
	}
	o.mu.Lock()
	o.configs[name] = s.ready.Config
	o.mu.Unlock()
	return s, nil
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

// publish runs the server's publish loop; with want.delivered >= 0 the
// server checks each answer's delivery counts against want.
func (s *server) publish(n int, rate float64, size int, maxDur time.Duration, want wantCounts) (publishResult, error) {
	var res publishResult
	u := fmt.Sprintf("http://%s/publish?n=%d&rate=%g&size=%d&max=%s", s.ready.Ctl, n, rate, size, maxDur)
	if want.delivered >= 0 {
		u += fmt.Sprintf("&delivered=%d&users=%d", want.delivered, want.users)
	}
	resp, err := s.http.Post(u, "", nil)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return res, fmt.Errorf("publish: %s: %s", resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return res, err
	}
	if res.Errors > 0 {
		return res, fmt.Errorf("publish: %d errors, first: %s", res.Errors, res.FirstErr)
	}
	return res, nil
}

// cpu is the server process's user + system time in seconds, from
// /proc/<pid>/stat (clock ticks of 10 ms).
func (s *server) cpu() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.ready.PID))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: count from the last ')'.
	str := string(b)
	f := strings.Fields(str[strings.LastIndexByte(str, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64) // field 14
	st, _ := strconv.ParseFloat(f[12], 64) // field 15
	return (ut + st) / 100                 // USER_HZ
}

// rss is the server process's VmRSS in KiB, from /proc/<pid>/status.
func (s *server) rss() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.ready.PID))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

// waitSubscribers polls until the server counts n subscribers.
func (s *server) waitSubscribers(n int64, limit time.Duration) error {
	for deadline := time.Now().Add(limit); ; {
		cur, err := s.stats("")
		if err != nil {
			return err
		}
		if cur.Subscribers >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server counts %d subscribers, want %d", cur.Subscribers, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clientGroup is the client processes of one phase.
type clientGroup struct {
	procs  []*child
	opened []int64
}

func (o *orchestrator) startClients(s *server, n int) (*clientGroup, error) {
	np := min(max(o.cfg.procs, (n+o.cfg.perProc-1)/o.cfg.perProc), n)
	g := &clientGroup{}
	first := 0
	for i := range np {
		k := n / np
		if i < n%np {
			k++
		}
		c, err := o.startChild(fmt.Sprintf("clients#%d", i), []string{"GOMAXPROCS=1"},
			"clients", "-impl", s.ready.Impl, "-n", strconv.Itoa(k), "-first", strconv.Itoa(first), "-addr", strings.Join(s.ready.Addrs, ","))
		first += k
		if err != nil {
			o.stopClients(g)
			return nil, err
		}
		g.procs = append(g.procs, c)
	}
	var opened, failed int64
	var firstErr string
	for _, c := range g.procs {
		l, err := c.line(3 * time.Minute)
		if err != nil {
			o.stopClients(g)
			return nil, err
		}
		var st clientStats
		if err := json.Unmarshal([]byte(l), &st); err != nil {
			o.stopClients(g)
			return nil, fmt.Errorf("%s: %q: %w", c.name, l, err)
		}
		g.opened = append(g.opened, st.Opened)
		opened += st.Opened
		failed += st.Failed
		if firstErr == "" {
			firstErr = st.FirstErr
		}
	}
	if opened < int64(n) {
		o.stopClients(g)
		return nil, fmt.Errorf("%d of %d connections subscribed, %d failed (first error: %s)", opened, n, failed, firstErr)
	}
	return g, nil
}

func (o *orchestrator) stopClients(g *clientGroup) {
	var wg sync.WaitGroup
	for _, c := range g.procs {
		wg.Add(1)
		go func() { defer wg.Done(); o.stop(c, "quit") }()
	}
	wg.Wait()
}

// command sends cmd to every client process and sums their answers;
// perProc, when set, gives each process its own arguments.
func (g *clientGroup) command(cmd string, perProc func(i int) string, timeout time.Duration) (clientStats, *latency.Hist, error) {
	total := clientStats{Codes: map[string]int{}}
	h := new(latency.Hist)
	for i, c := range g.procs {
		line := cmd
		if perProc != nil {
			line += " " + perProc(i)
		}
		if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
			return total, nil, err
		}
	}
	for _, c := range g.procs {
		l, err := c.line(timeout)
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
		total.Pongs += st.Pongs
		total.PongErrs += st.PongErrs
		total.PongMaxMs = max(total.PongMaxMs, st.PongMaxMs)
		for k, v := range st.Codes {
			total.Codes[k] += v
		}
		if st.FirstNs != 0 && (total.FirstNs == 0 || st.FirstNs < total.FirstNs) {
			total.FirstNs = st.FirstNs
		}
		total.LastNs = max(total.LastNs, st.LastNs)
		total.CPUSeconds += st.CPUSeconds
		h.AddSparse(st.Hist)
	}
	return total, h, nil
}

// step publishes n events at rate (0: as fast as the publisher can) and
// waits until every subscriber got them, or nothing arrived for stall.
func (o *orchestrator) step(s *server, g *clientGroup, n int, rate float64, stall, limit time.Duration) (stepResult, *latency.Hist, error) {
	return o.stepOn(s, s, g, n, rate, stall, limit, wantCounts{-1, -1})
}

// stepOn is step with the publisher on pub and the subscribers on s (two
// nodes; else pub is s), the publisher's answers checked against want.
func (o *orchestrator) stepOn(pub, s *server, g *clientGroup, n int, rate float64, stall, limit time.Duration, want wantCounts) (stepResult, *latency.Hist, error) {
	res := stepResult{}
	if _, _, err := g.command("reset", nil, 30*time.Second); err != nil {
		return res, nil, err
	}
	pre, _, err := g.command("stats", nil, 30*time.Second)
	if err != nil {
		return res, nil, err
	}
	cpu0, pcpu0 := s.cpu(), pub.cpu()
	pr, err := pub.publish(n, rate, o.cfg.size, limit, want)
	if err != nil {
		return res, nil, err
	}
	res.checked, res.wrong, res.firstWrong = pr.Checked, pr.Wrong, pr.FirstWrong
	res.published = pr.Published
	res.pubSeconds = float64(pr.EndNs-pr.StartNs) / 1e9
	var sum int64
	for _, k := range g.opened {
		sum += k
	}
	res.expected = int64(pr.Published) * sum
	st, h, err := g.command("wait", func(i int) string {
		return fmt.Sprintf("%d %d %d", int64(pr.Published)*g.opened[i], stall.Milliseconds(), limit.Milliseconds())
	}, limit+30*time.Second)
	if err != nil {
		return res, nil, err
	}
	if st.Pongs > 0 || st.PongErrs > 0 {
		o.vlogf("clients: %d pongs sent, %d failed, longest ping → pong posted %d ms", st.Pongs, st.PongErrs, st.PongMaxMs)
	}
	res.serverCPU = s.cpu() - cpu0
	res.pubCPU = pub.cpu() - pcpu0
	res.clientCPU = st.CPUSeconds - pre.CPUSeconds
	res.ran = true
	res.events = st.Events
	res.closed = st.Closed - pre.Closed
	res.codes = map[string]int{}
	for k, v := range st.Codes {
		if d := v - pre.Codes[k]; d > 0 {
			res.codes[k] = d
		}
	}
	if st.LastNs > pr.StartNs {
		res.seconds = float64(st.LastNs-pr.StartNs) / 1e9
		res.rate = float64(st.Events) / res.seconds
	}
	res.p50, res.p99 = h.Quantile(0.50), h.Quantile(0.99)
	return res, h, nil
}

// idleAndWide measures a fresh server's memory with cfg.idleConns idle
// subscribers, then publishes to all of them at each wide fan-out rate.
func (o *orchestrator) idleAndWide(name string, r *repResult) error {
	s, err := o.startServer(name)
	if err != nil {
		return err
	}
	defer o.stop(s.child, "")
	time.Sleep(o.cfg.settle / 3)
	before, err := s.stats("gc=1")
	if err != nil {
		return err
	}
	rssBefore := s.rss()
	if _, err := s.stats("gc=1&free=1"); err != nil {
		return err
	}
	rssFreedBefore := s.rss()
	t0 := time.Now()
	g, err := o.startClients(s, o.cfg.idleConns)
	if err != nil {
		return err
	}
	defer o.stopClients(g)
	o.vlogf("%s: %d connections in %v", name, o.cfg.idleConns, time.Since(t0).Round(time.Millisecond))
	if err := s.waitSubscribers(int64(o.cfg.idleConns), 30*time.Second); err != nil {
		return err
	}
	time.Sleep(o.cfg.settle)
	after, err := s.stats("gc=1")
	if err != nil {
		return err
	}
	rssAfter := s.rss()
	if _, err := s.stats("gc=1&free=1"); err != nil {
		return err
	}
	r.idleConns = o.cfg.idleConns
	r.rssBefore, r.rssAfter, r.rssFreedBefore, r.rssFreedAfter = rssBefore, rssAfter, rssFreedBefore, s.rss()
	r.goBefore, r.goAfter = before.Goroutines, after.Goroutines
	r.heapStackBefore = before.HeapInuse + before.StackInuse
	r.heapStackAfter = after.HeapInuse + after.StackInuse
	r.idleOK = true
	o.vlogf("%s idle: RSS %d → %d KiB (freed %d → %d), goroutines %d → %d", name, rssBefore, rssAfter,
		rssFreedBefore, r.rssFreedAfter, before.Goroutines, after.Goroutines)

	// Unmeasured: the first events after FreeOSMemory fault pages back in.
	if st, _, err := o.step(s, g, 5, 10, o.cfg.stall, time.Minute); err != nil {
		return err
	} else if st.closed > 0 || st.events < st.expected {
		return fmt.Errorf("wide fan-out warm-up: %d of %d delivered, %d subscribers closed", st.events, st.expected, st.closed)
	}
	for _, rate := range o.cfg.wideRates {
		n := max(1, int(rate*o.cfg.wideDur.Seconds()))
		st, _, err := o.step(s, g, n, rate, o.cfg.stall, 2*time.Minute)
		if err != nil {
			return err
		}
		o.vlogf("%s wide %g/s: %s", name, rate, st)
		r.wide = append(r.wide, st)
	}
	return nil
}

// thousand runs the cfg.subs phase on a fresh server: a warm-up, the
// drained bursts, the latency run, then the unpaced burst (last: it may
// close subscribers).
func (o *orchestrator) thousand(name string, r *repResult) error {
	s, err := o.startServer(name)
	if err != nil {
		return err
	}
	defer o.stop(s.child, "")
	g, err := o.startClients(s, o.cfg.subs)
	if err != nil {
		return err
	}
	defer o.stopClients(g)
	if err := s.waitSubscribers(int64(o.cfg.subs), 30*time.Second); err != nil {
		return err
	}
	if o.cfg.warmup > 0 {
		st, _, err := o.step(s, g, o.cfg.warmup, 200, o.cfg.stall, time.Minute)
		if err != nil {
			return err
		}
		if st.closed > 0 || st.events < st.expected {
			return fmt.Errorf("warm-up: %d of %d delivered, %d subscribers closed", st.events, st.expected, st.closed)
		}
	}

	d, err := o.drainedBursts(s, s, g, wantCounts{-1, -1})
	if err != nil {
		return err
	}
	r.drained = d
	o.vlogf("%s drained bursts: %s", name, d)
	if d.closed > 0 {
		return fmt.Errorf("drained bursts closed %d subscribers (codes %v)", d.closed, d.codes)
	}

	n := max(1, int(o.cfg.latRate*o.cfg.latDur.Seconds()))
	if r.lat, _, err = o.step(s, g, n, o.cfg.latRate, o.cfg.stall, 2*time.Minute); err != nil {
		return err
	}
	o.vlogf("%s latency: %s", name, r.lat)

	if r.unpaced, _, err = o.step(s, g, o.cfg.unpaced, 0, o.cfg.stall, 3*time.Minute); err != nil {
		return err
	}
	o.vlogf("%s unpaced: %s", name, r.unpaced)
	return nil
}

// drainedBursts publishes cfg.bursts bursts of cfg.burstEvents on pub, each
// as fast as the publisher can and fully delivered to the subscribers on s
// before the next (pub is s on one node).
func (o *orchestrator) drainedBursts(pub, s *server, g *clientGroup, want wantCounts) (stepResult, error) {
	// Drained bursts: each burst is published as fast as the publisher can
	// and fully delivered before the next.
	var d stepResult
	d.codes = map[string]int{}
	var all latency.Hist
	cpu0, pcpu0 := s.cpu(), pub.cpu() // once for all bursts: /proc counts 10 ms ticks
	for range o.cfg.bursts {
		st, h, err := o.stepOn(pub, s, g, o.cfg.burstEvents, 0, o.cfg.stall, time.Minute, want)
		if err != nil {
			return d, err
		}
		d.ran = true
		d.published += st.published
		d.expected += st.expected
		d.events += st.events
		d.seconds += st.seconds
		d.pubSeconds += st.pubSeconds
		d.clientCPU += st.clientCPU
		d.closed += st.closed
		d.checked += st.checked
		d.wrong += st.wrong
		if d.firstWrong == "" {
			d.firstWrong = st.firstWrong
		}
		for k, v := range st.codes {
			d.codes[k] += v
		}
		all.Merge(h)
		if st.closed > 0 || st.events < st.expected {
			break // not drained: the phase is over
		}
	}
	d.serverCPU = s.cpu() - cpu0
	d.pubCPU = pub.cpu() - pcpu0
	if d.seconds > 0 {
		d.rate = float64(d.events) / d.seconds
	}
	d.p50, d.p99 = all.Quantile(0.5), all.Quantile(0.99)
	return d, nil
}
