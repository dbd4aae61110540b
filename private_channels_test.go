package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestPrivateUserChannelsRule: the rule of PrivateUserChannels, for every
// operation, with user ids that contain dots and a prefix of two segments.
func TestPrivateUserChannelsRule(t *testing.T) {
	type tcase struct {
		prefix, user, channel string
		ok                    bool
	}
	cases := []tcase{
		{"user", "123", "user.123", true},
		{"user", "123", "user.123.inbox", false}, // the channel of "123.inbox"
		{"user", "123.inbox", "user.123.inbox", true},
		{"user", "123", "user.456", false},
		{"user", "a.b", "user.a.b", true},
		{"user", "a", "user.a.b", false},
		{"user", "a", "user.a.>", false},
		{"user", "a.b", "user.a.>", false},
		{"user", "a.b", "user.a.*", false},
		{"user", "a.b", "user.*.b", false},
		{"user", "a.b", "*.a.b", true},
		{"user", "a.b", "*.*.b", false},
		{"user", "123", "user.*", false},
		{"user", "123", "user.>", false},
		{"user", "123", ">", false},
		{"user", "123", "*.>", false},
		{"user", "123", "*.123", true},
		{"user", "456", "*.123", false},
		{"user", "456", "*", true}, // one segment: "user" at most, nobody's
		{"user", "456", "user", true},
		{"user", "456", "users.1", true},
		{"user", "456", "orders.*", true},
		{"user", "456", "orders.>", true},
		{"user", "456", "news", true},
		{"user", "a@x.com", "user.a@x.com", true},
		{"user", "b@x.com", "user.a@x.com", false},
		{"app.user", "1", "app.user.1", true},
		{"app.user", "1", "app.*.1", true},
		{"app.user", "2", "app.*.1", false},
		{"app.user", "1", "app.>", false},
		{"app.user", "1", "*.>", false},
		{"app.user", "1", "*.*.*", false},
		{"app.user", "1", "app.user", true},
		{"app.user", "1", "app.users.2", true},
		{"app.user", "1", "app.*", true},
		{"app.user", "1", "other.>", true},
	}
	for _, tc := range cases {
		rule := PrivateUserChannels(tc.prefix)
		for _, op := range []string{ChannelOpSubscribe, ChannelOpHistory, "publish"} {
			err := rule(context.Background(), ChannelAccess{
				Identity: &Identity{User: tc.user, Tenant: DefaultTenant}, Channel: tc.channel,
				Pattern: validChannel(tc.channel, false) != nil, Op: op,
			})
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrForbidden)) {
				t.Errorf("prefix %q, user %q, %s %q: %v, want allowed=%v", tc.prefix, tc.user, op, tc.channel, err, tc.ok)
			}
		}
	}
	if err := PrivateUserChannels("user")(context.Background(), ChannelAccess{Channel: "news"}); !errors.Is(err, ErrForbidden) {
		t.Errorf("no identity: %v", err)
	}
	for _, bad := range []string{"", "user.*", "user.>", "a..b", "user."} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("PrivateUserChannels(%q) did not panic", bad)
				}
			}()
			PrivateUserChannels(bad)
		}()
	}
}

func TestChannelRules(t *testing.T) {
	noPublish := func(_ context.Context, a ChannelAccess) error {
		if a.Op == "publish" {
			return ErrForbidden
		}
		return nil
	}
	rule := ChannelRules(PrivateUserChannels("user"), nil, noPublish)
	id := &Identity{User: "u1", Tenant: DefaultTenant}
	for _, tc := range []struct {
		channel, op string
		ok          bool
	}{
		{"user.u1", ChannelOpSubscribe, true},
		{"user.u2", ChannelOpSubscribe, false},
		{"news", ChannelOpHistory, true},
		{"news", "publish", false},
		{"user.u1", "publish", false},
	} {
		if err := rule(context.Background(), ChannelAccess{Identity: id, Channel: tc.channel, Op: tc.op}); (err == nil) != tc.ok {
			t.Errorf("%s %s: %v, want allowed=%v", tc.op, tc.channel, err, tc.ok)
		}
	}
	if err := ChannelRules()(context.Background(), ChannelAccess{Identity: id, Channel: "x"}); err != nil {
		t.Errorf("no rules: %v", err)
	}
}

// privGen generates user ids and channel patterns that collide often: a
// few short segments, ids with dots that are prefixes of one another.
type privGen struct{ r *rand.Rand }

var privSegs = []string{"a", "b", "c", "1", "x@y", "user", "u"}

func (g privGen) id() string {
	n := 1 + g.r.IntN(3)
	segs := make([]string, n)
	for i := range segs {
		segs[i] = privSegs[g.r.IntN(len(privSegs))]
	}
	return strings.Join(segs, ".")
}

// pattern returns a valid channel or pattern, built from the segments of
// prefix, of the ids given and of privSegs, with wildcards.
func (g privGen) pattern(prefix string, ids ...string) string {
	for {
		var segs []string
		switch g.r.IntN(6) {
		case 0: // a private channel, one of its segments maybe a wildcard
			segs = strings.Split(prefix+"."+ids[g.r.IntN(len(ids))], ".")
			if g.r.IntN(2) == 0 {
				segs[g.r.IntN(len(segs))] = "*"
			}
		case 1, 2: // the prefix, then anything
			segs = strings.Split(prefix, ".")
		}
		for n := g.r.IntN(4); n > 0 || len(segs) == 0; n-- {
			switch k := g.r.IntN(10); {
			case k < 3:
				segs = append(segs, "*")
			case k < 6:
				id := strings.Split(ids[g.r.IntN(len(ids))], ".")
				segs = append(segs, id[g.r.IntN(len(id))])
			default:
				segs = append(segs, privSegs[g.r.IntN(len(privSegs))])
			}
		}
		if g.r.IntN(4) == 0 {
			if g.r.IntN(2) == 0 {
				segs[len(segs)-1] = ">"
			} else {
				segs = append(segs, ">")
			}
		}
		p := strings.Join(segs, ".")
		if validChannel(p, true) == nil {
			return p
		}
	}
}

// instances returns channels a pattern matches: each "*" and ">" replaced
// by segments of the prefix (where they stand for it) or by fill values.
func instances(prefix, pattern string) []string {
	pre := strings.Split(prefix, ".")
	var out []string
	for _, fill := range [][]string{{"q"}, {"r"}, {"q", "r"}} {
		segs := strings.Split(pattern, ".")
		var ch []string
		for i, s := range segs {
			switch {
			case s == ">":
				if i < len(pre) {
					ch = append(ch, pre[i:]...)
				}
				ch = append(ch, fill...)
			case s == "*" && i < len(pre):
				ch = append(ch, pre[i])
			case s == "*":
				ch = append(ch, fill[0])
			default:
				ch = append(ch, s)
			}
		}
		out = append(out, strings.Join(ch, "."))
	}
	return out
}

// TestPrivateUserChannelsExact checks the rule against its definition on
// random patterns: a pattern is allowed exactly when no channel it matches
// is the private channel of another user (the instances of a refused
// pattern include such a channel; those of an allowed one never do).
func TestPrivateUserChannelsExact(t *testing.T) {
	seed := handoverBaseSeed(t)
	t.Logf("seed %d (reproduce: REALTIME_SEED=%d go test -run TestPrivateUserChannelsExact .)", seed, seed)
	g := privGen{rand.New(rand.NewPCG(seed, 1))}
	for _, prefix := range []string{"user", "app.user"} {
		rule := PrivateUserChannels(prefix)
		for range 20000 {
			caller, other := g.id(), g.id()
			p := g.pattern(prefix, caller, other)
			allowed := rule(context.Background(), ChannelAccess{Identity: &Identity{User: caller}, Channel: p}) == nil
			foreign := ""
			for _, ch := range append(instances(prefix, p), prefix+"."+other) {
				if owner, ok := strings.CutPrefix(ch, prefix+"."); ok && owner != caller && channelPatternMatches(p, ch) {
					foreign = ch
					break
				}
			}
			if allowed && foreign != "" {
				t.Fatalf("prefix %q: %q allowed for %q, but it matches %q", prefix, p, caller, foreign)
			}
			if !allowed && foreign == "" {
				t.Fatalf("prefix %q: %q refused for %q, but matches no other user's channel", prefix, p, caller)
			}
		}
	}
}

// TestPrivateUserChannelsProperty drives the real plugin: in each round a
// victim's private channel gets pushes before and after an attacker (a
// random id, often a prefix or an extension of the victim's) subscribes
// with random patterns over the WebSocket (with since on the concrete
// ones) and over SSE (with Last-Event-ID when concrete), and reads the
// history of every concrete channel it named and of the victim's. No frame
// of another user's private channel may ever reach the attacker; the
// victim, meanwhile, receives its own.
func TestPrivateUserChannelsProperty(t *testing.T) {
	seed := handoverBaseSeed(t)
	t.Logf("seed %d (reproduce: REALTIME_SEED=%d go test -race -run TestPrivateUserChannelsProperty .)", seed, seed)
	g := privGen{rand.New(rand.NewPCG(seed, 2))}
	rt, srv := newTestServer(t, Config{AuthorizeChannel: PrivateUserChannels("user"), WSMaxChannels: 20})
	rounds := 100 // about a second under -race
	if testing.Short() {
		rounds = 20
	}
	for round := range rounds {
		victim, attacker := g.id(), g.id()
		for attacker == victim {
			attacker = g.id()
		}
		pats := []string{}
		for len(pats) < 8 {
			if p := g.pattern("user", victim, attacker); !slices.Contains(pats, p) {
				pats = append(pats, p)
			}
		}
		t.Run(fmt.Sprintf("round=%d", round), func(t *testing.T) {
			privateRound(t, rt, srv, g, round, victim, attacker, pats)
		})
		if t.Failed() {
			t.Fatalf("seed %d, round %d: victim %q, attacker %q, patterns %q", seed, round, victim, attacker, pats)
		}
	}
}

func privateRound(t *testing.T, rt *Plugin, srv *httptest.Server, g privGen, round int, victim, attacker string, pats []string) {
	own := "user." + victim
	probe := fmt.Sprintf("probe.r%d", round)
	foreign := func(ch string) bool { return strings.HasPrefix(ch, "user.") && ch != "user."+attacker }
	atok, vtok := userToken(t, attacker), userToken(t, victim)
	before := notify(t, rt, Notification{Channel: own, Event: "before"}).EnvelopeID

	// The victim follows its own channel.
	v, _ := connectWS(t, srv, vtok)
	subscribeSince(t, v, []string{own}, nil)

	// The attacker's WebSocket: every pattern, since on the concrete ones.
	a, _ := connectWS(t, srv, atok)
	since := map[string]string{}
	for _, p := range pats {
		if validChannel(p, false) == nil {
			since[p] = before
		}
	}
	b, _ := json.Marshal(map[string]any{"type": "subscribe", "channels": append(slices.Clone(pats), probe), "since": since})
	sendWS(t, a, string(b))
	for {
		f := readWS(t, a)
		if f.Type == "error" && f.Code != "forbidden" {
			t.Fatalf("subscribe: %s", f.raw)
		}
		if f.Type == "subscribed" {
			for _, ch := range f.Channels {
				if channelPatternMatches(ch, own) {
					t.Fatalf("%q subscribed %q, which matches %q", attacker, ch, own)
				}
			}
			break
		}
	}

	// The attacker's SSE streams: one random pattern with the probe, and
	// one concrete pattern alone, resumed from before.
	type sse struct {
		fr      *frameReader
		barrier string // the channel its barrier is pushed to
	}
	var streams []sse
	openSSE := func(channels, lastID, barrier string) {
		h := http.Header{}
		if lastID != "" {
			h.Set("Last-Event-ID", lastID)
		}
		resp := getWith(t, chanSSEURL(srv, channels), atok, h)
		switch resp.StatusCode {
		case http.StatusForbidden:
			return
		case http.StatusOK:
			fr := newFrameReader(resp.Body)
			readFramesOrRetry(t, fr)
			streams = append(streams, sse{fr, barrier})
		default:
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("SSE %s: %d %s", channels, resp.StatusCode, body)
		}
	}
	openSSE(pats[g.r.IntN(len(pats))]+","+probe, "", probe)
	for _, p := range pats {
		if validChannel(p, false) == nil {
			openSSE(p, before, p)
			break
		}
	}

	// History of every concrete channel named, and of the victim's.
	for _, ch := range append(slices.Clone(pats), own) {
		if validChannel(ch, false) != nil {
			continue
		}
		code, ans, body := history(t, srv, atok, ch, "")
		if code == http.StatusOK && foreign(ch) {
			t.Fatalf("%q read the history of %q: %s", attacker, ch, body)
		}
		for _, m := range ans.Messages {
			var e envelope
			if json.Unmarshal(m, &e) != nil || foreign(e.Channel) {
				t.Fatalf("%q read %s in the history of %q", attacker, m, ch)
			}
		}
	}

	// The secret, then one barrier per stream.
	notify(t, rt, Notification{Channel: own, Event: "secret"})
	barriers := map[string]bool{probe: true}
	for _, s := range streams {
		barriers[s.barrier] = true
	}
	for ch := range barriers {
		notify(t, rt, Notification{Channel: ch, Event: "barrier"})
	}
	expectMessage(t, v, "secret")

	// Everything the attacker got up to its barriers.
	for {
		f := readWS(t, a)
		if f.Type == "message" && foreign(f.Channel) {
			t.Fatalf("%q received %s", attacker, f.raw)
		}
		if f.Type == "message" && f.Event == "barrier" && f.Channel == probe {
			break
		}
	}
	for _, s := range streams {
		guard := timeGuard(s.fr.body)
		for {
			f, err := s.fr.next()
			if err != nil {
				t.Fatalf("SSE read: %v", err)
			}
			if !f.isEvent() {
				continue
			}
			var e envelope
			if f.Event != EventResync && (json.Unmarshal([]byte(f.Data), &e) != nil || foreign(e.Channel)) {
				t.Fatalf("%q received over SSE %+v", attacker, f)
			}
			if f.Event == "barrier" && e.Channel == s.barrier {
				break
			}
		}
		guard.Stop()
		s.fr.body.Close()
	}
	for _, c := range []*websocket.Conn{a, v} {
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(hangGuard))
		closeCode(t, c)
	}
}

// readFramesOrRetry reads the retry block an SSE stream starts with.
func readFramesOrRetry(t testing.TB, fr *frameReader) {
	t.Helper()
	guard := timeGuard(fr.body)
	defer guard.Stop()
	f, err := fr.next()
	if err != nil || f.Retry == "" {
		t.Fatalf("first block %+v, %v; want retry", f, err)
	}
}
