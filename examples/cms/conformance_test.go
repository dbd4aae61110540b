package main

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
)

// TestNodeConformance runs conformance/ (Node's test runner), the example
// driven by third-party clients no one here wrote:
//   - eventsource.test.mjs, the npm "eventsource" package (a WHATWG
//     EventSource): resume through a cut connection, resync after a
//     restart, ETags equal to REST's, no frame injection, private posts,
//     refused tokens;
//   - ws.test.mjs, the npm "ws" package against /api/v1/ws, /notify and
//     /presence (PROTOCOL.md §6–§7): query and header tokens, Origin 403,
//     refusals closed with 4401, ping, bad input, channel wildcards,
//     tenants, multicast, filters, acks with a silent connection,
//     presence, 1009 on an oversize frame, strict input, 1007 on invalid
//     UTF-8, 1008 over the message rate, refresh, publishing from the
//     socket;
//   - channels.test.mjs, "ws" and "eventsource" on channels (§8): since
//     resume and resync, an EventSource on channels/subscribe with
//     wildcards and its Last-Event-ID resume through a cut connection,
//     history oldest first, user 456 refused user.123 on all three paths;
//   - pushes.test.mjs, "eventsource" on pushes/subscribe and fetch on
//     pushes/poll and POST /acks (§8): user pushes, broadcasts and
//     channels, acks over HTTP, resume through a cut connection, a
//     socket's publish reaching a pushes stream;
//   - client.test.mjs, the browser client (client/realtime.js) under
//     Node with "ws" and "eventsource" injected: backoff schedule,
//     resubscription after a dropped socket, resync → snapshot, restart,
//     token refresh before expiry;
//   - browser.test.mjs, the page in headless Chromium (playwright-core and
//     Debian's chromium; skipped without it, a failure on CI): two tabs,
//     a server restart, offline mode, a push and its ack; screenshots in
//     conformance/screenshots/;
//   - cluster.test.mjs, two instances on one SQLite file and a
//     redis-server of its own (§9): events, resume and a killed instance
//     across instances, pushes, presence and acks, Redis killed and back;
//   - queue.test.mjs, requests XADDed with redis-cli reaching both
//     instances' WebSocket and SSE subscribers, malformed ones in the
//     dead-letter stream;
//   - cors.test.mjs, preflights of the publish API from an allowed and
//     another origin;
//   - faults.test.mjs, the order promise under faults: three instances on
//     one redis-server and one database (a SQLite file, PostgreSQL,
//     MariaDB), 4 writers, 100 EventSource and WebSocket subscribers moving
//     between instances, while instances are SIGKILLed and SIGSTOPped,
//     Redis dies and comes back empty and connections are dropped, from a
//     seeded PRNG (FAULT_SEED, FAULT_DURATION, FAULT_DBS); faultcheck.mjs
//     checks order, duplicates, unannounced gaps, tenants, ETags and the
//     final views (faultcheck.test.mjs tests the checker itself).
//
// They share harness.mjs (build, start/stop, tokens, free port, a private
// redis-server, fresh databases) and clients.mjs (WebSocket and EventSource
// recorders, a cuttable proxy). It needs node and npm (and the npm registry
// for `npm ci`); on CI a missing node is a failure, elsewhere a skip.
//
// The suites run in a process group of their own: whatever they leave
// running when they end (an instance, a redis-server) is killed, and is a
// failure.
func TestNodeConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the Node.js conformance suite")
	}
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node and npm are required on CI (.ci/run installs them)")
		}
		t.Skip("node or npm not installed: skipping the Node conformance suites")
	}
	// npm ci from the lock file, preferring npm's cache; the registry can
	// time out, so a failed install is tried again once.
	install := func() *exec.Cmd {
		return exec.Command(npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error")
	}
	for attempt := 1; ; attempt++ {
		cmd := install()
		cmd.Dir = "conformance"
		out, err := cmd.CombinedOutput()
		if err == nil {
			break
		}
		if attempt == 2 {
			t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
		}
		t.Logf("%v failed (%v), trying again:\n%s", cmd.Args, err, out)
	}
	cmd := exec.Command(node, "--test", "--test-reporter=spec")
	cmd.Dir = "conformance"
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ownProcessGroup(cmd)
	err := cmd.Start()
	if err == nil {
		err = cmd.Wait()
		if killGroup(cmd) {
			t.Errorf("%v left processes running (killed now)", cmd.Args)
		}
	}
	if err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, out.Bytes())
	}
	t.Logf("%v:\n%s", cmd.Args, out.Bytes())
}
