package redisbroker

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is a private redis-server (a free port, nothing on disk) a
// test can SIGKILL and start again, empty, on the same port: a Redis that
// died and came back without its data.
type redisServer struct {
	t    testing.TB
	bin  string
	port int
	cmd  *exec.Cmd
}

// startRedisServer runs a private redis-server, killed when t ends. Without
// the redis-server binary it skips t, or fails it when CI=true (.ci/run
// installs it).
func startRedisServer(t testing.TB) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is required on CI: %v", err)
		}
		t.Skipf("redis-server not installed: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	s := &redisServer{t: t, bin: bin, port: port}
	t.Cleanup(s.kill)
	s.start()
	return s
}

func (s *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// start runs redis-server and waits until it answers PING.
func (s *redisServer) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "")
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.addr(), DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(waitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on %s not answering: %v", s.addr(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill ends redis-server at once (SIGKILL) and waits for it: its data is
// gone.
func (s *redisServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// restartEmpty kills redis-server and starts it again, empty.
func (s *redisServer) restartEmpty() {
	s.t.Helper()
	s.kill()
	s.start()
}

// client returns a client of s with short timeouts (closed when t ends).
func (s *redisServer) client(t testing.TB) *redis.Client { return shortClient(t, s.addr()) }

// shortClient returns a client of addr with short timeouts and one retry,
// as an outage test wants (closed when t ends).
func shortClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}
