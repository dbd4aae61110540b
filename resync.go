package realtime

import (
	"encoding/json"
	"sync"
)

// The resync frames of PROTOCOL.md: one event per reason, encoded by each
// transport (an SSE stream: "event: resync" with data {"reason":…}, no id;
// a WebSocket: {"type":"resync","collection":…,"id":…,"reason":…} for a
// record, {"type":"resync","channel":…,"reason":…} for a channel).

// Resync reasons.
const (
	// reasonBufferMiss: the resume point is not (or no longer) in the
	// buffer, or events may have been missed (a broker gap, a version jump).
	reasonBufferMiss = "buffer-miss"
	// reasonBulkWrite: a write changed records it could not name (Resync).
	reasonBulkWrite = "bulk-write"
)

var (
	// resyncEvent is the frame of a resume point that cannot be served.
	resyncEvent = newResync(reasonBufferMiss)
	// bulkResync is the frame of a bulk write (Plugin.Resync).
	bulkResync = newResync(reasonBulkWrite)
)

func newResync(reason string) *Event {
	d, _ := json.Marshal(struct {
		Reason string `json:"reason"`
	}{reason})
	return &Event{Type: EventResync, Data: d}
}

// resyncReason is the reason of a resync event.
func resyncReason(ev *Event) string {
	switch ev {
	case resyncEvent:
		return reasonBufferMiss
	case bulkResync:
		return reasonBulkWrite
	}
	var d struct {
		Reason string `json:"reason"`
	}
	if json.Unmarshal(ev.Data, &d) == nil && d.Reason != "" {
		return d.Reason
	}
	return reasonBufferMiss
}

// wsRecordResync is a record's resync frame on a WebSocket.
type wsRecordResync struct {
	Type       string `json:"type"`
	Collection string `json:"collection"`
	ID         string `json:"id"`
	Reason     string `json:"reason"`
}

// wsChannelResync is a channel's resync frame on a WebSocket.
type wsChannelResync struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Reason  string `json:"reason"`
}

// channelResync is a channel's resync: on an SSE channel stream "event:
// resync" with data {"channel":…,"reason":…}, on a WebSocket
// {"type":"resync","channel":…,"reason":…} (wsPayload).
func channelResync(channel string) *Event {
	data, _ := json.Marshal(struct {
		Channel string `json:"channel"`
		Reason  string `json:"reason"`
	}{channel, reasonBufferMiss})
	return &Event{Type: EventResync, Ref: Ref{ID: channel}, Data: data, kind: kindChannelResync}
}

// Record error events: in a WebSocket's queue, the end of one record
// subscription ({"type":"error","code":…,"collection":…,"id":…}).
var (
	errorEventsMu sync.Mutex
	errorEvents   = map[string]*Event{}
)

// errorEvent returns the shared record error event of code.
func errorEvent(code string) *Event {
	errorEventsMu.Lock()
	defer errorEventsMu.Unlock()
	ev := errorEvents[code]
	if ev == nil {
		ev = &Event{Type: "error", Data: json.RawMessage(code)}
		errorEvents[code] = ev
	}
	return ev
}

// forbiddenEvent ends a record subscription its identity may no longer see.
var forbiddenEvent = errorEvent("forbidden")

// errorEventOf is the record error event of err's contract code.
func errorEventOf(err error) *Event {
	_, code, _ := statusOf(err)
	return errorEvent(code)
}
