package main

import (
	"context"
	"errors"
	"testing"

	"github.com/ginrealtime/realtime"
)

func TestAuthorizeChannel(t *testing.T) {
	for _, c := range []struct {
		user, channel string
		pattern, ok   bool
	}{
		{"123", "user.123", false, true},
		{"123", "*.123", true, true},
		{"123", "user.123.inbox", false, false}, // the channel of user "123.inbox"
		{"123", "user.123.>", true, false},
		{"a.b", "user.a.b", false, true},
		{"a", "user.a.b", false, false},
		{"456", "user.123", false, false},
		{"456", "user.*", true, false},
		{"456", "user.>", true, false},
		{"456", "*.123", true, false},
		{"456", ">", true, false},
		{"456", "orders.*", true, true},
		{"456", "news", false, true},
	} {
		err := authorizeChannel(context.Background(), realtime.ChannelAccess{
			Identity: &realtime.Identity{User: c.user}, Channel: c.channel, Pattern: c.pattern, Op: realtime.ChannelOpSubscribe})
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, realtime.ErrForbidden)) {
			t.Errorf("%s on %s: %v, want allowed=%v", c.user, c.channel, err, c.ok)
		}
	}
	// Browsers publish on chat.<room> only.
	for _, c := range []struct {
		user, channel string
		ok            bool
	}{
		{"123", "chat.room1", true},
		{"123", "chat.room1.thread", true},
		{"123", "user.123", false},
		{"123", "news", false},
		{"123", "announce.release", false},
	} {
		err := authorizeChannel(context.Background(), realtime.ChannelAccess{
			Identity: &realtime.Identity{User: c.user}, Channel: c.channel, Op: realtime.ChannelOpPublish})
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, realtime.ErrForbidden)) {
			t.Errorf("publish by %s on %s: %v, want allowed=%v", c.user, c.channel, err, c.ok)
		}
	}
}
