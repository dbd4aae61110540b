package main

import (
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
//     401, ping, bad input, channel wildcards, tenants, multicast, filters,
//     acks with a silent connection, presence, 1009 on an oversize frame.
//   - client.test.mjs, the browser client (client/realtime.js) under
//     Node with "ws" and "eventsource" injected: backoff schedule,
//     resubscription after a dropped socket, resync → snapshot, restart,
//     token refresh before expiry;
//   - browser.test.mjs, the page in headless Chromium (playwright-core and
//     Debian's chromium; skipped without it, a failure on CI): two tabs,
//     a server restart, offline mode, a push and its ack; screenshots in
//     conformance/screenshots/.
//
// Both share harness.mjs (build, start/stop, tokens, free port). It needs
// node and npm (and the npm registry for `npm ci`); on CI a missing node is
// a failure, elsewhere a skip.
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
	for _, cmd := range []*exec.Cmd{
		exec.Command(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"),
		exec.Command(node, "--test", "--test-reporter=spec"),
	} {
		cmd.Dir = "conformance"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
		}
		t.Logf("%v:\n%s", cmd.Args, out)
	}
}
