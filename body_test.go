package realtime

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rawPost sends the head of a POST with contentLength and then body (maybe
// shorter), pausing between bytes, and returns the answer's status line,
// body and whether it closes the connection, once the server answers.
func rawPost(t *testing.T, srv *httptest.Server, path, tok string, contentLength int, body string, pause time.Duration) (string, string, bool) {
	t.Helper()
	nc, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	head := "POST " + path + " HTTP/1.1\r\nHost: " + nc.RemoteAddr().String() +
		"\r\nAuthorization: Bearer " + tok + "\r\nContent-Type: application/json\r\nContent-Length: " +
		itoa(contentLength) + "\r\n\r\n"
	if _, err := nc.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := range len(body) {
			if _, err := nc.Write([]byte{body[i]}); err != nil {
				return
			}
			time.Sleep(pause)
		}
	}()
	nc.SetReadDeadline(time.Now().Add(hangGuard))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Status, string(b), resp.Close
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestBodyTimeout: a body that does not arrive within BodyTimeout (sent in
// part, or trickled) is answered 408 with the error code "timeout" and the
// connection closed; one in time is served, and the deadline does not cut
// what follows the body (a notify waiting for acks longer than it).
func TestBodyTimeout(t *testing.T) {
	_, srv := newTestServer(t, Config{BodyTimeout: 150 * time.Millisecond})
	pub := publisherToken(t)
	notifyBody := `{"event":"e","data":{"n":1}}`
	eventsBody := `{"event":"changed","data":{"id":"1"}}`
	for _, tc := range []struct {
		name, path, body string
		length           int
		pause            time.Duration
		status           int
	}{
		{"notify, half a body", "/api/v1/notify", notifyBody[:10], len(notifyBody), 0, http.StatusRequestTimeout},
		{"events, half a body", "/api/v1/posts/1/events", eventsBody[:10], len(eventsBody), 0, http.StatusRequestTimeout},
		{"notify, trickled", "/api/v1/notify", notifyBody, len(notifyBody), 20 * time.Millisecond, http.StatusRequestTimeout},
		{"notify, in time", "/api/v1/notify", notifyBody, len(notifyBody), 0, http.StatusOK},
		{"events, in time", "/api/v1/posts/1/events", eventsBody, len(eventsBody), 0, http.StatusAccepted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, closes := rawPost(t, srv, tc.path, pub, tc.length, tc.body, tc.pause)
			if !strings.HasPrefix(status, itoa(tc.status)) {
				t.Fatalf("status %s %s, want %d", status, body, tc.status)
			}
			if tc.status == http.StatusRequestTimeout {
				var e errorAnswer
				if json.Unmarshal([]byte(body), &e) != nil || e.Error.Code != "timeout" || e.Error.Message == "" {
					t.Fatalf("body %s", body)
				}
				if !closes {
					t.Fatal("the connection stays open: the rest of the body would be read")
				}
			}
		})
	}
	// A socket that never acks: the notify waits its awaitAcks (longer
	// than BodyTimeout) and answers timedOut, its request not cut.
	c, _ := connectWS(t, srv, userToken(t, "slow"))
	resp := postJSON(t, srv.URL+"/api/v1/notify", pub, `{"users":["slow"],"event":"e","awaitAcks":"600ms"}`)
	var res NotifyResult
	decodeJSON(t, resp, &res)
	if resp.StatusCode != 200 || res.Delivered != 1 || res.TimedOut != 1 {
		t.Fatalf("notify awaiting acks: %d %+v", resp.StatusCode, res)
	}
	expectMessage(t, c, "e")
}

// TestBodyTimeoutConfig: 10 s by default, never negative.
func TestBodyTimeoutConfig(t *testing.T) {
	if _, err := newNoPanic(Config{JWTSecret: testSecret, BodyTimeout: -time.Second}); err == nil {
		t.Error("a negative BodyTimeout accepted")
	}
	rt, err := New(Config{JWTSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(context.Background())
	if rt.cfg.BodyTimeout != 10*time.Second {
		t.Fatalf("default BodyTimeout %v", rt.cfg.BodyTimeout)
	}
}
