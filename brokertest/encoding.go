package brokertest

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
)

// testEventEncoding checks MarshalEvent / UnmarshalEvent, the encoding of
// events between nodes: the decoded event has byte-identical frames, the
// same Prior, Ref, ETag and Time.
func testEventEncoding(t *testing.T) {
	at := time.Date(2026, 11, 22, 12, 34, 56, 789012345, time.FixedZone("X", 3600))
	rec := realtime.Ref{Tenant: "t1", Collection: "posts", ID: "42"}
	for _, tc := range []struct {
		name string
		ev   *realtime.Event
	}{
		{"changed", &realtime.Event{Type: realtime.EventChanged, Ref: rec, ETag: `"v2"`, Data: json.RawMessage(`{"id":"42","title":"hello"}`)}},
		{"snapshot", &realtime.Event{Type: realtime.EventSnapshot, Ref: rec, ETag: `"v1"`, Data: json.RawMessage(`{"id":"42","n":[1,2.5,null,true]}`)}},
		{"deleted with Prior", &realtime.Event{Type: realtime.EventDeleted, Ref: rec, ETag: `"tomb-1"`, Data: json.RawMessage(`{"id":"42"}`), Prior: json.RawMessage(`{"id":"42","owner":"u1"}`)}},
		{"deleted without Prior", &realtime.Event{Type: realtime.EventDeleted, Ref: rec, ETag: `"tomb-2"`, Data: json.RawMessage(`{"id":"42"}`)}},
		{"weak ETag", &realtime.Event{Type: realtime.EventChanged, Ref: rec, ETag: `W/"v3"`, Data: json.RawMessage(`{}`)}},
		{"unicode", &realtime.Event{Type: realtime.EventChanged, Ref: realtime.Ref{Tenant: "tenant-é", Collection: "posts", ID: "日本"}, ETag: `"ü"`,
			Data: json.RawMessage(`{"title":"Zoë 日本語 🚀","esc":"\u00e9\ud83d\ude80"}`), Prior: json.RawMessage(`{"title":"Zoë"}`)}},
		{"HTML characters", &realtime.Event{Type: realtime.EventChanged, Ref: rec, ETag: `"h"`, Data: json.RawMessage(`{"html":"<b>a & b</b>"}`), Prior: json.RawMessage(`{"html":"<i>"}`)}},
		{"line and paragraph separators", &realtime.Event{Type: realtime.EventChanged, Ref: rec, ETag: `"ls"`, Data: json.RawMessage("{\"s\":\"a\u2028b\u2029c\"}")}},
		{"escaped newlines", &realtime.Event{Type: realtime.EventChanged, Ref: rec, ETag: `"nl"`, Data: json.RawMessage(`{"s":"a\nb\r\nc"}`)}},
		{"empty data", &realtime.Event{Type: realtime.EventChanged, Ref: rec, ETag: `"e"`}},
		{"empty object data", &realtime.Event{Type: realtime.EventChanged, Ref: rec, ETag: `"o"`, Data: json.RawMessage(`{}`)}},
		{"collection ref", &realtime.Event{Type: realtime.EventResync, Ref: realtime.Ref{Tenant: "t1", Collection: "posts"}, Data: json.RawMessage(`{"reason":"buffer-miss"}`)}},
		{"version", &realtime.Event{Type: realtime.EventChanged, Ref: rec, ETag: `"v9"`, Data: json.RawMessage(`{"id":"42"}`), Version: 9}},
		{"largest version", &realtime.Event{Type: realtime.EventChanged, Ref: rec, ETag: `"vmax"`, Data: json.RawMessage(`{}`), Version: 1<<64 - 1}},
		{"default tenant", &realtime.Event{Type: realtime.EventChanged, Ref: realtime.Ref{Tenant: realtime.DefaultTenant, Collection: "c", ID: "1"}, ETag: `"d"`, Data: json.RawMessage(`[1]`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := tc.ev
			ev.Time = at
			if len(ev.SSEFrame()) == 0 {
				t.Fatal("test event without an SSE frame")
			}
			b, err := realtime.MarshalEvent(ev)
			if err != nil {
				t.Fatalf("MarshalEvent: %v", err)
			}
			got, err := realtime.UnmarshalEvent(b)
			if err != nil {
				t.Fatalf("UnmarshalEvent(%s): %v", b, err)
			}
			if d := diffEvent(got, ev); d != "" {
				t.Fatalf("round trip through %s: %s", b, d)
			}
			if got.Time.UnixNano() != at.UnixNano() {
				t.Fatalf("Time %v, want %v", got.Time, at)
			}
		})
	}

	t.Run("Rejects", func(t *testing.T) {
		for _, in := range []string{`{"c":"posts","ts":1}`, `{"t":"changed","ts":1}`, `{"t":"changed","c":""}`} {
			if _, err := realtime.UnmarshalEvent([]byte(in)); !errors.Is(err, realtime.ErrBadRequest) {
				t.Errorf("UnmarshalEvent(%s): %v, want ErrBadRequest", in, err)
			}
		}
		for _, in := range []string{``, `{`, `[]`, `not json`} {
			if _, err := realtime.UnmarshalEvent([]byte(in)); err == nil {
				t.Errorf("UnmarshalEvent(%q) accepted", in)
			}
		}
	})
}
