package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Broker connects the nodes (app instances) of one app, so that every
// promise of the wire contract holds across them (PROTOCOL.md §9):
// Config.Broker. Without one the plugin is a single node.
//
// A Broker is the Buffer every node shares, and carries events and
// messages between nodes:
//
//   - Append stores an event at the end of its stream, assigns its
//     position and sends it to every node watching the stream, in one step:
//     every node sees a stream's events in one order. The appending node
//     delivers its own events only when they come back through Node.Deliver.
//   - A node watches the streams its subscribers follow (Watch, Unwatch)
//     and listens to the topics its connections need (Listen, Unlisten),
//     so that no node receives every event.
//   - Publish sends a message on a topic (user pushes, delivery counts,
//     acks) and reports how many nodes received it.
//
// Implementations must be safe for concurrent use. Every method that
// cannot reach the shared engine returns an error: the plugin turns it
// into ErrUnavailable (503), never into a silent success.
//
// Rules every implementation keeps (package brokertest checks them):
//   - Watch and Listen counts are per node; a Watch or Listen that fails
//     because the engine is down still counts (the plugin undoes it with
//     Unwatch or Unlisten), and takes effect once the engine is back, with
//     a Gap for the streams whose events may have been missed.
//   - Once Unwatch or Unlisten has returned (the count at zero), later
//     events and messages are not delivered to the node.
//   - Since(key, "") on a stream never appended to returns a Seq below
//     every position Append will assign to it.
//   - Messages published by one node on one topic arrive in publish order.
//   - A stopped node is not counted by Publish and gets no more calls.
//   - Events and messages are handed over as copies: a caller may reuse
//     the slices it passed to Append or Publish.
type Broker interface {
	Buffer
	// AppendRecord appends a record event to the record's stream and to
	// its collection's stream in one step (both or neither, no other event
	// between them), so that concurrent events of one record have the same
	// order in both streams; each stream's watchers get it. The plugin
	// publishes through it.
	//
	// With ev.Version > 0 the append is idempotent and ordered on the
	// record's versions, in the same step: a version at or below the last
	// one appended for the record is a duplicate (dup true, nothing
	// appended or delivered); a version beyond the next one (last + 1) is
	// refused with an error wrapping ErrOutOfOrder, unless mode is
	// AppendGap (the versions in between can never be published: the event
	// is appended and subscribers see the jump). When the record's last
	// version is unknown (never appended, or forgotten by the engine) any
	// version is appended, but for mode AppendIfLastKnown: a version above
	// 1 is then refused with an error wrapping ErrLastUnknown (nothing
	// appended or delivered). Events without a version are always appended,
	// whatever the mode.
	AppendRecord(ctx context.Context, ev *Event, mode AppendMode) (dup bool, err error)
	// Start begins delivering to n; the plugin calls it once, in New.
	Start(n Node) error
	// Watch makes the node receive key's events through Node.Deliver. It
	// returns once they are received (an event appended after Watch
	// returned is delivered). Watches are counted: each Watch is undone by
	// one Unwatch.
	Watch(ctx context.Context, key StreamKey) error
	// Unwatch undoes one Watch of key.
	Unwatch(ctx context.Context, key StreamKey) error
	// Listen makes the node receive topic's messages through Node.Message,
	// once it returns; counted like Watch.
	Listen(ctx context.Context, topic string) error
	// Unlisten undoes one Listen of topic.
	Unlisten(ctx context.Context, topic string) error
	// Publish sends msg to every node listening to topic and returns how
	// many nodes received it.
	Publish(ctx context.Context, topic string, msg []byte) (nodes int, err error)
	// Stop ends the deliveries to the node (Plugin.Close) and waits for
	// the calls under way. The app closes the broker's own connections.
	Stop(ctx context.Context) error
}

// Pusher is an optional ability of a Broker (checked by type assertion): a
// push to users in one step and one round trip to the engine, whatever the
// number of its topics. Without it a push costs an Append and a Publish
// per topic.
type Pusher interface {
	// Push publishes msg on every topic, after appending ev to key's
	// stream when ev is not nil (as Buffer.Append does, in the same step:
	// when the append fails nothing is published). It returns ev's
	// position (0 without ev) and the number of nodes that received msg,
	// summed over the topics. Nodes receive msg through Node.Message,
	// preceded, when ev is not nil, by ev's position in decimal and a
	// newline ("42\n" + msg).
	Push(ctx context.Context, key StreamKey, ev *Event, topics []string, msg []byte) (seq uint64, nodes int, err error)
	// PublishEach publishes msgs[i] on topics[i] for every i, in one round
	// trip, and returns the first error.
	PublishEach(ctx context.Context, topics []string, msgs [][]byte) error
}

// AppendMode is how Broker.AppendRecord applies the version rule to a
// versioned event (ev.Version > 0) beyond the duplicates, which it always
// drops.
type AppendMode uint8

const (
	// AppendInOrder appends the record's next version (last + 1), or any
	// version when the last is unknown; a later one is refused
	// (ErrOutOfOrder).
	AppendInOrder AppendMode = iota
	// AppendGap appends a version beyond the next one too: the versions in
	// between can never be published (Publication.Gap).
	AppendGap
	// AppendIfLastKnown is AppendInOrder, but a version above 1 whose
	// record's last version is unknown is refused (ErrLastUnknown) instead
	// of appended: its predecessor may still be waiting to be published
	// (Publication.RequireLast).
	AppendIfLastKnown
)

// Validate reports a mode that is none of the constants above (an error
// wrapping ErrBadRequest): a Broker refuses it.
func (m AppendMode) Validate() error {
	if m > AppendIfLastKnown {
		return fmt.Errorf("%w: unknown append mode %d", ErrBadRequest, uint8(m))
	}
	return nil
}

// String returns the mode's name.
func (m AppendMode) String() string {
	switch m {
	case AppendInOrder:
		return "in-order"
	case AppendGap:
		return "gap"
	case AppendIfLastKnown:
		return "if-last-known"
	}
	return fmt.Sprintf("AppendMode(%d)", uint8(m))
}

// Node receives what a Broker carries. The plugin is the Node of its
// Broker; its methods never block and may be called from any goroutine.
type Node interface {
	// Deliver hands over an event of a watched stream. For one stream,
	// calls come one at a time, in the stream's order (positions strictly
	// increasing); an event that may have been lost is reported by Gap.
	Deliver(key StreamKey, e Entry)
	// Gap reports that events of key may have been lost (a link to the
	// engine was lost and its missed events could not be read back): the
	// node's subscribers of key are resynced.
	Gap(key StreamKey)
	// Message hands over a message of a topic the node listens to.
	Message(topic string, msg []byte)
	// Health reports the link to the engine: nil when up, else why not.
	// The plugin's Health returns it.
	Health(err error)
}

// eventWire is an Event's encoding between nodes.
type eventWire struct {
	Type       string          `json:"t"`
	Tenant     string          `json:"tn"`
	Collection string          `json:"c"`
	ID         string          `json:"i,omitempty"`
	ETag       string          `json:"e,omitempty"`
	Data       json.RawMessage `json:"d,omitempty"`
	Prior      json.RawMessage `json:"p,omitempty"`
	Time       int64           `json:"ts"`
	Version    uint64          `json:"v,omitempty"`
	PrevETag   string          `json:"pe,omitempty"`
}

// MarshalEvent encodes ev for a Broker: UnmarshalEvent gives back an event
// whose frames are byte-identical to ev's.
func MarshalEvent(ev *Event) ([]byte, error) {
	w := eventWire{Type: ev.Type, Tenant: ev.Ref.Tenant, Collection: ev.Ref.Collection, ID: ev.Ref.ID,
		ETag: ev.ETag, Data: ev.Data, Prior: ev.Prior, Version: ev.Version, PrevETag: ev.PrevETag}
	if !ev.Time.IsZero() {
		w.Time = ev.Time.UnixNano()
	}
	// Without HTML escaping: Data and Prior keep their bytes (json.Marshal
	// would rewrite <, >, &, U+2028 and U+2029 inside them).
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(w); err != nil {
		return nil, fmt.Errorf("realtime: encode event: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// UnmarshalEvent decodes an event encoded by MarshalEvent.
func UnmarshalEvent(b []byte) (*Event, error) {
	var w eventWire
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("realtime: decode event: %w", err)
	}
	if w.Type == "" || w.Collection == "" {
		return nil, fmt.Errorf("realtime: decode event: %w: type and collection are required", ErrBadRequest)
	}
	ev := &Event{Type: w.Type, Ref: Ref{Tenant: w.Tenant, Collection: w.Collection, ID: w.ID},
		ETag: w.ETag, Data: w.Data, Prior: w.Prior, Version: w.Version, PrevETag: w.PrevETag}
	if w.Time != 0 {
		ev.Time = time.Unix(0, w.Time)
	}
	return ev, nil
}

// PresenceConn is one open WebSocket, for a PresenceStore.
type PresenceConn struct {
	Tenant, User, ConnID string
}

// PresenceStore is the presence ability of a Broker (checked by type
// assertion): which connections are open on every node. Without it a
// node's presence counts its own connections only.
type PresenceStore interface {
	// AddPresence records conns as open until ttl from now; the plugin
	// calls it when a connection opens and again for all of its open
	// connections every ttl/3, so a node that dies is forgotten after ttl.
	AddPresence(ctx context.Context, ttl time.Duration, conns ...PresenceConn) error
	// RemovePresence forgets conns (closed).
	RemovePresence(ctx context.Context, conns ...PresenceConn) error
	// Presence returns the tenant's users with an open connection, sorted,
	// and the number of its open connections.
	Presence(ctx context.Context, tenant string) (users []string, conns int, err error)
	// UserPresence returns the number of a user's open connections.
	UserPresence(ctx context.Context, tenant, user string) (conns int, err error)
}
