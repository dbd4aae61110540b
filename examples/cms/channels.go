package main

import "github.com/ginrealtime/realtime"

// authorizeChannel is the CMS's channel rule (realtime.Config.AuthorizeChannel),
// checked on WebSocket subscribe, on GET /api/v1/channels/subscribe and on
// GET /api/v1/channels/:channel/history: the plugin's ready rule for
// private per-user channels (realtime.PrivateUserChannels).
//
//   - user.<x> is the private channel of user x, x being everything after
//     "user." (user.a.b is the channel of the user "a.b"): only the token
//     whose sub is x may subscribe to it or read its history;
//   - a pattern that could match another user's channel is refused:
//     "user.*", "user.>", ">", "*.<someone else>";
//   - every other channel is open to every token of the tenant (channels
//     never cross tenants).
var authorizeChannel = realtime.PrivateUserChannels("user")
