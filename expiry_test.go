package realtime

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// expiringToken is a token of sub that expires in about d (exp is whole
// seconds): it returns the token and the moment it expires.
func expiringToken(t testing.TB, sub string, d time.Duration) (string, time.Time) {
	t.Helper()
	exp := time.Now().Add(d).Unix()
	cl := validClaims(sub)
	cl["exp"] = exp
	return mintToken(t, testSecret, cl), time.Unix(exp, 0)
}

// expiryWithin is how long after exp + leeway every connection must have
// ended (PROTOCOL.md §1: within 1 s), with room for a loaded machine
// under -race.
const expiryWithin = 1500 * time.Millisecond

// Every kind of connection ends once its token expires, without a
// heartbeat to wake it up: SSE record, collection, channel and pushes
// streams end, a WebSocket closes with 1008, long polls answer 401.
func TestExpiryEndsEveryConnection(t *testing.T) {
	const leeway = 100 * time.Millisecond
	_, srv := newTestServer(t, Config{JWTLeeway: leeway, Heartbeat: time.Hour, WSPingInterval: 50 * time.Minute, WSPongWait: time.Hour})
	tok, exp := expiringToken(t, "alice", 2*time.Second)
	deadline := exp.Add(leeway)

	var mu sync.Mutex
	ended := map[string]time.Time{}
	var wg sync.WaitGroup
	done := func(name string) {
		mu.Lock()
		ended[name] = time.Now()
		mu.Unlock()
		wg.Done()
	}
	for name, url := range map[string]string{
		"record":     recordURL(srv, "1"),
		"collection": collectionURL(srv),
		"channel":    srv.URL + "/api/v1/channels/subscribe?channels=a.*",
		"pushes":     pushesURL(srv, ""),
	} {
		s := openStream(t, nil, url, tok, nil)
		wg.Add(1)
		go func() {
			defer done(name)
			_, _ = io.Copy(io.Discard, s.resp.Body)
		}()
	}
	ws, _ := connectWS(t, srv, tok)
	wg.Add(1)
	code := 0
	go func() {
		defer done("websocket")
		for {
			ws.SetReadDeadline(time.Now().Add(hangGuard))
			if _, _, err := ws.ReadMessage(); err != nil {
				code = closeCodeOf(err)
				return
			}
		}
	}()
	statuses := map[string]int{}
	for name, path := range map[string]string{"poll": "/posts/1/poll?timeout=30", "pushes poll": "/pushes/poll?timeout=30"} {
		wg.Add(1)
		go func() {
			defer done(name)
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1"+path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				mu.Lock()
				statuses[name] = resp.StatusCode
				mu.Unlock()
				resp.Body.Close()
			}
		}()
	}
	wait := make(chan struct{})
	go func() { wg.Wait(); close(wait) }()
	select {
	case <-wait:
	case <-time.After(hangGuard):
		t.Fatal("not every connection ended")
	}
	for name, at := range ended {
		if at.Before(deadline) || at.After(deadline.Add(expiryWithin)) {
			t.Errorf("%s ended %v after exp + leeway, want within [0, 1s]", name, at.Sub(deadline))
		}
	}
	if code != websocket.ClosePolicyViolation {
		t.Errorf("websocket close %d, want 1008", code)
	}
	for name, status := range statuses {
		if status != http.StatusUnauthorized {
			t.Errorf("%s answered %d, want 401", name, status)
		}
	}
	if len(statuses) != 2 {
		t.Errorf("poll answers %v", statuses)
	}
}

// No frame is written after exp + leeway: events published after it never
// reach a stream or a socket, even one that is busy at that moment.
func TestExpiryNoFrameAfterDeadline(t *testing.T) {
	const leeway = 50 * time.Millisecond
	rt, srv := newTestServer(t, Config{JWTLeeway: leeway})
	tok, exp := expiringToken(t, "alice", 2*time.Second)
	deadline := exp.Add(leeway)
	s := openStream(t, nil, recordURL(srv, "1"), tok, nil)
	ws, _ := connectWS(t, srv, tok)
	sendWS(t, ws, `{"type":"subscribe","records":[{"collection":"posts","id":"1"}]}`)
	expectType(t, ws, "subscribed")

	stop := make(chan struct{})
	published := make(chan struct{})
	go func() {
		defer close(published)
		for {
			select {
			case <-stop:
				return
			default:
			}
			at := time.Now().UnixNano()
			data := json.RawMessage(`{"id":"1","at":` + strconv.FormatInt(at, 10) + `}`)
			if _, err := rt.Publish(context.Background(), Publication{Collection: "posts", ID: "1", Event: EventChanged, Data: data}); err != nil {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	defer func() { close(stop); <-published }()

	check := func(what string, data []byte) {
		var d struct{ At int64 }
		if json.Unmarshal(data, &d) == nil && d.At > deadline.UnixNano() {
			t.Errorf("%s: an event published %v after exp + leeway was written", what, time.Duration(d.At-deadline.UnixNano()))
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		guard := timeGuard(s.resp.Body)
		defer guard.Stop()
		n := 0
		for {
			f, err := s.fr.next()
			if err != nil {
				break
			}
			if f.isEvent() {
				n++
				check("SSE", []byte(f.Data))
			}
		}
		if n == 0 {
			t.Error("SSE: no event before the expiry")
		}
	}()
	n := 0
	for {
		ws.SetReadDeadline(time.Now().Add(hangGuard))
		_, b, err := ws.ReadMessage()
		if err != nil {
			if code := closeCodeOf(err); code != websocket.ClosePolicyViolation {
				t.Errorf("websocket close %d, want 1008", code)
			}
			break
		}
		var f struct{ Data json.RawMessage }
		if json.Unmarshal(b, &f) == nil {
			n++
			check("WebSocket", f.Data)
		}
	}
	wg.Wait()
	if n == 0 {
		t.Error("WebSocket: no frame before the expiry")
	}
}

// recordingTransport records what a conn's drain hands it.
type recordingTransport struct {
	writes []int // batch sizes
	ends   []bool
}

func (r *recordingTransport) write(_ *conn, batch []out, end, _ bool) error {
	r.writes = append(r.writes, len(batch))
	r.ends = append(r.ends, end)
	return nil
}
func (r *recordingTransport) overflow(c *conn) { c.closeLocked(ErrSlowSubscriber) }
func (r *recordingTransport) closed(*conn)     {}

// The writer compares the deadline before each write: past it, the queued
// frames are dropped and only the end is written.
func TestExpiryCheckedBeforeEachWrite(t *testing.T) {
	rt := &recordingTransport{}
	c := newConn(rt, &writerPool{}, 16, true)
	c.expires.Store(time.Now().Add(time.Hour).UnixNano())
	c.setReady()
	c.send(out{ev: keepaliveEvent})
	if c.drain(false) || len(rt.writes) != 1 || rt.writes[0] != 1 || rt.ends[0] {
		t.Fatalf("before the deadline: writes %v ends %v", rt.writes, rt.ends)
	}
	c.expires.Store(time.Now().Add(-time.Millisecond).UnixNano())
	c.send(out{ev: keepaliveEvent})
	c.send(out{ev: keepaliveEvent})
	if !c.drain(false) || len(rt.writes) != 2 || rt.writes[1] != 0 || !rt.ends[1] {
		t.Fatalf("past the deadline: writes %v ends %v, want an end with no frame", rt.writes, rt.ends)
	}
	if c.open() {
		t.Fatal("still open")
	}
}

func TestExpiryHeap(t *testing.T) {
	var x expiryHeap
	mk := func() *conn { return newConn(&recordingTransport{}, &writerPool{}, 1, true) }
	a, b, c, never := mk(), mk(), mk(), mk()
	x.add(a, 30)
	x.add(b, 10)
	x.add(c, 20)
	x.add(never, 0)
	if never.expIdx != -1 || len(x.h) != 3 {
		t.Fatalf("a conn without deadline in the heap")
	}
	x.update(b, 40) // a refresh
	x.remove(c)
	if got := x.due(35); len(got) != 1 || got[0] != a {
		t.Fatalf("due(35) = %v, want [a]", got)
	}
	x.update(a, 100) // popped already: left out
	if got := x.due(1000); len(got) != 1 || got[0] != b || len(x.h) != 0 {
		t.Fatalf("due(1000) = %v, heap %d", got, len(x.h))
	}
}

// A refresh extends the connection's expiry; a token that fails, or names
// another identity, is refused and the old expiry stays.
func TestWSRefresh(t *testing.T) {
	const leeway = 50 * time.Millisecond
	_, srv := newTestServer(t, Config{JWTLeeway: leeway})
	short, exp := expiringToken(t, "alice", 2*time.Second)
	kept, _ := connectWS(t, srv, short)
	refused, _ := connectWS(t, srv, short)

	fresh := validClaims("alice")
	sendWS(t, kept, `{"type":"refresh","token":"`+mintToken(t, testSecret, fresh)+`"}`)
	var r struct {
		Type string
		Exp  int64
	}
	if f := readWS(t, kept); json.Unmarshal(f.raw, &r) != nil || r.Type != "refreshed" || r.Exp != fresh["exp"].(int64) {
		t.Fatalf("refresh answered %s, want refreshed with exp %d", f.raw, fresh["exp"])
	}

	other := validClaims("bob")
	otherTenant := validClaims("alice")
	otherTenant["tenant"] = "t2"
	for _, tc := range []struct{ token, code string }{
		{"not-a-jwt", "unauthorized"},
		{mintToken(t, []byte("another-secret-0123456789abcdef"), validClaims("alice")), "unauthorized"},
		{mintToken(t, testSecret, other), "forbidden"},
		{mintToken(t, testSecret, otherTenant), "forbidden"},
	} {
		sendWS(t, refused, `{"type":"refresh","token":"`+tc.token+`"}`)
		if f := expectType(t, refused, "error"); f.Code != tc.code {
			t.Fatalf("refresh with a bad token: %s, want %s", f.raw, tc.code)
		}
	}
	// The refused one ends at its old expiry; the refreshed one lives on.
	if code := closeCode(t, refused); code != websocket.ClosePolicyViolation {
		t.Fatalf("refused refresh: close %d, want 1008 at the old expiry", code)
	}
	if time.Now().Before(exp.Add(leeway)) {
		t.Fatal("closed before its expiry")
	}
	time.Sleep(expiryWithin - time.Until(exp.Add(leeway)))
	sendWS(t, kept, `{"type":"ping"}`)
	expectType(t, kept, "pong")
}
