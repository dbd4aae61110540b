// Command rtbench is the load benchmark of the realtime plugin. It runs an
// SSE server and its clients as separate processes on 127.0.0.1 and compares
// the plugin with a plain net/http SSE handler measured in the same run.
//
//	rtbench run                     orchestrate everything, print a markdown table
//	rtbench run -ws                 the same for WebSockets: realtime-ws against melody
//	rtbench server -impl realtime   an SSE server with a control endpoint
//	                                (-impl realtime-ws|melody: a WebSocket server)
//	rtbench clients -n N -url URL   N raw SSE connections that count and time deliveries
//	                                (-ws: raw WebSocket connections)
//
// See BENCHMARKS.md at the repository root for what is measured and how.
package main

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// benchSecret is the fixed JWT secret of the realtime server.
var benchSecret = []byte("rtbench-fixed-secret-0123456789")

// benchToken returns a token the realtime server accepts.
func benchToken() string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "rtbench", "exp": time.Now().Add(24 * time.Hour).Unix(),
	}).SignedString(benchSecret)
	if err != nil {
		panic(err)
	}
	return tok
}

// raiseNOFILE raises the soft RLIMIT_NOFILE to the hard limit.
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

func usage() {
	fmt.Fprintf(os.Stderr, `usage:
  rtbench run [-ws] [flags]                             run every measurement, print a markdown table
  rtbench server -impl realtime|plain|realtime-ws|melody -addr ADDR[,ADDR]
                                                        SSE or WebSocket server + control endpoint
  rtbench clients [-ws] -n N -url URL[,URL]             N SSE (or WebSocket) connections (commands on stdin)
Run "rtbench <command> -h" for the flags of a command.
`)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	raiseNOFILE()
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "run":
		err = runMain(args)
	case "server":
		err = serverMain(args)
	case "clients":
		err = clientsMain(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rtbench:", err)
		os.Exit(1)
	}
}
