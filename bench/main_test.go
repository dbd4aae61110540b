package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestMain lets the test binary serve as the server and client processes
// the orchestrator starts (it runs os.Executable() with BENCH_CHILD=1).
func TestMain(m *testing.M) {
	if os.Getenv("BENCH_CHILD") == "1" {
		raiseNOFILE()
		if err := dispatch(os.Args[1:]); err != nil {
			os.Stderr.WriteString("bench: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmoke runs every implementation and every phase at a scale of a few
// dozen connections and checks that each one subscribed and received what
// it was sent (the unpaced burst excepted: dropping or closing is what it
// measures), and that the report has its parts. It checks the harness, not
// performance.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a few dozen processes")
	}
	raiseNOFILE()
	cfg, err := parseRun([]string{"-mode", "smoke", "-conns", "40", "-subs", "10", "-wide-dur", "200ms", "-unpaced", "50"})
	if err != nil {
		t.Fatal(err)
	}
	o, res, err := execute(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range cfg.impls {
		s, _ := specOf(name)
		reps := res[s.name]
		if len(reps) != 1 {
			t.Fatalf("%s: %d repetitions", s.name, len(reps))
		}
		r := reps[0]
		for _, e := range r.errs {
			t.Errorf("%s: %s", s.name, e)
		}
		if !r.idleOK || r.rssAfter <= 0 || r.goAfter <= r.goBefore {
			t.Errorf("%s: idle: ok %v, RSS %d KiB, goroutines %d → %d", s.name, r.idleOK, r.rssAfter, r.goBefore, r.goAfter)
		}
		steps := map[string]stepResult{"drained": r.drained, "latency": r.lat}
		for i, w := range r.wide {
			steps[fmt.Sprintf("wide %g/s", cfg.wideRates[i])] = w
		}
		if len(r.wide) != len(cfg.wideRates) {
			t.Errorf("%s: %d wide steps, want %d", s.name, len(r.wide), len(cfg.wideRates))
		}
		for name, st := range steps {
			if !st.ran || st.expected == 0 || st.events != st.expected || st.closed != 0 || st.p99 <= 0 {
				t.Errorf("%s %s: %s", s.name, name, st)
			}
		}
		if !r.unpaced.ran || r.unpaced.published != cfg.unpaced || r.unpaced.events == 0 {
			t.Errorf("%s unpaced: %s", s.name, r.unpaced)
		}
	}
	var out bytes.Buffer
	o.report(&out, res)
	report := out.String()
	t.Log(report)
	for _, want := range []string{"### SSE", "### WebSocket", "Ratios to realtime-sse", "Ratios to realtime-ws", "Machine:", "Load average", "### Servers as configured"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
