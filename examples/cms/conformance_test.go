package main

import (
	"os"
	"os/exec"
	"testing"
)

// TestEventSourceConformance runs conformance/ (Node's test runner): the
// example driven by the npm "eventsource" package, a WHATWG EventSource
// no one here wrote — resume through a cut connection, resync after a
// restart, ETags equal to REST's, no frame injection, private posts, refused
// tokens. It needs node and npm (and the npm registry for `npm ci`); on CI a
// missing node is a failure, elsewhere a skip.
func TestEventSourceConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the Node.js conformance suite")
	}
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node and npm are required on CI (.ci/run installs them)")
		}
		t.Skip("node or npm not installed: skipping the EventSource conformance suite")
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
