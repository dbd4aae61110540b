package realtime

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"
)

// Strict inputs (PROTOCOL.md §1): every JSON body refuses unknown fields
// and wrong types with 400 bad_request naming the field, and publishes
// nothing.
func TestStrictBodies(t *testing.T) {
	_, srv := newTestServer(t, Config{})
	ws, _ := connectWS(t, srv, userToken(t, "alice"))
	rec := openStream(t, nil, recordURL(srv, "1"), userToken(t, "alice"), nil)
	pub := publisherToken(t)
	for _, tc := range []struct{ path, body, msg string }{
		{"/notify", `{"users":["alice"],"exclude_users":["bob"],"event":"x"}`, `unknown field "exclude_users"`},
		{"/notify", `{"Users":["alice"],"event":"x"}`, `unknown field "Users"`},
		{"/notify", `{"users":"alice","event":"x"}`, `field "users" must be an array of strings`},
		{"/notify", `{"users":[1],"event":"x"}`, `field "users" must be an array of strings`},
		{"/notify", `{"event":7}`, `field "event" must be a string`},
		{"/notify", `{"event":"x","awaitAcks":5}`, `field "awaitAcks" must be a string`},
		{"/notify", `{"event":"x"} {}`, `data after the JSON object`},
		{"/notify", `[]`, `not a JSON object`},
		{"/posts/1/events", `{"event":"changed","data":{},"version":2}`, `unknown field "version"`},
		{"/posts/1/events", `{"event":"changed","data":{},"etag":1}`, `field "etag" must be a string`},
	} {
		resp := postJSON(t, srv.URL+"/api/v1"+tc.path, pub, tc.body)
		b, _ := io.ReadAll(resp.Body)
		var e errorBody
		if resp.StatusCode != http.StatusBadRequest || json.Unmarshal(b, &e) != nil ||
			e.Error.Code != "bad_request" || e.Error.Message != tc.msg {
			t.Errorf("POST %s %s: %d %s, want 400 bad_request %q", tc.path, tc.body, resp.StatusCode, b, tc.msg)
		}
	}
	// Nothing was published: the next frames are those of a valid push and event.
	resp := postJSON(t, srv.URL+"/api/v1/notify", pub, `{"users":["alice"],"data":{"n":1}}`)
	var res NotifyResult
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&res) != nil || res.Delivered != 1 {
		t.Fatalf("valid notify: %d %+v", resp.StatusCode, res)
	}
	if f := readWS(t, ws); f.Type != "message" || f.Event != DefaultPushEvent || f.EnvelopeID != res.EnvelopeID {
		t.Fatalf("first push %s, want the valid one, event %q", f.raw, DefaultPushEvent)
	}
	if resp := postJSON(t, srv.URL+"/api/v1/posts/1/events", pub, `{"event":"changed","data":{"id":"1"}}`); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("valid event: %d", resp.StatusCode)
	}
	if fs := readFrames(t, rec.fr, 1); fs[0].Data != `{"id":"1"}` {
		t.Fatalf("first record frame %+v", fs[0])
	}
}

// Every WebSocket message is as strict: an error frame naming the field,
// the connection stays open and nothing changes.
func TestStrictWSMessages(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	c, _ := connectWS(t, srv, userToken(t, "alice"))
	for _, tc := range []struct{ msg, want string }{
		{`{"type":"subscribe","channels":["a"],"chanels":["b"]}`, `unknown field "chanels"`},
		{`{"type":"subscribe","channels":"a"}`, `field "channels" must be an array of strings`},
		{`{"type":"subscribe","records":[{"collection":"posts","id":"1","lastEventID":"x"}]}`, `unknown field "records[0].lastEventID"`},
		{`{"type":"subscribe","records":[{"collection":"posts","id":1}]}`, `field "records[0].id" must be a string`},
		{`{"type":"subscribe","channels":["a"],"since":{"a":1}}`, `field "since" must be an object of strings`},
		{`{"type":"ack","envelopeId":"e","result":1,"conn":"x"}`, `unknown field "conn"`},
		{`{"type":"ping","channels":["a"]}`, `unknown field "channels"`},
		{`{"type":"Subscribe","channels":["a"]}`, `unknown message type`},
		{`{"channels":["a"]}`, `field "type" must be a string: the message type`},
		{`{"type":"subscribe","channels":["a"]} x`, `a frame must be one JSON object`},
		{`[1]`, `a frame must be one JSON object`},
	} {
		sendWS(t, c, tc.msg)
		f := expectType(t, c, "error")
		if f.Code != "bad_request" || f.Message != tc.want {
			t.Errorf("%s: %s, want bad_request %q", tc.msg, f.raw, tc.want)
		}
	}
	sendWS(t, c, `{"type":"subscribe","channels":["a"]}`)
	if f := expectType(t, c, "subscribed"); len(f.Channels) != 1 || f.Channels[0] != "a" {
		t.Fatalf("subscribed %s: an earlier refused message changed the subscriptions", f.raw)
	}
	_ = rt
}

func TestTokenBucket(t *testing.T) {
	var b tokenBucket
	now := time.Unix(1000, 0)
	for i := range 10 {
		if !b.take(now, 5, 10) {
			t.Fatalf("message %d of the burst refused", i)
		}
	}
	if b.take(now, 5, 10) {
		t.Fatal("the 11th message at once accepted")
	}
	now = now.Add(200 * time.Millisecond) // one token at 5/s
	if !b.take(now, 5, 10) || b.take(now, 5, 10) {
		t.Fatal("after 200 ms: want exactly one more")
	}
	now = now.Add(time.Hour) // refilled to the burst, not beyond
	for range 10 {
		if !b.take(now, 5, 10) {
			t.Fatal("refused within the refilled burst")
		}
	}
	if b.take(now, 5, 10) {
		t.Fatal("the bucket grew beyond its burst")
	}
	if b.take(now.Add(-time.Second), 5, 10) {
		t.Fatal("a clock going back refilled the bucket")
	}
}

// A text frame that is not valid UTF-8 closes with 1007; a client over its
// message rate closes with 1008, and other connections are unaffected.
func TestWSLimits(t *testing.T) {
	_, srv := newTestServer(t, Config{WSMessageRate: 1, WSMessageBurst: 5})
	bad, _ := connectWS(t, srv, userToken(t, "alice"))
	sendWS(t, bad, "{\"type\":\"ping\",\"x\":\"\xff\"}")
	if code := closeCode(t, bad); code != closeInvalidPayload {
		t.Fatalf("invalid UTF-8: close %d, want 1007", code)
	}

	fast, _ := connectWS(t, srv, userToken(t, "alice"))
	calm, _ := connectWS(t, srv, userToken(t, "alice"))
	for range 5 { // the burst
		sendWS(t, fast, `{"type":"ping"}`)
	}
	for range 5 {
		expectType(t, fast, "pong")
	}
	for range 20 { // over the rate (the writes may fail once it closed)
		fast.SetWriteDeadline(time.Now().Add(hangGuard))
		if fast.WriteMessage(1, []byte(`{"type":"ping"}`)) != nil {
			break
		}
	}
	code := -2
	for code == -2 {
		fast.SetReadDeadline(time.Now().Add(hangGuard))
		_, b, err := fast.ReadMessage()
		switch {
		case err != nil:
			code = closeCodeOf(err)
		case string(b) != string(pongFrame):
			t.Fatalf("frame %s before the close", b)
		}
	}
	if code != closePolicyViolation {
		t.Fatalf("over the rate: close %d, want 1008", code)
	}
	sendWS(t, calm, `{"type":"ping"}`)
	expectType(t, calm, "pong")
}
