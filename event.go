package realtime

import (
	"encoding/json"
	"sync"
	"time"
)

// Event types of the wire contract.
const (
	EventSnapshot = "snapshot"
	EventChanged  = "changed"
	EventDeleted  = "deleted"
	EventResync   = "resync"
)

// Ref addresses a record: tenants never see each other's records.
type Ref struct {
	Tenant     string
	Collection string
	ID         string
}

// StreamKey names one ordered stream of events: a record's (ID set) or a
// collection's (ID empty).
type StreamKey = Ref

// collectionKey is the key of the collection stream a record belongs to.
func (r Ref) collectionKey() Ref { return Ref{Tenant: r.Tenant, Collection: r.Collection} }

// Event is one record event. Its fields are immutable once published; the
// encoded frames are computed once and shared by every subscriber.
type Event struct {
	// Type is EventSnapshot, EventChanged, EventDeleted or EventResync.
	Type string
	// Ref is the record the event is about.
	Ref Ref
	// ETag is the record version's ETag (the tombstone's for deleted); empty for resync.
	ETag string
	// Data is the event's compact JSON.
	Data json.RawMessage
	// Prior is, for a deleted event, the record as it was before the delete
	// when the publisher knew it. It is never sent: the Authorizer sees it as
	// Access.Record, so a deletion is shown only to those who could see the
	// record.
	Prior json.RawMessage
	// Time is when the event was published.
	Time time.Time
	// Version is the event's position in its record's order: 1, 2, 3, …,
	// consecutive per record, in commit order, assigned where the record's
	// writes are serialized (Publication.Version). 0 when the publisher gave
	// none: such events are ordered by their stream alone.
	Version uint64

	kind eventKind

	sseOnce sync.Once
	sse     []byte
	wsOnce  sync.Once
	ws      []byte
}

// eventKind says what an Event in a connection's queue stands for, so that
// each transport encodes it (sse.go, ws_transport.go).
type eventKind uint8

const (
	kindRecord        eventKind = iota // a record event (or its resync, keepalive)
	kindPush                           // a push (§7): Data is its envelope, Type its event name, ETag its envelopeId
	kindAnswer                         // a WebSocket message: Data as is
	kindChannelResync                  // a channel's resync: Ref.ID names the channel, Data the SSE data
)

// wsRecordFrame is a record event on a WebSocket (PROTOCOL.md §6).
type wsRecordFrame struct {
	Type       string          `json:"type"`
	Collection string          `json:"collection"`
	ID         string          `json:"id"`
	ETag       string          `json:"etag"`
	Data       json.RawMessage `json:"data"`
}

// WSFrame returns the event's WebSocket frame
// {"type":…,"collection":…,"id":…,"etag":…,"data":…}, encoded once and
// shared by every WebSocket following the record.
func (e *Event) WSFrame() []byte {
	e.wsOnce.Do(func() {
		e.ws, _ = json.Marshal(wsRecordFrame{Type: e.Type, Collection: e.Ref.Collection, ID: e.Ref.ID, ETag: e.ETag, Data: e.Data})
	})
	return e.ws
}

// SSEFrame returns the event's SSE frame, encoded once.
func (e *Event) SSEFrame() []byte {
	e.sseOnce.Do(func() {
		// Type and ETag were validated at publish time; an invalid one yields
		// no frame rather than a broken stream.
		e.sse, _ = AppendSSEFrame(make([]byte, 0, len(e.Data)+len(e.ETag)+32), e.Type, e.ETag, e.Data)
	})
	return e.sse
}

// size estimates the event's memory for the buffer's cap.
func (e *Event) size() int64 {
	return int64(2*len(e.Data) + len(e.Prior) + 2*len(e.ETag) + len(e.Ref.Tenant) + len(e.Ref.Collection) + len(e.Ref.ID) + 200)
}

// keepaliveEvent marks a heartbeat in a subscriber's queue.
var keepaliveEvent = &Event{Type: "keepalive", sse: keepaliveFrame}

func init() { keepaliveEvent.sseOnce.Do(func() {}) }
