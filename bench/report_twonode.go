package main

import (
	"fmt"
	"strings"
)

// pubCPUPerCall is the publisher process's CPU per publish call in µs.
func (s stepResult) pubCPUPerCall() float64 {
	if s.published == 0 {
		return 0
	}
	return s.pubCPU / float64(s.published) * 1e6
}

// twoNodeLine describes the two-node setup for the report's header.
func (o *orchestrator) twoNodeLine() string {
	_, double := o.splitImpls()
	return fmt.Sprintf("Two nodes (%s): Redis %s at %s, shared by both server processes of an implementation; every run uses a fresh key prefix "+
		"(bench:<pid>:<ms>:<n>:, deleted after the run), so no run sees another's keys. Node B holds the %s subscribers (the raw clients connect to it), "+
		"node A only publishes, from its control endpoint's loop: one goroutine, each call waiting for its answer. Server CPU per delivery is node B's; "+
		"node A's CPU per call is reported beside the publish rate. The plugin's push answers (NotifyResult delivered and users, PROTOCOL §7) are checked "+
		"on every call of every phase: delivered must be the %s subscribers on node B and users %s (the realtime-ws-redis clients are %s distinct users, "+
		"a token per client index, sub bench-<i>; centrifuge's publish answers no counts).",
		strings.Join(double, ", "), o.redis.version, redactURL(o.cfg.redisURL), count(o.cfg.subs), count(o.cfg.subs), count(o.cfg.subs), count(o.cfg.subs))
}

// redactURL drops a password from a Redis URL.
func redactURL(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		rest = "…@" + rest[at+1:]
	}
	return scheme + "://" + rest
}

// twoNodeRows are the rows of the two-node tables.
func (o *orchestrator) twoNodeRows() []row {
	cfg := o.cfg
	seq := func(r *repResult) stepResult { return r.seq }
	dr := func(r *repResult) stepResult { return r.drained }
	lat := func(r *repResult) stepResult { return r.lat }
	calls := func(s stepResult) (float64, bool) { return s.callRate(), s.published > 0 }
	rate := func(s stepResult) (float64, bool) { return s.rate / 1e6, s.events > 0 }
	pubCPU := func(s stepResult) (float64, bool) { return s.pubCPUPerCall(), s.published > 0 }
	cpu := func(s stepResult) (float64, bool) { return s.cpuPerDelivery(), s.events > 0 }
	wrong := func(s stepResult) (float64, bool) { return float64(s.wrong), s.checked > 0 }
	wrongCell := func(sel func(r *repResult) stepResult) func(v float64, reps []*repResult) string {
		return func(v float64, reps []*repResult) string {
			checked := 0
			for _, r := range reps {
				checked += sel(r).checked
			}
			return fmt.Sprintf("%s (of %s checked, all repetitions)", num(v, ""), count(checked))
		}
	}
	pct := func(s stepResult) (float64, bool) {
		if s.expected == 0 {
			return 0, false
		}
		return 100 * float64(s.events) / float64(s.expected), true
	}
	return []row{
		{label: fmt.Sprintf("one publisher on node A, sequential (each call waits for its answer), up to %s calls or %v, %s subscribers on node B: publish calls/s",
			count(cfg.seqCalls), cfg.seqDur, count(cfg.subs)), get: step(seq, calls)},
		{label: "… node A CPU per call", unit: "µs", get: step(seq, pubCPU)},
		{label: "… push answers with wrong counts (delivered, users)", get: step(seq, wrong), cell: wrongCell(seq)},
		{label: "… deliveries received on node B", unit: "%", get: step(seq, pct)},
		{label: "… subscribers closed", get: step(seq, func(s stepResult) (float64, bool) { return float64(s.closed), true })},
		{label: fmt.Sprintf("burst, 1 publisher on node A → %s subscribers on node B, bursts of %d drained before the next: deliveries/s",
			count(cfg.subs), cfg.burstEvents), unit: "M/s", get: step(dr, rate)},
		{label: "… publish calls/s during the bursts", get: step(dr, calls)},
		{label: "… node B CPU per delivery", unit: "µs", get: step(dr, cpu)},
		{label: "… push answers with wrong counts", get: step(dr, wrong), cell: wrongCell(dr)},
		{label: fmt.Sprintf("%g publishes/s on node A × %s on node B = %s deliveries/s: p50", cfg.latRate, count(cfg.subs), count(int(cfg.latRate)*cfg.subs)),
			unit: "ms", get: step(lat, func(s stepResult) (float64, bool) { return ms(s.p50), s.events > 0 })},
		{label: "… p99", unit: "ms", get: step(lat, func(s stepResult) (float64, bool) { return ms(s.p99), s.events > 0 })},
		{label: "… deliveries/s achieved (a publisher slower than asked falls behind: fewer deliveries/s)", unit: "M/s", get: step(lat, rate)},
		{label: "… delivered", unit: "%", get: step(lat, pct)},
		{label: "… push answers with wrong counts", get: step(lat, wrong), cell: wrongCell(lat)},
	}
}
