// Command bench measures the realtime plugin beside its peers, each server
// in its own process, in one run: the plugin's SSE record stream and its
// WebSocket (pushes and record frames), centrifuge v0.38.0 (SSE through its
// handler_sse transport, WebSocket), Mercure v0.24.2 (SSE, mercure.NewHub
// without Caddy), a plain net/http flush-per-event SSE handler and a bare
// melody Broadcast. Raw-TCP client processes count and time the deliveries.
//
//	go run . -mode smoke        every measurement at tiny scale (seconds)
//	go run . -mode full         the real numbers (about half an hour)
//	go run . -mode full -redis redis://127.0.0.1:6379/0
//	                            two nodes through one Redis (twonode.go):
//	                            realtime-ws/sse-redis beside centrifuge's
//	                            Redis broker (about five minutes)
//	go run . server -impl NAME  one server with its control endpoint
//	go run . clients …          raw SSE or WebSocket connections (stdin commands)
//
// BENCH_RT_WRITE_COALESCE sets the plugin's Config.WriteCoalesce in its
// server processes (a duration, or "off"), to compare runs.
//
// It is a module of its own so that the peers' dependencies stay out of the
// library's go.mod. See BENCHMARKS.md at the repository root.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"syscall"
)

// raiseNOFILE raises the soft RLIMIT_NOFILE to the hard limit and returns it.
func raiseNOFILE() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return rl.Cur
}

func main() {
	raiseNOFILE()
	if err := dispatch(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// dispatch runs a subcommand: server, clients, or (the default) run.
func dispatch(args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "server":
			return serverMain(args[1:])
		case "clients":
			return clientsMain(args[1:])
		case "run":
			args = args[1:]
		}
	}
	return runMain(args, os.Stdout)
}
