package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Who may see what: every access rule of the plugin is checked here.
//   - Records: Config.Authorize at subscribe time (a record stream, a
//     collection stream, a WebSocket's record, a long poll) and again
//     before each record event is written (checkFrames, below).
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
// "user.>", ">" for a rule about user.<x> channels); PrivateUserChannels
// is that rule, ready made. It is called on
// handler and WebSocket inbox goroutines: it must be safe for concurrent
// use and should not block.
type ChannelAuthorizer func(ctx context.Context, a ChannelAccess) error

// PrivateUserChannels returns a ChannelAuthorizer that makes every
// channel under prefix private to one user: "<prefix>.<id>" is the
// channel of the user whose id is the whole rest of the name, dots
// included ("user.a.b" is the channel of user "a.b", not a channel below
// "user.a"), so a user has exactly one private channel and nothing below
// it. Only that user may subscribe to it, read its history or publish on
// it (every Op alike); the identity rules (see Identity) keep a user id
// from being a pattern.
//
// A pattern is allowed only when no private channel it can match is
// another user's: with prefix "user", "user.*", "user.>", ">", "*.x" (for
// any caller but x) and "user.a.>" are refused, "user.<own id>",
// "*.<own id>" and "orders.*" are allowed. Channels and patterns that
// cannot reach a private channel are left alone (nil): combine the rule
// with the app's own (which operations it allows on which channels) with
// ChannelRules.
//
// A user id with a character channel names do not allow (see
// PROTOCOL.md §6: letters, digits and _-:@+=~ in dot-separated segments)
// has no usable private channel: "<prefix>.<id>" is refused as a channel
// name (400) before any rule is asked.
//
// prefix must be a concrete channel name (one or more segments, no
// wildcard); PrivateUserChannels panics otherwise, like regexp.MustCompile.
func PrivateUserChannels(prefix string) ChannelAuthorizer {
	if err := validChannel(prefix, false); err != nil {
		panic("realtime: PrivateUserChannels: " + err.Error())
	}
	pre := strings.Split(prefix, ".")
	return func(_ context.Context, a ChannelAccess) error {
		if a.Identity == nil || !privateReachOK(pre, a.Channel, a.Identity.User) {
			return fmt.Errorf("%w: another user's private channel", ErrForbidden)
		}
		return nil
	}
}

// privateReachOK reports whether the channel or pattern ch can match no
// private channel under the prefix segments pre but the one of user.
func privateReachOK(pre []string, ch, user string) bool {
	segs := strings.Split(ch, ".")
	rest := segs[len(segs)-1] == ">"
	if rest {
		segs = segs[:len(segs)-1]
	}
	for i := 0; i < len(segs) && i < len(pre); i++ {
		if segs[i] != "*" && segs[i] != pre[i] {
			return true // it never matches a channel under the prefix
		}
	}
	switch {
	case rest:
		// ">" stands for one or more segments of any value: it reaches
		// the channels of users of every id that continues what is fixed.
		return false
	case len(segs) <= len(pre):
		return true // the prefix itself at most: no user's channel
	}
	// Every match is the prefix followed by the segments after it: one
	// user's channel when they are literal, anyone's with a "*".
	tail := segs[len(pre):]
	for _, s := range tail {
		if s == "*" {
			return false
		}
	}
	return strings.Join(tail, ".") == user
}

// ChannelRules returns a ChannelAuthorizer that allows what every one of
// rules allows (nil rules are skipped): the first refusal is the answer.
// For example ChannelRules(PrivateUserChannels("user"), appRule).
func ChannelRules(rules ...ChannelAuthorizer) ChannelAuthorizer {
	rules = slices.DeleteFunc(slices.Clone(rules), func(r ChannelAuthorizer) bool { return r == nil })
	return func(ctx context.Context, a ChannelAccess) error {
		for _, r := range rules {
			if err := r(ctx, a); err != nil {
				return err
			}
		}
		return nil
	}
}

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

// checkFrames re-checks the record events of batch against their
// subscription's identity before they are written (Config.Authorize, with
// Access.Event and Access.Record set): an event of a collection stream the
// subscriber may not see is skipped; a record stream that may no longer be
// seen ends there (solo: end true, its client's reconnect gets 403), or
// for a WebSocket's record its subscription ends with an error frame and
// the connection stays.
func checkFrames(batch []out) ([]out, bool) {
	// Most batches need no check (no Authorizer): leave them as they are.
	n := 0
	for n < len(batch) && !needsCheck(&batch[n]) {
		n++
	}
	if n == len(batch) {
		return batch, false
	}
	var revoked []*subscription
	for _, o := range batch[n:] {
		s := o.sub
		if !needsCheck(&o) {
			batch[n] = o
			n++
			continue
		}
		if containsSub(revoked, s) {
			continue
		}
		if s.streams.access.frame(context.Background(), s.ident, o.ev) == nil {
			batch[n] = o
			n++
			continue
		}
		switch {
		case s.key.ID == "":
			continue // a collection: skip what this subscriber may not see
		case s.solo:
			clear(batch[n:])
			return batch[:n], true
		}
		revoked = append(revoked, s)
		batch[n] = out{ev: forbiddenEvent, sub: s}
		n++
	}
	clear(batch[n:])
	for _, s := range revoked {
		s.drop(s)
	}
	return batch[:n], false
}

// needsCheck reports whether o is a record event of a subscription whose
// access is checked before each frame.
func needsCheck(o *out) bool {
	s := o.sub
	return s != nil && o.ev != nil && o.ev.ETag != "" && s.streams.access.checksFrames()
}

func containsSub(list []*subscription, s *subscription) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
