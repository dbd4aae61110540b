package realtime

// Fan-out behaviour (PROTOCOL.md §2–§3): many subscribers in order, a slow
// subscriber cut off without slowing the others, Close, per-frame
// authorization, heartbeats and token expiry.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sse "github.com/tmaxmax/go-sse"
)

var transports = []struct {
	name          string
	disableHijack bool
}{
	{"hijacked", false},
	{"handler", true},
}

// TestFanout50x40: 50 subscribers of one record, 40 updates published back
// to back: every subscriber receives all 40, in publish order.
func TestFanout50x40(t *testing.T) {
	const subs, updates = 50, 40
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, Config{DisableHijack: tr.disableHijack}, false)
			httpc := &http.Client{Transport: &http.Transport{}}
			defer httpc.CloseIdleConnections()
			streams := make([]*stream, subs)
			for i := range streams {
				streams[i] = openStream(t, httpc, recordURL(e.srv, "42"), e.tok, nil)
			}
			etags := make([]string, updates)
			for n := range etags {
				etags[n] = e.put(t, "42", n)
			}
			errs := make(chan error, subs)
			var wg sync.WaitGroup
			for i, s := range streams {
				wg.Go(func() {
					guard := time.AfterFunc(hangGuard, func() { s.resp.Body.Close() })
					defer guard.Stop()
					lr := &lineReader{br: s.fr.br}
					for n := range updates {
						f, err := lr.next(false)
						if err != nil {
							errs <- fmt.Errorf("subscriber %d: after %d events: %v", i, n, err)
							return
						}
						if f.Event != EventChanged || f.ID != etags[n] || f.Data != recJSON("42", n) {
							errs <- fmt.Errorf("subscriber %d: event %d = %v, want changed %s", i, n, framesOf([]sseFrame{f}), etags[n])
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// TestSlowSubscriberDisconnected: a client that never reads fills its
// socket and its bounded queue and is disconnected by the server, while
// the subscribers that read receive every event.
func TestSlowSubscriberDisconnected(t *testing.T) {
	const fast = 3
	rt, srv := newTestServer(t, Config{QueueSize: 4})
	tok := userToken(t, "u1")

	// The slow one: a raw TCP client that sends its request and never reads.
	slow, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "GET /api/v1/posts/42/subscribe HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", srv.Listener.Addr(), tok)
	waitFor(t, "the slow subscriber", func() bool { return rt.Subscribers() == 1 })

	httpc := &http.Client{Transport: &http.Transport{}}
	defer httpc.CloseIdleConnections()
	type got struct {
		reader int
		id     string
		err    error
	}
	recv := make(chan got, fast)
	for i := range fast {
		s := openStream(t, httpc, recordURL(srv, "42"), tok, nil)
		go func() {
			lr := &lineReader{br: bufio.NewReaderSize(s.resp.Body, 256<<10)}
			for {
				f, err := lr.next(false)
				recv <- got{i, f.ID, err}
				if err != nil {
					return
				}
			}
		}()
	}
	waitFor(t, "every subscriber", func() bool { return rt.Subscribers() == fast+1 })

	pad := strings.Repeat("x", 64<<10)
	var published []string
	const most = 2000 // 128 MiB: far more than any socket buffers
	for n := 0; rt.Subscribers() == fast+1; n++ {
		if n == most {
			t.Fatalf("the slow subscriber is still connected after %d events of 64 KiB", n)
		}
		data, _ := json.Marshal(map[string]any{"id": "42", "n": n, "pad": pad})
		etag, err := rt.Publish(context.Background(), Publication{Collection: "posts", ID: "42", Event: EventChanged, Data: data})
		if err != nil {
			t.Fatal(err)
		}
		published = append(published, etag)
		// The readers keep their pace: the next event is published once
		// each of them has this one.
		for range fast {
			select {
			case g := <-recv:
				if g.err != nil || g.id != etag {
					t.Fatalf("reader %d: got %q (%v), want event %d %s", g.reader, g.id, g.err, n, etag)
				}
			case <-time.After(hangGuard):
				t.Fatalf("event %d did not reach every reader", n)
			}
		}
	}
	if rt.Subscribers() != fast {
		t.Fatalf("%d subscribers, want the %d that read", rt.Subscribers(), fast)
	}
	// The readers go on receiving.
	etag, err := rt.Changed(context.Background(), "posts", "42", rec{ID: "42", N: -1})
	if err != nil {
		t.Fatal(err)
	}
	for range fast {
		if g := <-recv; g.err != nil || g.id != etag {
			t.Fatalf("reader %d after the disconnect: %q (%v), want %s", g.reader, g.id, g.err, etag)
		}
	}

	// The slow client reads now: what it was sent is in order and then
	// its connection is closed, before the end of the stream.
	_ = slow.SetReadDeadline(time.Now().Add(hangGuard))
	br := bufio.NewReader(slow)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("slow client: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("slow client: %s", resp.Status)
	}
	lr := &lineReader{br: bufio.NewReaderSize(resp.Body, 256<<10)}
	var ids []string
	for {
		f, err := lr.next(false)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("slow client: the server did not close the connection")
			}
			if errors.Is(err, io.EOF) {
				t.Fatal("slow client: the stream ended cleanly; want it cut")
			}
			break
		}
		ids = append(ids, f.ID)
	}
	if len(ids) >= len(published) {
		t.Fatalf("slow client received all %d events", len(ids))
	}
	if len(ids) > 0 {
		start := -1
		for i, id := range published {
			if id == ids[0] {
				start = i
			}
		}
		if start < 0 || start+len(ids) > len(published) {
			t.Fatalf("slow client: frames %v are not a run of the published events", ids)
		}
		for i, id := range ids {
			if published[start+i] != id {
				t.Fatalf("slow client: frame %d is %s, want %s", i, id, published[start+i])
			}
		}
	}
	t.Logf("%d events of 64 KiB published; the slow client had %d before it was cut", len(published), len(ids))
}

// TestCloseEndsEveryStream: Close ends record and collection streams with a
// clean end of stream, refuses new subscribes (503) and publishes, and
// returns; a reconnecting client stops on the 503.
func TestCloseEndsEveryStream(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, Config{DisableHijack: tr.disableHijack, Retry: time.Millisecond}, true)
			v1 := e.put(t, "42", 1)
			rs := openStream(t, nil, recordURL(e.srv, "42"), e.tok, nil)
			expectFrames(t, rs, frame{EventSnapshot, v1, ""})
			cs := openStream(t, nil, collectionURL(e.srv), e.tok, nil)
			idle := openStream(t, nil, recordURL(e.srv, "7"), e.tok, http.Header{"Last-Event-ID": {`"x"`}})
			expectFrames(t, idle, resyncFrame, frame{EventDeleted, TombstoneETag("posts", "7"), ""})
			v2 := e.put(t, "42", 2)
			expectFrames(t, rs, frame{EventChanged, v2, ""})
			expectFrames(t, cs, frame{EventChanged, v2, ""})

			// A go-sse client, which reconnects after any loss.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, recordURL(e.srv, "42"), nil)
			req.Header.Set("Authorization", "Bearer "+e.tok)
			httpc := &http.Client{Transport: &http.Transport{}}
			defer httpc.CloseIdleConnections()
			gc := (&sse.Client{HTTPClient: httpc, Backoff: sse.Backoff{InitialInterval: time.Millisecond, MaxRetries: 100}}).NewConnection(req)
			gotSnap := make(chan struct{})
			var once sync.Once
			gc.SubscribeEvent(EventSnapshot, func(sse.Event) { once.Do(func() { close(gotSnap) }) })
			gcDone := make(chan error, 1)
			go func() { gcDone <- gc.Connect() }()
			select {
			case <-gotSnap:
			case err := <-gcDone:
				t.Fatalf("go-sse client: %v", err)
			case <-time.After(hangGuard):
				t.Fatal("go-sse client: no snapshot")
			}

			cctx, ccancel := context.WithTimeout(context.Background(), hangGuard)
			defer ccancel()
			if err := e.rt.Close(cctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
			for name, s := range map[string]*stream{"record": rs, "collection": cs, "idle": idle} {
				if fs := readToEnd(t, s.fr); len(fs) != 0 {
					t.Errorf("%s stream: frames %v after Close", name, framesOf(fs))
				}
			}
			if n := e.rt.Subscribers(); n != 0 {
				t.Errorf("%d subscribers after Close", n)
			}
			select {
			case err := <-gcDone:
				var ce *sse.ConnectionError
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), "503") {
					t.Errorf("go-sse client ended with %v; want the 503 of its reconnect", err)
				}
			case <-time.After(hangGuard):
				t.Error("go-sse client still running after Close")
			}

			for _, url := range []string{recordURL(e.srv, "42"), collectionURL(e.srv)} {
				resp := getWith(t, url, e.tok, nil)
				var body errorBody
				_ = json.NewDecoder(resp.Body).Decode(&body)
				if resp.StatusCode != http.StatusServiceUnavailable || body.Error.Code != "unavailable" {
					t.Errorf("subscribe after Close: %s %+v; want 503 unavailable", resp.Status, body)
				}
			}
			if _, err := e.rt.Changed(context.Background(), "posts", "42", rec{ID: "42", N: 3}); !errors.Is(err, ErrClosed) {
				t.Errorf("publish after Close: %v; want ErrClosed", err)
			}
			if err := e.rt.Close(context.Background()); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

// TestCloseReturnsWithStuckClient: a client that never reads cannot take
// the end of its stream; Close(ctx) still returns once ctx ends, with ctx's
// error, having closed that connection.
func TestCloseReturnsWithStuckClient(t *testing.T) {
	// A write blocked on the stuck client is not cut (WriteTimeout) while
	// the test fills the queue, however loaded the machine: only Close ends it.
	rt, srv := newTestServer(t, Config{QueueSize: 1 << 20, WriteTimeout: time.Hour})
	tok := userToken(t, "u1")
	stuck, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	fmt.Fprintf(stuck, "GET /api/v1/posts/42/subscribe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	waitFor(t, "the subscriber", func() bool { return rt.Subscribers() == 1 })
	_ = stuck.SetReadDeadline(time.Now().Add(hangGuard))
	br := bufio.NewReader(stuck)
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	live := rt.liveConns()
	if len(live) != 1 {
		t.Fatalf("%d subscribers", len(live))
	}
	pending := func() int {
		live[0].mu.Lock()
		defer live[0].mu.Unlock()
		return len(live[0].queue)
	}
	// Publish until 16 MiB wait in the queue, more than the socket buffers
	// take: the writer is stuck in a write, and the end of the stream can
	// never be written.
	pad := strings.Repeat("y", 64<<10)
	for n := 0; pending() < 256; n++ {
		if n == 2000 || rt.Subscribers() != 1 {
			t.Fatalf("%d MiB published, %d subscribers: the client still takes them, or was dropped", n/16, rt.Subscribers())
		}
		data, _ := json.Marshal(map[string]any{"id": "42", "n": n, "pad": pad})
		if _, err := rt.Publish(context.Background(), Publication{Collection: "posts", ID: "42", Event: EventChanged, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = rt.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v; want the context's deadline error", err)
	}
	if n := rt.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers after Close", n)
	}
	// The connection was closed by the server: reading ends with an error
	// other than the read deadline.
	_, err = io.Copy(io.Discard, br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the stuck connection is still open after Close")
	}
}

// TestAuthorizationRevoked: the Authorizer is asked again before every
// frame. A record stream ends (cleanly) at the first event its subscriber
// may no longer see, and its reconnect is refused; a collection stream
// skips the frames of records its subscriber may not see and goes on.
func TestAuthorizationRevoked(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			var revoked atomic.Bool
			auth := func(_ context.Context, a Access) error {
				switch {
				case a.Ref.ID == "secret":
					return ErrForbidden
				case a.Ref.ID == "42" && revoked.Load():
					return ErrForbidden
				}
				return nil
			}
			e := newEnv(t, Config{Authorize: auth, DisableHijack: tr.disableHijack}, false)
			rs := openStream(t, nil, recordURL(e.srv, "42"), e.tok, nil)
			cs := openStream(t, nil, collectionURL(e.srv), e.tok, nil)
			a1 := e.put(t, "42", 1)
			expectFrames(t, rs, frame{EventChanged, a1, ""})
			expectFrames(t, cs, frame{EventChanged, a1, ""})

			revoked.Store(true)
			e.put(t, "42", 2)
			e.put(t, "secret", 1)
			b1 := e.put(t, "1", 1)
			e.put(t, "42", 3)
			b2 := e.put(t, "1", 2)
			if fs := readToEnd(t, rs.fr); len(fs) != 0 {
				t.Errorf("record stream: %v after the revocation; want its end", framesOf(fs))
			}
			expectFrames(t, cs, frame{EventChanged, b1, ""}, frame{EventChanged, b2, ""})

			resp := getWith(t, recordURL(e.srv, "42"), e.tok, http.Header{"Last-Event-ID": {a1}})
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("reconnect after the revocation: %s, want 403", resp.Status)
			}
		})
	}
}

// TestHeartbeat: keepalive comments arrive at the configured interval and
// the stream goes on.
func TestHeartbeat(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t, Config{Heartbeat: 5 * time.Millisecond, DisableHijack: tr.disableHijack}, false)
			s := openStream(t, nil, recordURL(e.srv, "42"), e.tok, nil)
			guard := time.AfterFunc(hangGuard, func() { s.resp.Body.Close() })
			defer guard.Stop()
			for beats := 0; beats < 3; {
				f, err := s.fr.next()
				if err != nil {
					t.Fatalf("after %d keepalives: %v", beats, err)
				}
				if f.isEvent() || len(f.Comments) != 1 || f.Comments[0] != "keepalive" {
					t.Fatalf("block %+v, want a keepalive comment", f)
				}
				beats++
			}
			v := e.put(t, "42", 1)
			for {
				f, err := s.fr.next()
				if err != nil {
					t.Fatal(err)
				}
				if f.isEvent() {
					if f.Event != EventChanged || f.ID != v {
						t.Fatalf("event %+v, want changed %s", f, v)
					}
					break
				}
			}
		})
	}
}

// TestTokenExpiryEndsStream: a stream ends cleanly once its token has
// expired (past the leeway), and the same token is then refused.
func TestTokenExpiryEndsStream(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, Config{JWTLeeway: time.Millisecond, Heartbeat: 5 * time.Millisecond, DisableHijack: tr.disableHijack}, false)
			claims := validClaims("u1")
			claims["exp"] = time.Now().Add(3 * time.Second).Unix() // valid for 2 s at least
			tok := mintToken(t, testSecret, claims)
			s := openStream(t, nil, recordURL(e.srv, "42"), tok, nil)
			v := e.put(t, "42", 1)
			expectFrames(t, s, frame{EventChanged, v, ""})
			if fs := readToEnd(t, s.fr); len(fs) != 0 {
				t.Fatalf("frames %v, want the stream's end", framesOf(fs))
			}
			resp := getWith(t, recordURL(e.srv, "42"), tok, nil)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("expired token: %s, want 401", resp.Status)
			}
		})
	}
}

// TestCloseDuringDelivery: Close called while events are being written
// still ends every stream, after the events queued before it.
func TestCloseDuringDelivery(t *testing.T) {
	const rounds, subs = 15, 8
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			for range rounds {
				rt, srv := newTestServer(t, Config{DisableHijack: tr.disableHijack})
				tok := userToken(t, "u1")
				streams := make([]*stream, subs)
				for i := range streams {
					streams[i] = openStream(t, nil, recordURL(srv, "42"), tok, nil)
				}
				etag, err := rt.Changed(context.Background(), "posts", "42", rec{ID: "42", N: 1})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
				err = rt.Close(ctx)
				cancel()
				if err != nil {
					t.Fatalf("Close: %v", err)
				}
				for i, s := range streams {
					fs := readToEnd(t, s.fr)
					if err := sameFrames(fs, []frame{{EventChanged, etag, ""}}); err != nil {
						t.Fatalf("stream %d: %v", i, err)
					}
				}
			}
		})
	}
}
