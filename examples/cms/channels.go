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
//   - user.<x> is the private channel of user x, x being everything after
//     "user." (user.a.b is the channel of the user "a.b"): only the token
//     whose sub is x may subscribe to it or read its history (the plugin's
//     ready rule, realtime.PrivateUserChannels);
//   - a pattern that could match another user's channel is refused:
//     "user.*", "user.>", ">", "*.<someone else>";
//   - every other channel is open to every token of the tenant (channels
//     never cross tenants).
func authorizeChannel(ctx context.Context, a realtime.ChannelAccess) error {
	if a.Op == realtime.ChannelOpPublish {
		if first, rest, _ := strings.Cut(a.Channel, "."); first == "chat" && rest != "" {
			return nil
		}
		return realtime.ErrForbidden
	}
	return privateUserChannels(ctx, a)
}

var privateUserChannels = realtime.PrivateUserChannels("user")
