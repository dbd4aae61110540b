package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// refEvent is an event dispatched by refParseSSE.
type refEvent struct {
	Type, Data, LastEventID string
}

// refParseSSE is a reference parser of an event stream following the WHATWG
// "event stream interpretation" algorithm
// (https://html.spec.whatwg.org/multipage/server-sent-events.html), over
// bytes (the UTF-8 decoding step is left out: it applies to both sides of
// the comparisons alike). It returns the dispatched events; an event not
// terminated by a blank line before the end is discarded, as the spec says.
func refParseSSE(stream []byte) []refEvent {
	var (
		out           []refEvent
		data, evType  strings.Builder
		lastID, idBuf string
	)
	// Strip one leading BOM.
	stream = bytes.TrimPrefix(stream, []byte("\xEF\xBB\xBF"))
	for len(stream) > 0 {
		// Lines end in CRLF, LF or CR.
		i := bytes.IndexAny(stream, "\r\n")
		if i < 0 {
			break // an unterminated last line is never processed
		}
		line := string(stream[:i])
		if stream[i] == '\r' && i+1 < len(stream) && stream[i+1] == '\n' {
			i++
		}
		stream = stream[i+1:]

		if line == "" { // dispatch
			lastID = idBuf
			if data.Len() == 0 {
				evType.Reset()
				continue
			}
			d := data.String()
			d = strings.TrimSuffix(d, "\n")
			typ := evType.String()
			if typ == "" {
				typ = "message"
			}
			out = append(out, refEvent{Type: typ, Data: d, LastEventID: lastID})
			data.Reset()
			evType.Reset()
			continue
		}
		if line[0] == ':' {
			continue // comment
		}
		name, value := line, ""
		if j := strings.IndexByte(line, ':'); j >= 0 {
			name, value = line[:j], line[j+1:]
			value = strings.TrimPrefix(value, " ")
		}
		switch name {
		case "event":
			evType.Reset()
			evType.WriteString(value)
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
		case "id":
			if !strings.ContainsRune(value, 0) {
				idBuf = value
			}
		case "retry":
			// ignored here
		}
	}
	return out
}

// normalizeBreaks replaces CRLF and CR by LF.
func normalizeBreaks(b []byte) string {
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}

// FuzzAppendSSEFrame: the encoder's output, parsed by a conforming SSE
// parser, is exactly one event carrying the data (line breaks normalised to
// LF), the event type and the id; every line it writes is a known field (no
// byte of data can start a field of its own); an event or id with CR, LF or
// NUL is refused and dst left as it was.
func FuzzAppendSSEFrame(f *testing.F) {
	seeds := []struct {
		event, id string
		data      []byte
	}{
		{"changed", `"abc"`, []byte(`{"id":"1"}`)},
		{"", "", nil},
		{"snapshot", "", []byte("a\nb")},
		{"", `W/"x"`, []byte("a\rb\r\nc\n")},
		{"changed", `"e"`, []byte("x\n\nevent: deleted\nid: x\ndata: evil")},
		{"changed", `"e"`, []byte("x\r\revent: deleted\rid: x\rdata: evil")},
		{"changed", `"e"`, []byte("x\r\n\r\nevent: deleted\r\nid: x\r\ndata: evil\r\n")},
		{"changed", `"e"`, []byte("\n\r\r\n\n")},
		{"bad\nevent", `"e"`, []byte("{}")},
		{"changed", "bad\rid", []byte("{}")},
		{"changed", "nul\x00", []byte("{}")},
		{" lead", " id", []byte(" data\x00\xff\xfe")},
		{"ü", "é", []byte("\u2028\u0085\ufeff")},
		{"changed", `"e"`, []byte(": comment\nretry: 1\n:\n")},
	}
	for _, s := range seeds {
		f.Add(s.event, s.id, s.data)
	}
	f.Fuzz(func(t *testing.T, event, id string, data []byte) {
		prefix := []byte("prefix")
		out, err := AppendSSEFrame(append([]byte(nil), prefix...), event, id, data)
		bad := strings.ContainsAny(event, "\r\n\x00") || strings.ContainsAny(id, "\r\n\x00")
		if bad {
			if err == nil {
				t.Fatalf("event %q id %q: no error, wrote %q", event, id, out)
			}
			if !bytes.Equal(out, prefix) {
				t.Fatalf("refused frame changed dst to %q", out)
			}
			return
		}
		if err != nil {
			t.Fatalf("event %q id %q: %v", event, id, err)
		}
		if !bytes.HasPrefix(out, prefix) {
			t.Fatalf("dst prefix lost: %q", out)
		}
		frame := out[len(prefix):]
		if !bytes.HasSuffix(frame, []byte("\n\n")) {
			t.Fatalf("frame does not end with a blank line: %q", frame)
		}
		// Every line is a field the encoder means to write.
		lines := strings.Split(string(frame[:len(frame)-2]), "\n")
		for i, l := range lines {
			switch {
			case strings.HasPrefix(l, "data: "):
			case i == 0 && event != "" && l == "event: "+event:
			case i <= 1 && id != "" && l == "id: "+id:
			default:
				t.Fatalf("line %d %q is not a field of the frame %q", i, l, frame)
			}
		}
		evs := refParseSSE(frame)
		if len(evs) != 1 {
			t.Fatalf("parsed %d events from %q: %+v", len(evs), frame, evs)
		}
		wantType := event
		if wantType == "" {
			wantType = "message"
		}
		want := refEvent{Type: wantType, Data: normalizeBreaks(data), LastEventID: id}
		if evs[0] != want {
			t.Fatalf("parsed %+v from %q, want %+v", evs[0], frame, want)
		}
	})
}

// bufModel is what a Buffer must be consistent with: every event appended
// to each stream since the stream was last invalidated.
type bufModel struct {
	hist    map[StreamKey][]Entry // since the last Invalidate
	lastSeq map[StreamKey]uint64  // highest Seq ever returned, across Invalidate
	byPtr   map[*Event]StreamKey
}

// FuzzBufferSince drives a small MemoryBuffer with a random program of
// Append, Since, Invalidate and clock steps and checks every answer against
// a model of everything appended:
//   - Seq strictly increases per stream, across Invalidate and eviction (a
//     live subscriber drops positions it has passed: a reused one is a
//     silent loss);
//   - Found: lastID is the event at Seq, and Events are exactly the events
//     appended after it, in order (no gap, no stranger);
//   - UpToDate only when lastID is the newest event of the stream;
//   - with no memory pressure the answer is exactly the model's (count and
//     age windows, ambiguous or evicted points Unknown); under pressure
//     Unknown is always allowed.
func FuzzBufferSince(f *testing.F) {
	f.Add([]byte{0, 0, 0x00, 0x10, 0x02, 0x20, 0x42, 0x11})
	f.Add([]byte{1, 1, 0x00, 0x01, 0x02, 0x00, 0x42, 0x10, 0x03, 0x00, 0x00, 0x42, 0x10})
	f.Add([]byte{2, 0, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x40, 0x03, 0x42, 0x01, 0x42, 0x11})
	f.Add([]byte{3, 2, 0x00, 0x00, 0x04, 0x01, 0x08, 0x02, 0x0c, 0x03, 0x42, 0x00, 0x42, 0x04})
	f.Add([]byte{0, 5, 0x03, 0x07, 0x00, 0x00, 0x07, 0x42, 0x00, 0x03, 0x00, 0x00, 0x42, 0x00})
	f.Add([]byte{1, 0, 0x00, 0x00, 0x00, 0x04, 0x00, 0x08, 0x00, 0x0c, 0x00, 0x00, 0x42, 0x04, 0x42, 0x08})
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) < 2 {
			return
		}
		size := int(prog[0]%4) + 1
		pressure := prog[1]%2 == 1
		maxBytes := int64(1 << 30)
		if pressure {
			maxBytes = 250 + int64(prog[1])*8 // from under one event to a few
		}
		prog = prog[2:]
		const maxAge = 10 * time.Second
		now := time.Unix(1_700_000_000, 0)
		b := NewMemoryBuffer(MemoryBufferConfig{Size: size, MaxAge: maxAge, MaxBytes: maxBytes, Now: func() time.Time { return now }})
		keys := []StreamKey{
			{Tenant: "t", Collection: "c", ID: "1"},
			{Tenant: "t", Collection: "c", ID: "2"},
			{Tenant: "t", Collection: "c"},
			{Tenant: "t", Collection: "d", ID: "1"},
		}
		etags := []string{`"a"`, `"b"`, `"c"`, `"d"`}
		m := bufModel{hist: map[StreamKey][]Entry{}, lastSeq: map[StreamKey]uint64{}, byPtr: map[*Event]StreamKey{}}
		ctx := context.Background()
		next := func() byte {
			if len(prog) == 0 {
				return 0
			}
			v := prog[0]
			prog = prog[1:]
			return v
		}
		for step := 0; len(prog) > 0; step++ {
			op := next()
			arg := next()
			key := keys[int(arg)%len(keys)]
			switch op % 4 {
			case 0, 1: // Append
				etag := etags[int(arg>>2)%len(etags)]
				ev := &Event{Type: EventChanged, Ref: key, ETag: etag, Data: json.RawMessage(`{}`), Time: now}
				seq, err := b.Append(ctx, key, ev)
				if err != nil {
					t.Fatalf("step %d: Append: %v", step, err)
				}
				if seq <= m.lastSeq[key] {
					t.Fatalf("step %d: Append to %v returned Seq %d, not above %d returned before: a live subscriber would drop it", step, key, seq, m.lastSeq[key])
				}
				m.lastSeq[key] = seq
				m.hist[key] = append(m.hist[key], Entry{Seq: seq, Event: ev})
				m.byPtr[ev] = key
			case 2: // Since
				lastID := ""
				if k := int(arg>>2) % (len(etags) + 2); k < len(etags) {
					lastID = etags[k]
				} else if k == len(etags) {
					lastID = `"never"`
				}
				lk, err := b.Since(ctx, key, lastID)
				if err != nil {
					t.Fatalf("step %d: Since: %v", step, err)
				}
				checkLookup(t, step, m, key, lastID, lk, size, now.Add(-maxAge), pressure)
			case 3:
				if arg&1 == 0 { // Invalidate a collection
					coll := []string{"c", "d"}[int(arg>>1)%2]
					if err := b.Invalidate(ctx, "t", coll); err != nil {
						t.Fatalf("step %d: Invalidate: %v", step, err)
					}
					for _, k := range keys {
						if k.Collection == coll {
							delete(m.hist, k)
						}
					}
				} else { // the clock moves on
					now = now.Add(time.Duration(arg>>1) * time.Second / 4)
				}
			}
		}
	})
}

// checkLookup checks one Since answer against the model.
func checkLookup(t *testing.T, step int, m bufModel, key StreamKey, lastID string, lk Lookup, size int, cutoff time.Time, pressure bool) {
	t.Helper()
	hist := m.hist[key]
	where := fmt.Sprintf("step %d: Since(%v, %q) = %v seq %d (%d events)", step, key, lastID, lk.Status, lk.Seq, len(lk.Events))
	for _, e := range lk.Events {
		if k, ok := m.byPtr[e.Event]; !ok || k != key {
			t.Fatalf("%s: returned an event never appended to this stream: %+v", where, e.Event)
		}
	}
	// The exact answer when nothing but the count and age bounds evicted.
	var window []Entry
	if len(hist) > 0 {
		window = hist[max(0, len(hist)-size):]
		for len(window) > 0 && window[0].Event.Time.Before(cutoff) {
			window = window[1:]
		}
	}
	exact := Lookup{Status: LookupUnknown}
	if lastID != "" && len(hist) > 0 {
		head := hist[len(hist)-1]
		at, n := -1, 0
		for i, e := range window {
			if e.Event.ETag == lastID {
				at, n = i, n+1
			}
		}
		switch {
		case key.ID != "" && head.Event.ETag == lastID:
			exact = Lookup{Status: LookupUpToDate, Seq: head.Seq}
		case n != 1:
		case at == len(window)-1:
			exact = Lookup{Status: LookupUpToDate, Seq: window[at].Seq}
		default:
			exact = Lookup{Status: LookupFound, Seq: window[at].Seq, Events: window[at+1:]}
		}
	}
	switch lk.Status {
	case LookupUnknown:
		if len(lk.Events) != 0 {
			t.Fatalf("%s: unknown with events", where)
		}
		if !pressure && exact.Status != LookupUnknown {
			t.Fatalf("%s: want %v seq %d", where, exact.Status, exact.Seq)
		}
	case LookupUpToDate:
		if len(hist) == 0 || hist[len(hist)-1].Event.ETag != lastID || hist[len(hist)-1].Seq != lk.Seq {
			t.Fatalf("%s: not the newest event (history %s)", where, fmtEntries(hist))
		}
		if !pressure && exact.Status != LookupUpToDate {
			t.Fatalf("%s: want %v", where, exact.Status)
		}
	case LookupFound:
		at := -1
		for i, e := range hist {
			if e.Seq == lk.Seq {
				at = i
			}
		}
		if at < 0 || hist[at].Event.ETag != lastID {
			t.Fatalf("%s: Seq is not an appended event with that ETag (history %s)", where, fmtEntries(hist))
		}
		want := hist[at+1:]
		if len(want) == 0 {
			t.Fatalf("%s: found with nothing after it is up to date", where)
		}
		if len(lk.Events) != len(want) {
			t.Fatalf("%s: got %s, want every later event %s", where, fmtEntries(lk.Events), fmtEntries(want))
		}
		for i := range want {
			if lk.Events[i] != want[i] {
				t.Fatalf("%s: got %s, want %s", where, fmtEntries(lk.Events), fmtEntries(want))
			}
			if lk.Events[i].Event.ETag == lastID {
				t.Fatalf("%s: ambiguous resume point reported found", where)
			}
		}
		if !pressure && (exact.Status != LookupFound || exact.Seq != lk.Seq) {
			t.Fatalf("%s: want %v seq %d", where, exact.Status, exact.Seq)
		}
	default:
		t.Fatalf("%s: bad status", where)
	}
}

func fmtEntries(es []Entry) string {
	var sb strings.Builder
	for _, e := range es {
		fmt.Fprintf(&sb, "[%d %s] ", e.Seq, e.Event.ETag)
	}
	return sb.String()
}
