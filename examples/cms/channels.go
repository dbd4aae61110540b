package main

import (
	"context"
	"strings"

	"github.com/ginrealtime/realtime"
)

// authorizeChannel is the CMS's channel rule (realtime.Config.AuthorizeChannel),
// checked on WebSocket subscribe, on GET /api/v1/channels/subscribe, on the
// channels of GET /api/v1/pushes/subscribe and /pushes/poll, on
// GET /api/v1/channels/:channel/history, and on a browser's publish
// (realtime.Config.ClientPublish is on):
//
//   - a browser may publish on chat.<room> channels (and below) only: a
//     publish anywhere else is refused, user.<x> included;
//   - user.<x> (and anything below it) is the private channel of user x:
//     only the token whose sub is x may subscribe to it or read its history;
//   - a pattern that could match another user's channel is refused: "user.*",
//     "user.>", "*.<x>" or "*" / ">" as the first segment (e.g. "*.123",
//     ">"), unless it names the caller's own user.<sub>;
//   - every other channel is open to every token of the tenant (channels
//     never cross tenants).
func authorizeChannel(_ context.Context, a realtime.ChannelAccess) error {
	first, rest, _ := strings.Cut(a.Channel, ".")
	switch {
	case a.Op == realtime.ChannelOpPublish:
		if first == "chat" && rest != "" {
			return nil
		}
		return realtime.ErrForbidden
	case first == "user":
		// The second segment must be the caller's own id, literally
		// ("user.*" and "user.>" could reach anyone's).
		second, _, _ := strings.Cut(rest, ".")
		if second == a.Identity.User {
			return nil
		}
		return realtime.ErrForbidden
	case a.Pattern && (first == "*" || first == ">"):
		return realtime.ErrForbidden
	}
	return nil
}
