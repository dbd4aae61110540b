package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
)

// Who may see what: every access rule of the plugin is checked here.
//   - Records: Config.Authorize at subscribe time (a record stream, a
//     collection stream, a WebSocket's record, a long poll) and again
//     before each record event is written (checkFrames).
//   - Channels: Config.AuthorizeChannel at subscribe time (WebSocket,
//     SSE channel stream) and for history, once per channel or pattern,
//     never per push.
//   - Pushes: a push is kept with its targeting (users, excludeUsers), so
//     that a replay or history shows it only to the users it was pushed to.
//   - Tenants: every stream key, channel and push is confined to the
//     identity's tenant by construction (keys carry the tenant).

// Authorizer decides whether an identity may see a record or a collection.
// It returns nil to allow, ErrForbidden to refuse (403) or ErrNotFound to hide
// the record (404). It is called at subscribe time and again before every
// event frame (with Access.Event and Access.Record set), on the plugin's
// writer goroutines: it must be fast and must not block.
type Authorizer func(ctx context.Context, a Access) error

// Access is what an Authorizer decides on.
type Access struct {
	// Identity is the subscriber's verified token.
	Identity *Identity
	// Ref names the record; Ref.ID is empty for a collection subscription.
	Ref Ref
	// Event is empty at subscribe time, else the type of the event about to be sent.
	Event string
	// Record is the record's JSON when known: the loaded record at subscribe
	// time, the event's data before a frame, and before a deleted frame the
	// record as it was (Event.Prior), or {"id":…} when the publisher did not
	// say. It is nil when the record is absent or no loader is configured.
	Record json.RawMessage
}

// Channel operations seen by a ChannelAuthorizer (ChannelAccess.Op).
const (
	// ChannelOpSubscribe: a WebSocket subscribe, an SSE channel stream, the
	// channels of a pushes stream or poll.
	ChannelOpSubscribe = "subscribe"
	// ChannelOpHistory: GET {base}/channels/:channel/history.
	ChannelOpHistory = "history"
	// ChannelOpPublish: a WebSocket client's publish message (PROTOCOL.md
	// §6), on a concrete channel. It is asked only with
	// Config.ClientPublish set; otherwise every such publish is refused.
	ChannelOpPublish = "publish"
)

// ChannelAccess is what a ChannelAuthorizer decides on.
type ChannelAccess struct {
	// Identity is the client's verified token.
	Identity *Identity
	// Channel is the channel name, or the pattern when Pattern is set.
	Channel string
	// Pattern reports that Channel contains "*" or ">" segments: it
	// stands for every channel it matches.
	Pattern bool
	// Op is ChannelOpSubscribe, ChannelOpHistory or ChannelOpPublish.
	Op string
}

// ChannelAuthorizer decides whether an identity may subscribe to a channel
// (or pattern) or read its history: nil allows, ErrForbidden refuses (403,
// or a forbidden error frame on a WebSocket). Channels are always confined
// to the token's tenant; the authorizer adds the app's own rules, e.g.
// "user.<x> only for the user x".
//
// It sees patterns as the client sent them: it must refuse a pattern that
// would reach a channel the identity may not read ("user.*", "*.123",
// "user.>", ">" for a rule about user.<x> channels). It is called on
// handler and WebSocket inbox goroutines: it must be safe for concurrent
// use and should not block.
type ChannelAuthorizer func(ctx context.Context, a ChannelAccess) error

// access holds the app's access rules.
type access struct {
	authorize Authorizer
	channel   ChannelAuthorizer
	// clientPublish: clients may publish where channel allows
	// ChannelOpPublish (Config.ClientPublish).
	clientPublish bool
}

// record checks a subscription to a record or collection (a.Event empty).
func (ac *access) record(ctx context.Context, a Access) error {
	if ac.authorize == nil {
		return nil
	}
	return ac.authorize(ctx, a)
}

// checksFrames reports whether record events are checked before each frame.
func (ac *access) checksFrames() bool { return ac.authorize != nil }

// frame checks a record event about to be written to ident: the Authorizer
// sees the event's data, or before a deleted the record as it was (Prior).
func (ac *access) frame(ctx context.Context, ident *Identity, ev *Event) error {
	if ac.authorize == nil {
		return nil
	}
	rec := ev.Data
	if ev.Prior != nil {
		rec = ev.Prior
	}
	return ac.authorize(ctx, Access{Identity: ident, Ref: ev.Ref, Event: ev.Type, Record: rec})
}

// channelOp checks one channel or pattern with Config.AuthorizeChannel.
func (ac *access) channelOp(ctx context.Context, ident *Identity, name, op string) error {
	if ac.channel == nil {
		return nil
	}
	pattern := validChannel(name, false) != nil // valid as a pattern, not as a channel
	if err := ac.channel(ctx, ChannelAccess{Identity: ident, Channel: name, Pattern: pattern, Op: op}); err != nil {
		return fmt.Errorf("channel %s: %w", name, err)
	}
	return nil
}

// publish checks a client's publish on a concrete channel: refused
// unless the app enabled it (Config.ClientPublish, which requires an
// AuthorizeChannel) and its ChannelAuthorizer allows ChannelOpPublish.
func (ac *access) publish(ctx context.Context, ident *Identity, channel string) error {
	if !ac.clientPublish || ac.channel == nil {
		return fmt.Errorf("channel %s: %w: publishing from clients is not enabled", channel, ErrForbidden)
	}
	return ac.channelOp(ctx, ident, channel, ChannelOpPublish)
}

// pushTargeting is a channel push's targeting, kept with it in the buffer
// (Event.Prior, never sent) so that replay and history show a message only
// to the users it was pushed to.
type pushTargeting struct {
	Users   []string `json:"u,omitempty"`
	Exclude []string `json:"x,omitempty"`
}

// targetingJSON encodes a push's targeting; nil when it targets everyone.
func targetingJSON(users, exclude []string) json.RawMessage {
	if len(users) == 0 && len(exclude) == 0 {
		return nil
	}
	b, _ := json.Marshal(pushTargeting{Users: users, Exclude: exclude})
	return b
}

// targets reports whether a buffered push (its Event.Prior) was meant for user.
func targetsUser(prior json.RawMessage, user string) bool {
	if len(prior) == 0 {
		return true
	}
	var t pushTargeting
	if json.Unmarshal(prior, &t) != nil {
		return false
	}
	if slices.Contains(t.Exclude, user) {
		return false
	}
	return len(t.Users) == 0 || slices.Contains(t.Users, user)
}
