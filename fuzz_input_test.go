package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"testing"
)

// FuzzPublishBody feeds arbitrary bodies through the publish endpoint's
// parsing and validation: every input is either refused with ErrBadRequest
// (publishing nothing) or becomes an event whose frame is one well-formed
// SSE event carrying the event's own type and ETag.
func FuzzPublishBody(f *testing.F) {
	for _, s := range []string{
		`{"event":"changed","data":{"id":"1","t":"x"}}`,
		`{"event":"deleted"}`,
		`{"event":"snapshot","data":{"a":[1,2]},"etag":"\"v1\""}`,
		`{"event":"changed","data":null}`,
		`{"event":"changed","data":{"t":"a\nb"},"etag":"\"a\r\nb\""}`,
		`{"event":"resync","data":{}}`,
		`not json`,
		`{"event":"deleted","data":{"id":"9","private":true}}`,
	} {
		f.Add([]byte(s))
	}
	rt, err := New(Config{JWTSecret: testSecret, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = rt.Close(context.Background()) })
	f.Fuzz(func(t *testing.T, body []byte) {
		var req publishRequest
		if json.Unmarshal(body, &req) != nil {
			return // answered 400 before validation
		}
		ev, err := rt.newEvent(context.Background(), Publication{
			Tenant: "t", Collection: "posts", ID: "1", Event: req.Event, Data: req.Data, ETag: req.ETag,
		})
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("refusal %v does not wrap ErrBadRequest", err)
			}
			return
		}
		frame := ev.SSEFrame()
		got := refParseSSE(frame)
		if len(got) != 1 || got[0].Type != ev.Type || got[0].LastEventID != ev.ETag {
			t.Fatalf("frame %q parses as %+v, want one %s event with id %s", frame, got, ev.Type, ev.ETag)
		}
		if ev.Type == EventDeleted && got[0].Data != `{"id":"1"}` {
			t.Fatalf("deleted frame data %q leaks more than the id", got[0].Data)
		}
	})
}

// FuzzCredentials feeds arbitrary credentials through every source the
// plugin reads: none is accepted (they are not signed with the secret) and
// every refusal wraps ErrUnauthorized.
func FuzzCredentials(f *testing.F) {
	good := mintToken(f, testSecret, validClaims("u"))
	for _, s := range []string{"", "Bearer ", "Bearer x.y.z", "bearer " + good[:len(good)-3] + "abc", "Basic dTpw", good + "x"} {
		f.Add(s, s)
	}
	rt, err := New(Config{JWTSecret: testSecret, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = rt.Close(context.Background()) })
	f.Fuzz(func(t *testing.T, header, query string) {
		r, err := http.NewRequest(http.MethodGet, "http://x/api/v1/posts/1/subscribe", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Authorization", header)
		q := r.URL.Query()
		q.Set("token", query)
		r.URL.RawQuery = q.Encode()
		if _, err := rt.auth.identityOf(r); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("credentials %q / %q: err %v, want ErrUnauthorized", header, query, err)
		}
	})
}

// FuzzWSMessage feeds arbitrary frames through the WebSocket client
// message parser: each is refused with ErrBadRequest and a message, or is
// a known type whose every key (exactly spelt) belongs to that type, with
// its required field set.
func FuzzWSMessage(f *testing.F) {
	for _, s := range []string{
		`ping`, ` PiNg `, `{"type":"ping"}`,
		`{"type":"subscribe","channels":["orders.*"],"filters":[{"type":"a","n":1}]}`,
		`{"type":"subscribe","channels":["a"],"since":{"a":"e1"}}`,
		`{"type":"subscribe","records":[{"collection":"posts","id":"1","lastEventId":"\"x\""}]}`,
		`{"type":"unsubscribe"}`,
		`{"type":"ack","envelopeId":"e","result":{"ok":true}}`,
		`{"type":"refresh","token":"a.b.c"}`,
		`{"type":"publish","channel":"chat.room1","event":"msg","data":[1]}`,
		`{"type":"subscribe","Channels":["a"]}`,
		`{"type":"ack"}`, `{}`, `[]`, `{"type":1}`, `{"type":"subscribe","records":[{"id":1}]}`,
	} {
		f.Add([]byte(s))
	}
	allowed := map[string][]string{
		wsTypePing:        {"type"},
		wsTypeSubscribe:   {"type", "channels", "filters", "records", "since"},
		wsTypeUnsubscribe: {"type", "channels", "filters", "records", "since"},
		wsTypeAck:         {"type", "envelopeId", "result"},
		wsTypeRefresh:     {"type", "token"},
		wsTypePublish:     {"type", "channel", "event", "data"},
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := parseWSMessage(raw)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) || publicMessage(err) == "" || publicMessage(err) == "bad request" {
				t.Fatalf("refusal %v: want ErrBadRequest with a message", err)
			}
			return
		}
		keys, ok := allowed[m.Type]
		if !ok {
			t.Fatalf("accepted type %q", m.Type)
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) == nil {
			for k := range obj {
				if !slices.Contains(keys, k) {
					t.Fatalf("%s accepted with key %q", raw, k)
				}
			}
		} else if m.Type != wsTypePing {
			t.Fatalf("%q accepted as %s without being a JSON object", raw, m.Type)
		}
		switch {
		case m.Type == wsTypeAck && m.EnvelopeID == "",
			m.Type == wsTypeRefresh && m.Token == "",
			m.Type == wsTypePublish && m.Channel == "":
			t.Fatalf("%s accepted without its required field", raw)
		}
	})
}
