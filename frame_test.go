package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	sse "github.com/tmaxmax/go-sse"
)

// update rewrites the golden files: go test -run TestSSEFrameGolden -update .
var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// frameCases are the frames kept as golden files in testdata/frames.
var frameCases = []struct {
	name, event, id, data string
}{
	{"plain_json", "changed", `"k3Jd9w"`, `{"id":"42","title":"hello"}`},
	{"no_event_no_id", "", "", `{"a":1}`},
	{"lf", "changed", `"e1"`, "line1\nline2"},
	{"cr", "changed", `"e1"`, "line1\rline2"},
	{"crlf", "changed", `"e1"`, "line1\r\nline2"},
	{"mixed_breaks", "changed", `"e1"`, "a\rb\nc\r\nd\n\re"},
	{"trailing_lf", "changed", `"e1"`, "a\n"},
	{"trailing_cr", "changed", `"e1"`, "a\r"},
	{"trailing_crlf", "changed", `"e1"`, "a\r\n"},
	{"leading_and_blank_lines", "changed", `"e1"`, "\n\na\r\n\r\nb\r\r"},
	{"only_breaks", "changed", `"e1"`, "\r\n\n\r"},
	{"empty_data", "deleted", `"tomb"`, ""},
	{"unicode", "snapshot", `W/"ü-✓"`, "{\"t\":\"héllo 🌍 \u2028 \u0085 \ufeff\"}"},
	{"field_lookalikes", "changed", `"e1"`, ": not a comment\ndata: x\nid: y\nretry: 1\nevent"},
	{"injection", "changed", `"e1"`, "x\n\nevent: deleted\nid: x\ndata: evil"},
}

// TestSSEFrameGolden: AppendSSEFrame writes exactly the golden bytes (and
// Event.SSEFrame the same), and a conforming parser reads each back as one
// event with its type, id and data (line breaks as LF).
func TestSSEFrameGolden(t *testing.T) {
	for _, tc := range frameCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AppendSSEFrame(nil, tc.event, tc.id, []byte(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "frames", tc.name+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("frame differs from %s\ngot:  %q\nwant: %q", path, got, want)
			}
			if ev := (&Event{Type: tc.event, ETag: tc.id, Data: json.RawMessage(tc.data)}); !bytes.Equal(ev.SSEFrame(), got) {
				t.Errorf("Event.SSEFrame = %q, want %q", ev.SSEFrame(), got)
			}
			typ := tc.event
			if typ == "" {
				typ = "message"
			}
			wantEv := refEvent{Type: typ, Data: normalizeBreaks([]byte(tc.data)), LastEventID: tc.id}
			if evs := refParseSSE(got); len(evs) != 1 || evs[0] != wantEv {
				t.Errorf("parsed %+v, want %+v", evs, wantEv)
			}
			// go-sse's parser agrees.
			var n int
			for e, err := range sse.Read(bytes.NewReader(got), nil) {
				if err != nil {
					t.Fatal(err)
				}
				n++
				if e.Type != tc.event || e.LastEventID != tc.id || e.Data != wantEv.Data {
					t.Errorf("go-sse read %+v", e)
				}
			}
			if n != 1 {
				t.Errorf("go-sse read %d events", n)
			}
		})
	}
}

// TestSSEFrameRefusesFields: an event or id with CR, LF or NUL is refused
// with an error and dst is returned unchanged.
func TestSSEFrameRefusesFields(t *testing.T) {
	for _, bad := range []string{"a\rb", "a\nb", "a\r\nb", "a\x00b", "\n", "x\n\nevent: deleted"} {
		for _, field := range []string{"event", "id"} {
			event, id := "changed", `"e1"`
			if field == "event" {
				event = bad
			} else {
				id = bad
			}
			dst := []byte("kept")
			out, err := AppendSSEFrame(dst, event, id, []byte(`{}`))
			if err == nil || !errors.Is(err, errFrameField) {
				t.Errorf("%s %q: err %v, want a refusal", field, bad, err)
			}
			if string(out) != "kept" {
				t.Errorf("%s %q: dst became %q", field, bad, out)
			}
		}
	}
}

// injection is the text an attacker would need a raw line break to turn
// into frames of its own.
const injection = "event: deleted%sid: x%sdata: evil"

var breakFlavours = map[string]string{"LF": "\n", "CR": "\r", "CRLF": "\r\n", "mixed": "\r\n\n\r"}

// injectionPayloads returns, per line-break flavour, a string with the
// injection and raw JSON whose white space is those line breaks.
func injectionPayloads() (strs map[string]string, raws map[string]string) {
	strs, raws = map[string]string{}, map[string]string{}
	for name, br := range breakFlavours {
		strs[name] = "x" + br + br + strings.ReplaceAll(injection, "%s", br) + br + br
		raws[name] = "{" + br + br + `"event": "deleted",` + br + `"id": "x",` + br + br + `"data": "evil"` + br + "}"
	}
	return strs, raws
}

// TestFrameInjection: record data carrying line breaks followed by SSE
// field lines, published through the Go API and through the REST endpoint
// in every line-break flavour, reaches a real SSE parser (go-sse's
// sse.Read) as exactly the published events, with their ids and their data
// intact; no deleted event, no id "x", no "evil" data.
func TestFrameInjection(t *testing.T) {
	rt, srv := newTestServer(t, Config{})
	tok := userToken(t, "reader")
	pubTok := publisherToken(t)
	recResp := getWith(t, srv.URL+"/api/v1/posts/1/subscribe", tok, nil)
	colResp := getWith(t, srv.URL+"/api/v1/posts/subscribe", tok, nil)
	for _, r := range []*http.Response{recResp, colResp} {
		if r.StatusCode != 200 {
			t.Fatalf("subscribe: %d", r.StatusCode)
		}
	}
	type want struct{ id, data string }
	var wants []want
	ctx := context.Background()
	strs, raws := injectionPayloads()
	for _, name := range []string{"LF", "CR", "CRLF", "mixed"} {
		title := strs[name]
		// Go API, a record whose field holds the text.
		rec := map[string]string{"id": "1", "title": title}
		etag, err := rt.Changed(ctx, "posts", "1", rec)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(rec)
		wants = append(wants, want{etag, string(b)})
		// Go API, raw JSON with the line breaks as white space.
		etag, err = rt.Publish(ctx, Publication{Collection: "posts", ID: "1", Event: EventChanged, Data: json.RawMessage(raws[name])})
		if err != nil {
			t.Fatal(err)
		}
		wants = append(wants, want{etag, `{"event":"deleted","id":"x","data":"evil"}`})
		// REST, the text in a JSON string.
		body, _ := json.Marshal(map[string]any{"event": "changed", "data": rec})
		etag = publishAnswer(t, postJSON(t, srv.URL+"/api/v1/posts/1/events", pubTok, string(body)))
		wants = append(wants, want{etag, string(b)})
		// REST, raw line breaks as white space in the body.
		etag = publishAnswer(t, postJSON(t, srv.URL+"/api/v1/posts/1/events", pubTok, `{"event":"changed","data":`+raws[name]+`}`))
		wants = append(wants, want{etag, `{"event":"deleted","id":"x","data":"evil"}`})
	}
	end, err := rt.Changed(ctx, "posts", "1", map[string]string{"id": "1", "title": "end"})
	if err != nil {
		t.Fatal(err)
	}
	wants = append(wants, want{end, `{"id":"1","title":"end"}`})

	for name, resp := range map[string]*http.Response{"record": recResp, "collection": colResp} {
		guard := timeGuard(resp.Body)
		var got []sse.Event
		for e, err := range sse.Read(resp.Body, nil) {
			if err != nil {
				t.Fatalf("%s stream: %v after %d events", name, err, len(got))
			}
			got = append(got, e)
			if e.LastEventID == end {
				break
			}
		}
		guard.Stop()
		if len(got) != len(wants) {
			t.Fatalf("%s stream: %d events, want %d: %+v", name, len(got), len(wants), got)
		}
		for i, w := range wants {
			e := got[i]
			if e.Type != EventChanged || e.LastEventID != w.id || e.Data != w.data {
				t.Errorf("%s stream event %d = %+v, want changed %s %s", name, i, e, w.id, w.data)
			}
		}
		// The text survives the trip byte for byte.
		var rec map[string]string
		if err := json.Unmarshal([]byte(got[0].Data), &rec); err != nil || rec["title"] != strs["LF"] {
			t.Errorf("%s stream: title %q, want %q", name, rec["title"], strs["LF"])
		}
	}
}
