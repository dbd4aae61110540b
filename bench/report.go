package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"
)

// row is one line of a table: a value per repetition, reported as the
// median over the repetitions, and its ratio to the plugin's median.
type row struct {
	label string
	unit  string
	get   func(r *repResult) (float64, bool)
	// cell formats a median (default: 3 significant digits and the unit).
	cell func(v float64, reps []*repResult) string
}

func (o *orchestrator) rows() []row {
	cfg := o.cfg
	n := float64(cfg.idleConns)
	idle := func(f func(r *repResult) float64) func(r *repResult) (float64, bool) {
		return func(r *repResult) (float64, bool) { return f(r), r.idleOK }
	}
	rate := func(s stepResult) (float64, bool) { return s.rate / 1e6, s.events > 0 }
	cpu := func(s stepResult) (float64, bool) { return s.cpuPerDelivery(), s.events > 0 }
	p50 := func(s stepResult) (float64, bool) { return ms(s.p50), s.events > 0 }
	p99 := func(s stepResult) (float64, bool) { return ms(s.p99), s.events > 0 }
	pct := func(s stepResult) (float64, bool) {
		if s.expected == 0 {
			return 0, false
		}
		return 100 * float64(s.events) / float64(s.expected), true
	}
	closed := func(s stepResult) (float64, bool) { return float64(s.closed), true }
	closedCell := func(sel func(r *repResult) stepResult) func(v float64, reps []*repResult) string {
		return func(v float64, reps []*repResult) string {
			codes := map[string]bool{}
			for _, r := range reps {
				for k := range sel(r).codes {
					codes[k] = true
				}
			}
			s := num(v, "")
			if len(codes) > 0 {
				ks := make([]string, 0, len(codes))
				for k := range codes {
					ks = append(ks, k)
				}
				slices.Sort(ks)
				s += " (close " + strings.Join(ks, ", ") + ")"
			}
			return s
		}
	}
	dr := func(r *repResult) stepResult { return r.drained }
	lat := func(r *repResult) stepResult { return r.lat }
	unp := func(r *repResult) stepResult { return r.unpaced }
	rs := []row{
		{label: fmt.Sprintf("idle RSS per connection at %s connections, after GC", count(cfg.idleConns)), unit: "KiB",
			get: idle(func(r *repResult) float64 { return float64(r.rssAfter-r.rssBefore) / n })},
		{label: "idle RSS per connection after FreeOSMemory", unit: "KiB",
			get: idle(func(r *repResult) float64 { return float64(r.rssFreedAfter-r.rssFreedBefore) / n })},
		{label: "idle Go heap + stacks in use per connection", unit: "KiB",
			get: idle(func(r *repResult) float64 { return (float64(r.heapStackAfter) - float64(r.heapStackBefore)) / 1024 / n })},
		{label: "goroutines per connection",
			get: idle(func(r *repResult) float64 { return float64(r.goAfter-r.goBefore) / n })},
		{label: fmt.Sprintf("1 → %s, bursts of %d drained before the next: deliveries/s", count(cfg.subs), cfg.burstEvents), unit: "M/s",
			get: step(dr, rate)},
		{label: "… server CPU per delivery", unit: "µs", get: step(dr, cpu)},
		{label: fmt.Sprintf("%g publishes/s × %s = %s deliveries/s: p50", cfg.latRate, count(cfg.subs), count(int(cfg.latRate)*cfg.subs)), unit: "ms",
			get: step(lat, p50)},
		{label: "… p99", unit: "ms", get: step(lat, p99)},
		{label: "… server CPU per delivery", unit: "µs", get: step(lat, cpu)},
		{label: "… delivered", unit: "%", get: step(lat, pct)},
		{label: fmt.Sprintf("unpaced burst: %s events as fast as the publisher can to %s: deliveries received", count(cfg.unpaced), count(cfg.subs)),
			get: step(unp, func(s stepResult) (float64, bool) { return float64(s.events), true }),
			cell: func(v float64, reps []*repResult) string {
				return fmt.Sprintf("%s of %s", count(int(v)), count(cfg.unpaced*cfg.subs))
			}},
		{label: "… subscribers closed", get: step(unp, closed), cell: closedCell(unp)},
		{label: "… deliveries/s until the last arrived", unit: "M/s", get: step(unp, rate)},
	}
	for i, wr := range cfg.wideRates {
		w := func(r *repResult) stepResult {
			if i < len(r.wide) {
				return r.wide[i]
			}
			return stepResult{}
		}
		rs = append(rs,
			row{label: fmt.Sprintf("wide fan-out: 1 → %s at %g publishes/s (%s deliveries/s asked) for %v: deliveries/s", count(cfg.idleConns), wr,
				count(int(wr)*cfg.idleConns), cfg.wideDur), unit: "M/s", get: step(w, rate)},
			row{label: "… p50", unit: "ms", get: step(w, p50)},
			row{label: "… p99", unit: "ms", get: step(w, p99)},
			row{label: "… server CPU per delivery", unit: "µs", get: step(w, cpu)},
			row{label: "… delivered", unit: "%", get: step(w, pct)},
			row{label: "… subscribers closed", get: step(w, closed), cell: closedCell(w)},
		)
	}
	return rs
}

// step reads a row's value from the step sel selects: f of it, none when
// the step did not run.
func step(sel func(r *repResult) stepResult, f func(s stepResult) (float64, bool)) func(r *repResult) (float64, bool) {
	return func(r *repResult) (float64, bool) {
		s := sel(r)
		if !s.ran {
			return 0, false
		}
		return f(s)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// median of the values the repetitions have.
func median(reps []*repResult, get func(r *repResult) (float64, bool)) (float64, bool) {
	var vs []float64
	for _, r := range reps {
		if v, ok := get(r); ok {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return 0, false
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2], true
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2, true
}

// spread is the lowest and highest value of the repetitions that have one.
func spread(reps []*repResult, get func(r *repResult) (float64, bool)) (lo, hi float64, n int) {
	for _, r := range reps {
		if v, ok := get(r); ok {
			if n == 0 || v < lo {
				lo = v
			}
			if n == 0 || v > hi {
				hi = v
			}
			n++
		}
	}
	return lo, hi, n
}

// num formats v with 3 significant digits (integers as they are).
func num(v float64, unit string) string {
	var s string
	switch a := math.Abs(v); {
	case v == math.Trunc(v) && a < 1e6:
		s = fmt.Sprintf("%.0f", v)
	case a >= 100:
		s = fmt.Sprintf("%.0f", v)
	case a >= 10:
		s = fmt.Sprintf("%.1f", v)
	case a >= 1:
		s = fmt.Sprintf("%.2f", v)
	default:
		s = fmt.Sprintf("%.3f", v)
	}
	if unit != "" {
		s += " " + unit
	}
	return s
}

// count formats an integer with thousands separators.
func count(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func (o *orchestrator) report(w io.Writer, res map[string][]*repResult) {
	cfg := o.cfg
	fmt.Fprintf(w, "## bench (%s mode), %s – %s UTC\n\n", cfg.mode, o.start.UTC().Format("2006-01-02 15:04"), o.end.UTC().Format("15:04"))
	fmt.Fprintf(w, "%s\n\n", machine())
	fmt.Fprintf(w, "%s\n\n", modules())
	fmt.Fprintf(w, "%s\n\n", o.loadLine())
	fmt.Fprintf(w, "Each server in its own process, raw-TCP clients in separate processes (GOMAXPROCS=1, at most %s connections each), all on 127.0.0.1; "+
		"%d repetition(s), interleaved (every implementation in turn within each phase of a repetition); the tables show medians, "+
		"with the lowest and highest repetition in parentheses. Server CPU is utime + stime "+
		"of the server process from /proc/<pid>/stat; RSS is VmRSS from /proc/<pid>/status, read after the server ran runtime.GC() "+
		"(and again after debug.FreeOSMemory()); heap + stacks are runtime.MemStats HeapInuse + StackInuse. Events carry %d B of JSON.\n\n",
		count(cfg.perProc), cfg.reps, cfg.size)
	if o.redis != nil {
		fmt.Fprintf(w, "%s\n\n", o.twoNodeLine())
	}
	for _, table := range []struct {
		key, title string
		rows       []row
	}{
		{"sse", "SSE", o.rows()}, {"ws", "WebSocket", o.rows()},
		{"ws2", "WebSocket, two nodes through one Redis", o.twoNodeRows()},
		{"sse2", "SSE, two nodes through one Redis", o.twoNodeRows()},
	} {
		rows := table.rows
		var cols []string
		for _, name := range cfg.impls {
			if sp, _ := specOf(name); sp.table == table.key {
				cols = append(cols, name)
			}
		}
		if len(cols) == 0 {
			continue
		}
		fmt.Fprintf(w, "### %s\n\n| measurement | %s |\n|---|%s\n", table.title, strings.Join(cols, " | "), strings.Repeat("---|", len(cols)))
		// A row no column has a value for (the push answers of a table
		// without pushes) is left out.
		rows = slices.DeleteFunc(slices.Clone(rows), func(r row) bool {
			for _, c := range cols {
				if _, ok := median(res[c], r.get); ok {
					return false
				}
			}
			return true
		})
		for _, r := range rows {
			cells := make([]string, len(cols))
			for i, c := range cols {
				v, ok := median(res[c], r.get)
				switch {
				case !ok:
					cells[i] = "–"
				case r.cell != nil:
					cells[i] = r.cell(v, res[c])
				default:
					cells[i] = num(v, r.unit)
				}
				if lo, hi, n := spread(res[c], r.get); ok && n > 1 && lo != hi {
					cells[i] += " (" + num(lo, "") + "–" + num(hi, "") + ")"
				}
			}
			fmt.Fprintf(w, "| %s | %s |\n", r.label, strings.Join(cells, " | "))
		}
		base := cols[0]
		if len(cols) > 1 && strings.HasPrefix(base, "realtime") {
			fmt.Fprintf(w, "\nRatios to %s (median of the peer ÷ median of the plugin: above 1 the peer uses more memory, CPU or time, "+
				"or delivers or publishes more per second):\n\n| measurement | %s |\n|---|%s\n", base, strings.Join(cols[1:], " | "), strings.Repeat("---|", len(cols)-1))
			for _, r := range rows {
				b, okb := median(res[base], r.get)
				cells := make([]string, len(cols)-1)
				for i, c := range cols[1:] {
					v, ok := median(res[c], r.get)
					switch {
					case !ok || !okb:
						cells[i] = "–"
					case b == 0 && v == 0:
						cells[i] = "="
					case b == 0:
						cells[i] = "∞"
					default:
						cells[i] = fmt.Sprintf("%.2f×", v/b)
					}
				}
				fmt.Fprintf(w, "| %s | %s |\n", r.label, strings.Join(cells, " | "))
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "### Servers as configured\n\n")
	for _, name := range cfg.impls {
		if c := o.configs[name]; c != "" {
			fmt.Fprintf(w, "- **%s**: %s\n", name, c)
		}
	}
	fmt.Fprintf(w, "\n### Every repetition\n\n```\n")
	for _, name := range cfg.impls {
		for i, r := range res[name] {
			fmt.Fprintf(w, "%s #%d: ", name, i+1)
			if r.idleOK {
				fmt.Fprintf(w, "idle RSS %d→%d KiB (freed %d→%d), heap+stacks %.1f→%.1f MiB, goroutines %d→%d; ",
					r.rssBefore, r.rssAfter, r.rssFreedBefore, r.rssFreedAfter,
					float64(r.heapStackBefore)/(1<<20), float64(r.heapStackAfter)/(1<<20), r.goBefore, r.goAfter)
			}
			for j, s := range r.wide {
				fmt.Fprintf(w, "wide %g/s: %s; ", cfg.wideRates[j], s)
			}
			if r.drained.ran {
				fmt.Fprintf(w, "drained: %s; ", r.drained)
			}
			if r.lat.ran {
				fmt.Fprintf(w, "latency: %s; ", r.lat)
			}
			if r.unpaced.ran {
				fmt.Fprintf(w, "unpaced: %s; ", r.unpaced)
			}
			if r.seq.ran {
				fmt.Fprintf(w, "sequential: %s, %.0f calls/s, node A %.1f µs/call; ", r.seq, r.seq.callRate(), r.seq.pubCPUPerCall())
			}
			for _, e := range r.errs {
				fmt.Fprintf(w, "ERROR %s; ", e)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintf(w, "```\n")
}

// machine describes the cores, kernel, Go version and limits.
func machine() string {
	model := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				var kb float64
				fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
				mem = fmt.Sprintf("%.0f GiB", kb/(1<<20))
			}
		}
	}
	var rl syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	return fmt.Sprintf("Machine: %d cores (%s), %s memory, Linux %s, %s, RLIMIT_NOFILE %d.",
		runtime.NumCPU(), model, mem, kernel, runtime.Version(), rl.Max)
}

// modules lists the versions of the libraries measured, as built.
func modules() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "Modules: unknown."
	}
	want := map[string]bool{"github.com/centrifugal/centrifuge": true, "github.com/dunglas/mercure": true, "github.com/olahol/melody": true,
		"github.com/gorilla/websocket": true, "github.com/gin-gonic/gin": true}
	var out []string
	for _, d := range bi.Deps {
		if d.Path == "github.com/ginrealtime/realtime" {
			out = append(out, "realtime (this repository, ../)")
		} else if want[d.Path] {
			out = append(out, d.Path+" "+d.Version)
		}
	}
	slices.Sort(out)
	return "Modules: " + strings.Join(out, ", ") + "."
}

// loadLine summarizes the load average samples taken during the run.
func (o *orchestrator) loadLine() string {
	o.mu.Lock()
	ls := append([]loadSample(nil), o.loads...)
	o.mu.Unlock()
	if len(ls) == 0 {
		return "Load average: unknown."
	}
	lo, hi, sum := math.Inf(1), math.Inf(-1), 0.0
	for _, l := range ls {
		lo, hi, sum = math.Min(lo, l.one), math.Max(hi, l.one), sum+l.one
	}
	return fmt.Sprintf("Load average (1 min) at the start %.2f, at the end %.2f; during the run %.2f–%.2f, mean %.2f over %d samples 5 s apart "+
		"(the benchmark's own processes included); 5-min average at the end %.2f.",
		ls[0].one, ls[len(ls)-1].one, lo, hi, sum/float64(len(ls)), len(ls), ls[len(ls)-1].five)
}
