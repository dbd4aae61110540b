package realtime

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// chRefMatch is the brute-force reference for one pattern against one
// channel: "*" matches one segment, a last ">" one or more segments, any
// other segment itself.
func chRefMatch(pattern, channel string) bool {
	return chRefMatchSegs(strings.Split(pattern, "."), strings.Split(channel, "."))
}

func chRefMatchSegs(p, c []string) bool {
	for i, seg := range p {
		if seg == ">" && i == len(p)-1 {
			return len(c) > i
		}
		if i >= len(c) || (seg != "*" && seg != c[i]) {
			return false
		}
	}
	return len(p) == len(c)
}

// chRef is a brute-force reference index: pattern -> subscribers.
type chRef map[string]map[int]bool

func (r chRef) add(p string, v int) {
	if r[p] == nil {
		r[p] = map[int]bool{}
	}
	r[p][v] = true
}

func (r chRef) remove(p string, v int) {
	delete(r[p], v)
	if len(r[p]) == 0 {
		delete(r, p)
	}
}

func (r chRef) match(channel string) []int {
	seen := map[int]bool{}
	for p, vs := range r {
		if chRefMatch(p, channel) {
			for v := range vs {
				seen[v] = true
			}
		}
	}
	out := make([]int, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// chMatch runs x.match and returns the sorted subscribers, failing t when
// one is delivered twice.
func chMatch(t testing.TB, x *channelIndex[int], channel string) []int {
	t.Helper()
	var out []int
	x.match(channel, func(v int) { out = append(out, v) })
	slices.Sort(out)
	for i := 1; i < len(out); i++ {
		if out[i] == out[i-1] {
			t.Fatalf("match(%q): subscriber %d delivered twice (%v)", channel, out[i], out)
		}
	}
	return out
}

// chCheckIndex checks the index's invariants: no empty node below the
// root, no nil-but-allocated sets, and x.subs counting exactly the
// (pattern, subscriber) entries and sharing their state.
func chCheckIndex(t testing.TB, x *channelIndex[int]) {
	t.Helper()
	counts := map[int]int{}
	var walk func(n *chanNode[int], path string, root bool)
	checkSet := func(set map[int]*chanSub, path, what string) {
		if set != nil && len(set) == 0 {
			t.Fatalf("node %q: empty %s set kept", path, what)
		}
		for v, s := range set {
			if x.subs[v] != s {
				t.Fatalf("node %q: subscriber %d state not shared", path, v)
			}
			counts[v]++
		}
	}
	walk = func(n *chanNode[int], path string, root bool) {
		if !root && n.empty() {
			t.Fatalf("empty node %q not pruned", path)
		}
		if n.children != nil && len(n.children) == 0 {
			t.Fatalf("node %q: empty children map kept", path)
		}
		checkSet(n.exact, path, "exact")
		checkSet(n.rest, path, "rest")
		for seg, c := range n.children {
			walk(c, path+"."+seg, false)
		}
		if n.star != nil {
			walk(n.star, path+".*", false)
		}
	}
	walk(&x.root, "", true)
	if len(counts) != len(x.subs) {
		t.Fatalf("subs has %d subscribers, the trie %d", len(x.subs), len(counts))
	}
	for v, n := range counts {
		if x.subs[v].patterns != n {
			t.Fatalf("subscriber %d: count %d, the trie has %d", v, x.subs[v].patterns, n)
		}
	}
}

func TestChannelMatch(t *testing.T) {
	type sub struct {
		pattern string
		v       int
	}
	cases := []struct {
		name    string
		subs    []sub
		channel string
		want    []int
	}{
		{"star one segment", []sub{{"orders.*", 1}}, "orders.new", []int{1}},
		{"star needs a segment", []sub{{"orders.*", 1}}, "orders", nil},
		{"star exactly one segment", []sub{{"orders.*", 1}}, "orders.eu.new", nil},
		{"rest not zero segments", []sub{{"orders.>", 1}}, "orders", nil},
		{"rest one segment", []sub{{"orders.>", 1}}, "orders.eu", []int{1}},
		{"rest two segments", []sub{{"orders.>", 1}}, "orders.eu.new", []int{1}},
		{"rest other prefix", []sub{{"orders.>", 1}}, "order.eu", nil},
		{"leading star", []sub{{"*.new", 1}}, "orders.new", []int{1}},
		{"leading star other tail", []sub{{"*.new", 1}}, "orders.old", nil},
		{"leading star too long", []sub{{"*.new", 1}}, "a.orders.new", nil},
		{"rest alone one", []sub{{">", 1}}, "orders", []int{1}},
		{"rest alone many", []sub{{">", 1}}, "orders.eu.new", []int{1}},
		{"exact", []sub{{"orders.new", 1}}, "orders.new", []int{1}},
		{"exact other", []sub{{"orders.new", 1}}, "orders.old", nil},
		{"exact prefix", []sub{{"orders.new", 1}}, "orders", nil},
		{"exact longer", []sub{{"orders.new", 1}}, "orders.new.x", nil},
		{"star then rest", []sub{{"*.eu.>", 1}}, "orders.eu.new.x", []int{1}},
		{"star middle", []sub{{"a.*.c", 1}}, "a.b.c", []int{1}},
		{"overlapping once", []sub{
			{"orders.new", 1}, {"orders.*", 1}, {"orders.>", 1}, {"*.new", 1}, {">", 1}, {"*.*", 1},
		}, "orders.new", []int{1}},
		{"overlapping, several subscribers", []sub{
			{"orders.new", 1}, {"orders.*", 1}, {"orders.*", 2}, {"orders.>", 3}, {"*.new", 2}, {">", 4}, {"orders.old", 5},
		}, "orders.new", []int{1, 2, 3, 4}},
		{"add idempotent", []sub{{"orders.new", 1}, {"orders.new", 1}}, "orders.new", []int{1}},
		{"literal star channel", []sub{{"a.*", 1}, {"a.b", 2}}, "a.*", []int{1}},
		{"no subscribers", nil, "orders.new", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := newChannelIndex[int]()
			for _, s := range tc.subs {
				x.add(s.pattern, s.v)
			}
			chCheckIndex(t, x)
			if got := chMatch(t, x, tc.channel); !slices.Equal(got, tc.want) {
				t.Fatalf("match(%q) = %v, want %v", tc.channel, got, tc.want)
			}
			// The reference agrees with the table.
			ref := chRef{}
			for _, s := range tc.subs {
				ref.add(s.pattern, s.v)
			}
			if got := ref.match(tc.channel); !slices.Equal(got, tc.want) {
				t.Fatalf("reference match(%q) = %v, want %v", tc.channel, got, tc.want)
			}
		})
	}
}

func TestChannelRemovePrunes(t *testing.T) {
	x := newChannelIndex[int]()
	patterns := []string{"orders.new", "orders.*", "orders.>", "*.new", ">", "a.b.c.d", "a.*.c.>", "a.b"}
	for v := range 3 {
		for _, p := range patterns {
			x.add(p, v)
		}
	}
	chCheckIndex(t, x)
	if got := chMatch(t, x, "orders.new"); !slices.Equal(got, []int{0, 1, 2}) {
		t.Fatalf("match = %v", got)
	}

	// Removing one subscriber's patterns leaves the others'.
	for _, p := range patterns {
		x.remove(p, 1)
		x.remove(p, 1) // idempotent
		chCheckIndex(t, x)
	}
	x.remove("not.there", 0)
	x.remove("orders.*.x", 0)
	x.remove("orders.new.>", 0)
	chCheckIndex(t, x)
	if got := chMatch(t, x, "orders.new"); !slices.Equal(got, []int{0, 2}) {
		t.Fatalf("after removing 1: match = %v", got)
	}
	if _, ok := x.subs[1]; ok {
		t.Fatal("state of subscriber 1 kept after its last pattern")
	}

	// Removing one pattern of a subscriber keeps its other patterns.
	x.remove(">", 0)
	if got := chMatch(t, x, "zzz"); !slices.Equal(got, []int{2}) {
		t.Fatalf("after removing > of 0: match(zzz) = %v", got)
	}
	if got := chMatch(t, x, "orders.new"); !slices.Equal(got, []int{0, 2}) {
		t.Fatalf("after removing > of 0: match(orders.new) = %v", got)
	}

	for v := range 3 {
		for _, p := range patterns {
			x.remove(p, v)
		}
	}
	chCheckIndex(t, x)
	if !x.root.empty() || len(x.subs) != 0 {
		t.Fatalf("index not empty after removing everything: root %+v, subs %d", x.root, len(x.subs))
	}
}

// TestChannelChurnDoesNotGrow adds and removes many distinct patterns and
// checks that nothing is left behind.
func TestChannelChurnDoesNotGrow(t *testing.T) {
	x := newChannelIndex[int]()
	x.add("keep.*", -1)
	for i := range 5000 {
		p := fmt.Sprintf("t%d.orders.%d.>", i%7, i)
		x.add(p, i)
		x.add("keep.*", i)
		chMatch(t, x, fmt.Sprintf("t%d.orders.%d.x", i%7, i))
		x.remove(p, i)
		x.remove("keep.*", i)
	}
	chCheckIndex(t, x)
	if len(x.root.children) != 1 || len(x.subs) != 1 {
		t.Fatalf("churn left %d root children and %d subscribers", len(x.root.children), len(x.subs))
	}
	if got := chMatch(t, x, "keep.x"); !slices.Equal(got, []int{-1}) {
		t.Fatalf("match(keep.x) = %v", got)
	}
}

// chWords are the literal segments of random patterns and channels: few
// enough that random patterns and channels match often.
var chWords = []string{"orders", "eu", "us", "new", "old", "user", "1", "2", "a", "b"}

// chRandPattern returns a random pattern of 1..maxSegs segments from
// chWords, "*" and a last ">".
func chRandPattern(r *rand.Rand, maxSegs int) string {
	n := 1 + r.IntN(maxSegs)
	segs := make([]string, n)
	for i := range segs {
		switch k := r.IntN(10); {
		case k == 0:
			segs[i] = "*"
		case k == 1 && i == n-1:
			segs[i] = ">"
		default:
			segs[i] = chWords[r.IntN(len(chWords))]
		}
	}
	return strings.Join(segs, ".")
}

func chRandChannel(r *rand.Rand, maxSegs int) string {
	n := 1 + r.IntN(maxSegs)
	segs := make([]string, n)
	for i := range segs {
		segs[i] = chWords[r.IntN(len(chWords))]
	}
	return strings.Join(segs, ".")
}

// TestChannelManyPatterns is a property test with a fixed seed: 10,000
// subscribers with distinct patterns (and some with several overlapping
// ones), matched against a brute-force reference over random channels,
// then half of them removed and matched again.
func TestChannelManyPatterns(t *testing.T) {
	const subscribers = 10000
	r := rand.New(rand.NewPCG(1, 2))
	x := newChannelIndex[int]()
	ref := chRef{}
	type entry struct {
		pattern string
		v       int
	}
	var entries []entry
	distinct := map[string]bool{}
	for v := 0; v < subscribers; v++ {
		p := chRandPattern(r, 6)
		for distinct[p] {
			p = chRandPattern(r, 6)
		}
		distinct[p] = true
		entries = append(entries, entry{p, v})
		if v%10 == 0 { // a few subscribers with extra, possibly overlapping patterns
			for range 3 {
				entries = append(entries, entry{chRandPattern(r, 4), v})
			}
		}
	}
	for _, e := range entries {
		x.add(e.pattern, e.v)
		ref.add(e.pattern, e.v)
	}
	chCheckIndex(t, x)

	// The reference over split patterns, so the brute force stays cheap.
	type refPat struct {
		segs []string
		vs   map[int]bool
	}
	check := func(rounds int) {
		t.Helper()
		pats := make([]refPat, 0, len(ref))
		for p, vs := range ref {
			pats = append(pats, refPat{strings.Split(p, "."), vs})
		}
		matched := 0
		for range rounds {
			ch := chRandChannel(r, 7)
			cs := strings.Split(ch, ".")
			seen := map[int]bool{}
			for _, p := range pats {
				if chRefMatchSegs(p.segs, cs) {
					for v := range p.vs {
						seen[v] = true
					}
				}
			}
			want := make([]int, 0, len(seen))
			for v := range seen {
				want = append(want, v)
			}
			slices.Sort(want)
			got := chMatch(t, x, ch)
			if !slices.Equal(got, want) {
				t.Fatalf("match(%q): %d subscribers, reference %d", ch, len(got), len(want))
			}
			matched += len(want)
		}
		if matched == 0 {
			t.Fatal("random channels matched nothing: the test is not testing")
		}
	}
	check(300)

	r.Shuffle(len(entries), func(i, j int) { entries[i], entries[j] = entries[j], entries[i] })
	for _, e := range entries[:len(entries)/2] {
		x.remove(e.pattern, e.v)
		ref.remove(e.pattern, e.v)
	}
	chCheckIndex(t, x)
	check(300)

	for _, e := range entries[len(entries)/2:] {
		x.remove(e.pattern, e.v)
	}
	chCheckIndex(t, x)
	if !x.root.empty() || len(x.subs) != 0 {
		t.Fatal("index not empty after removing every pattern")
	}
}

// TestChannelMatchAllocs checks that match allocates nothing once warm,
// with one matching set and with several (deduplicated) ones.
func TestChannelMatchAllocs(t *testing.T) {
	x := newChannelIndex[int]()
	for v := range 1000 {
		x.add(fmt.Sprintf("user.%d", v), v)
		x.add(fmt.Sprintf("orders.%d.*", v%50), v)
		x.add("orders.>", v%10)
	}
	n := 0
	fn := func(int) { n++ }
	for _, ch := range []string{"user.7", "orders.7.new", "nothing.here"} {
		x.match(ch, fn) // warm the scratch space
		if a := testing.AllocsPerRun(100, func() { x.match(ch, fn) }); a != 0 {
			t.Errorf("match(%q): %v allocs, want 0", ch, a)
		}
	}
}

func TestValidChannel(t *testing.T) {
	long := strings.Repeat("a", maxChannelLen)
	cases := []struct {
		name    string
		pattern bool
		ok      bool
		msg     string // a fragment of the error message
	}{
		{"orders", false, true, ""},
		{"orders.new", false, true, ""},
		{"user.123", false, true, ""},
		{"a_b-c:d@e+f=g~h.Z9", false, true, ""},
		{long, false, true, ""},
		{strings.Repeat("a.", maxChannelSegments-1) + "a", false, true, ""},
		{"orders.*", true, true, ""},
		{"*", true, true, ""},
		{">", true, true, ""},
		{"orders.>", true, true, ""},
		{"*.eu.>", true, true, ""},
		{"*.*.*", true, true, ""},
		{"orders.new", true, true, ""},
		{strings.Repeat("*.", maxChannelSegments-1) + ">", true, true, ""},

		{"", false, false, "empty channel"},
		{"", true, false, "empty channel pattern"},
		{long + "a", false, false, "longer than 256 bytes"},
		{strings.Repeat("a.", maxChannelSegments) + "a", false, false, "more than 16"},
		{strings.Repeat("*.", maxChannelSegments) + ">", true, false, "more than 16"},
		{".orders", false, false, "empty segment"},
		{"orders.", false, false, "empty segment"},
		{"orders..new", true, false, "empty segment"},
		{".", true, false, "empty segment"},
		{"orders.*", false, false, "only allowed in subscription patterns"},
		{"orders.>", false, false, "only allowed in subscription patterns"},
		{"or*ders", false, false, "only allowed in subscription patterns"},
		{"orders>", false, false, "only allowed in subscription patterns"},
		{"orders.n*", true, false, "must be a whole segment"},
		{"orders.>x", true, false, "must be a whole segment"},
		{"**", true, false, "must be a whole segment"},
		{">.orders", true, false, "last segment"},
		{"a.>.>", true, false, "last segment"},
		{"orders new", false, false, `character " " not allowed`},
		{"orders\tnew", false, false, `not allowed`},
		{"orders\x00", true, false, `not allowed`},
		{"orders\x7f", true, false, `not allowed`},
		{"a/b", false, false, `character "/" not allowed`},
		{"a,b", true, false, `character "," not allowed`},
		{"a%2e", true, false, `character "%" not allowed`},
		{"a?b", true, false, "not allowed"},
		{"a#b", true, false, "not allowed"},
		{"commandé", false, false, "non-ASCII"},
		{"a\xffb", true, false, "non-ASCII"},
	}
	for _, tc := range cases {
		err := validChannel(tc.name, tc.pattern)
		if tc.ok {
			if err != nil {
				t.Errorf("validChannel(%q, %v) = %v, want nil", tc.name, tc.pattern, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("validChannel(%q, %v) = nil, want an error", tc.name, tc.pattern)
			continue
		}
		if !errors.Is(err, ErrBadRequest) {
			t.Errorf("validChannel(%q, %v) = %v, does not wrap ErrBadRequest", tc.name, tc.pattern, err)
		}
		if msg := publicMessage(err); !strings.Contains(msg, tc.msg) {
			t.Errorf("validChannel(%q, %v) message %q, want it to contain %q", tc.name, tc.pattern, msg, tc.msg)
		}
	}
}

// FuzzChannelIndex runs random add/remove/match operations against the
// brute-force reference. Each operation is 3 bytes: the kind and
// subscriber, then a pattern or channel drawn from a small vocabulary so
// that they collide and overlap.
func FuzzChannelIndex(f *testing.F) {
	f.Add([]byte{0, 0, 1, 2, 0, 1})
	f.Add([]byte{0, 1, 2, 0, 2, 3, 2, 0, 0, 1, 1, 2, 2, 0, 0})
	f.Add([]byte("add some patterns then match and remove them all again"))
	segs := []string{"a", "b", "c", "*", ">"}
	// build decodes a pattern (or a channel when concrete) from b and c:
	// 1 to 4 segments (the top 2 bits of b), each a base-5 digit of the
	// other 14 bits picking a segment.
	build := func(b byte, c byte, concrete bool) string {
		n := 1 + int(b>>6)
		v := int(b&0x3f)<<8 | int(c)
		out := make([]string, n)
		for i := range out {
			k := v % len(segs)
			v /= len(segs)
			if concrete {
				k %= 3
			} else if k == 4 && i != n-1 {
				k = 3 // ">" only last, as validChannel guarantees
			}
			out[i] = segs[k]
		}
		return strings.Join(out, ".")
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		x := newChannelIndex[int]()
		ref := chRef{}
		for len(ops) >= 3 {
			op, b, c := ops[0], ops[1], ops[2]
			ops = ops[3:]
			v := int(op>>2) % 5
			switch op % 4 {
			case 0, 1:
				p := build(b, c, false)
				x.add(p, v)
				ref.add(p, v)
			case 2:
				p := build(b, c, false)
				x.remove(p, v)
				ref.remove(p, v)
			case 3:
				ch := build(b, c, true)
				if got, want := chMatch(t, x, ch), ref.match(ch); !slices.Equal(got, want) {
					t.Fatalf("match(%q) = %v, reference %v", ch, got, want)
				}
			}
		}
		chCheckIndex(t, x)
		for p, vs := range ref {
			for v := range vs {
				x.remove(p, v)
			}
		}
		if !x.root.empty() || len(x.subs) != 0 {
			t.Fatal("index not empty after removing every pattern")
		}
	})
}

// BenchmarkChannelMatch matches channels against 10,000 subscribers with
// one or more patterns each: per-user channels ("user.<n>"), per-tenant
// order wildcards ("t<n>.orders.*", "t<n>.orders.>") and a few global
// wildcards.
func BenchmarkChannelMatch(b *testing.B) {
	const subscribers = 10000
	x := newChannelIndex[int]()
	for v := range subscribers {
		x.add(fmt.Sprintf("user.%d", v), v)
		tenant := v / 4 % 100 // 100 tenants of 100 subscribers
		switch v % 4 {
		case 0:
			x.add(fmt.Sprintf("t%d.orders.*", tenant), v)
		case 1:
			x.add(fmt.Sprintf("t%d.orders.>", tenant), v)
		case 2:
			x.add(fmt.Sprintf("t%d.*.new", tenant), v)
		}
		if v%1000 == 0 {
			x.add("*.orders.new", v)
		}
	}
	for _, bc := range []struct{ name, channel string }{
		{"exact/one", "user.4242"},                      // one set, one subscriber
		{"miss", "nobody.here"},                         // nothing matches
		{"wildcards/several", "t42.orders.new"},         // 4 sets: 25+25+25 of t42, 10 of *.orders.new
		{"wildcards/rest", "t42.orders.eu.north.x.y.z"}, // one ">" set of 25
	} {
		b.Run(bc.name, func(b *testing.B) {
			n := 0
			fn := func(int) { n++ }
			b.ReportAllocs()
			for b.Loop() {
				x.match(bc.channel, fn)
			}
			b.ReportMetric(float64(n)/float64(b.N), "subs/op")
		})
	}
}
