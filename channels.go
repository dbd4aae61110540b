package realtime

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Channel name limits (PROTOCOL.md §6). A pattern and a concrete channel
// obey the same limits.
const (
	// maxChannelSegments is the most dot-separated segments of a channel
	// name or pattern (">" and "*" count as segments).
	maxChannelSegments = 16
	// maxChannelLen is the most bytes of a channel name or pattern.
	maxChannelLen = 256
)

// channelIndex maps channel patterns to subscribers (connections) so that a
// message to a concrete channel finds its subscribers without scanning
// every pattern of every connection.
//
// Patterns are dot-separated: "*" as a whole segment matches exactly one
// segment; ">" as the whole last segment matches one or more further
// segments ("orders.>" matches "orders.eu" and "orders.eu.new", not
// "orders"; ">" alone matches every channel); any other segment matches
// itself only.
//
// The index is a trie over segments. Each node has
//   - children by literal segment and one child for "*",
//   - exact: the subscribers whose pattern ends at this node,
//   - rest: the subscribers whose pattern ends with ">" right after this
//     node (they match any channel with at least one more segment).
//
// Subscriber sets map each subscriber to its shared *chanSub, which carries
// a generation stamp: match dedupes a subscriber reached through several
// of its patterns without a per-call set and without allocating.
//
// match costs O(k + m + d) map operations: k the trie nodes whose path
// matches a prefix of the channel, i.e. the distinct pattern prefixes that
// match (each visited once; one per segment for literal patterns, more
// where both a literal and a "*" branch exist), m the matching subscriber
// sets, d the deliveries (plus skipped duplicates). Patterns that cannot
// match are never looked at, so the cost does not grow with them.
//
// A channelIndex is not safe for concurrent use, not even two concurrent
// matches (match writes the stamps and its scratch space): the caller
// serialises every call (add, remove, match) with its own lock. The zero
// value is not usable; use newChannelIndex.
type channelIndex[T comparable] struct {
	root chanNode[T]
	// subs holds one entry per subscriber with at least one pattern.
	subs map[T]*chanSub
	// gen is the stamp of the current (or last) match call.
	gen uint64
	// sets is match's scratch list of matching subscriber sets, kept
	// between calls so a match does not allocate once it has grown.
	sets []map[T]*chanSub
}

// chanNode is one trie node; see channelIndex.
type chanNode[T comparable] struct {
	children map[string]*chanNode[T] // literal segments; nil when none
	star     *chanNode[T]            // the "*" segment; nil when none
	exact    map[T]*chanSub          // patterns ending here; nil when none
	rest     map[T]*chanSub          // patterns ending in ">" after here
}

// empty reports whether n holds nothing and can be pruned.
func (n *chanNode[T]) empty() bool {
	return len(n.children) == 0 && n.star == nil && len(n.exact) == 0 && len(n.rest) == 0
}

// chanSub is the per-subscriber state shared by all its patterns.
type chanSub struct {
	patterns int    // number of (pattern, subscriber) entries in the index
	gen      uint64 // last match call that delivered this subscriber
}

func newChannelIndex[T comparable]() *channelIndex[T] {
	return &channelIndex[T]{subs: make(map[T]*chanSub)}
}

// add subscribes v to pattern. The pattern should have been validated by
// the caller with validChannel(pattern, true); add itself accepts any
// string (a "*" segment is a wildcard, a last ">" segment is the rest
// wildcard, everything else is literal). Adding a (pattern, v) pair that is
// already present does nothing.
func (x *channelIndex[T]) add(pattern string, v T) {
	n := &x.root
	rest := pattern
	for {
		seg, tail, more := strings.Cut(rest, ".")
		if !more && seg == ">" {
			n.rest = x.put(n.rest, v)
			return
		}
		n = n.child(seg)
		if !more {
			n.exact = x.put(n.exact, v)
			return
		}
		rest = tail
	}
}

// child returns n's child for seg, creating it.
func (n *chanNode[T]) child(seg string) *chanNode[T] {
	if seg == "*" {
		if n.star == nil {
			n.star = &chanNode[T]{}
		}
		return n.star
	}
	c := n.children[seg]
	if c == nil {
		if n.children == nil {
			n.children = make(map[string]*chanNode[T], 1)
		}
		c = &chanNode[T]{}
		n.children[strings.Clone(seg)] = c
	}
	return c
}

// put adds v to set (allocated when nil), counting a new entry.
func (x *channelIndex[T]) put(set map[T]*chanSub, v T) map[T]*chanSub {
	if _, ok := set[v]; ok {
		return set
	}
	s := x.subs[v]
	if s == nil {
		s = &chanSub{}
		x.subs[v] = s
	}
	s.patterns++
	if set == nil {
		set = make(map[T]*chanSub, 1)
	}
	set[v] = s
	return set
}

// remove unsubscribes v from pattern; removing a pair that is not present
// does nothing. Trie nodes left empty are pruned, and a subscriber's state
// is dropped with its last pattern, so memory follows the live patterns
// however many come and go.
func (x *channelIndex[T]) remove(pattern string, v T) {
	x.removeAt(&x.root, pattern, v)
}

// removeAt removes (rest, v) below n and reports whether n is now empty.
func (x *channelIndex[T]) removeAt(n *chanNode[T], rest string, v T) bool {
	seg, tail, more := strings.Cut(rest, ".")
	if !more && seg == ">" {
		x.drop(&n.rest, v)
		return n.empty()
	}
	var c *chanNode[T]
	if seg == "*" {
		c = n.star
	} else {
		c = n.children[seg]
	}
	if c == nil {
		return false // not present; n unchanged
	}
	var cEmpty bool
	if more {
		cEmpty = x.removeAt(c, tail, v)
	} else {
		x.drop(&c.exact, v)
		cEmpty = c.empty()
	}
	if cEmpty {
		if seg == "*" {
			n.star = nil
		} else {
			delete(n.children, seg)
			if len(n.children) == 0 {
				n.children = nil
			}
		}
	}
	return n.empty()
}

// drop removes v from *set, releasing the set when empty and v's state
// with its last pattern.
func (x *channelIndex[T]) drop(set *map[T]*chanSub, v T) {
	s, ok := (*set)[v]
	if !ok {
		return
	}
	delete(*set, v)
	if len(*set) == 0 {
		*set = nil
	}
	if s.patterns--; s.patterns == 0 {
		delete(x.subs, v)
	}
}

// match calls fn once for every v subscribed to a pattern matching channel
// (once per v, even when several of its patterns match), in no particular
// order. It walks only the trie branches that can match: the literal child
// for each segment of channel, the "*" child, and the ">" sets on the way.
//
// It allocates nothing once its scratch space has grown to the largest
// number of matching subscriber sets seen. When a single set matches its
// members are delivered directly; otherwise duplicates are skipped with a
// per-call generation stamp kept in each subscriber's state.
//
// fn must not call add, remove or match on x (the index is being walked
// and its scratch space is in use).
func (x *channelIndex[T]) match(channel string, fn func(T)) {
	sets := x.sets[:0]
	sets = x.root.collect(channel, sets)
	switch len(sets) {
	case 0:
	case 1:
		for v := range sets[0] {
			fn(v)
		}
	default:
		x.gen++
		gen := x.gen
		for _, set := range sets {
			for v, s := range set {
				if s.gen == gen {
					continue
				}
				s.gen = gen
				fn(v)
			}
		}
	}
	clear(sets) // do not keep pruned nodes' sets alive
	x.sets = sets[:0]
}

// collect appends to sets the subscriber sets below n matching channel, a
// non-empty remainder of segments (one segment at least, possibly empty).
func (n *chanNode[T]) collect(channel string, sets []map[T]*chanSub) []map[T]*chanSub {
	if len(n.rest) > 0 {
		sets = append(sets, n.rest) // channel has at least one more segment
	}
	seg, tail, more := strings.Cut(channel, ".")
	if c := n.children[seg]; c != nil {
		sets = c.collectAt(tail, more, sets)
	}
	if n.star != nil {
		sets = n.star.collectAt(tail, more, sets)
	}
	return sets
}

// collectAt continues collect at n, the node for the segment just matched.
func (n *chanNode[T]) collectAt(tail string, more bool, sets []map[T]*chanSub) []map[T]*chanSub {
	if more {
		return n.collect(tail, sets)
	}
	if len(n.exact) > 0 {
		sets = append(sets, n.exact)
	}
	return sets
}

// channelChars is the set of bytes allowed in a channel segment besides
// ASCII letters and digits.
const channelChars = "_-:@+=~"

// validChannel checks a channel name (pattern false: a concrete channel to
// publish to) or a subscription pattern (pattern true: may contain "*"
// segments and a trailing ">"). It returns an error wrapping ErrBadRequest
// whose message tells the client what to change, or nil.
//
// The rules:
//   - at most maxChannelLen (256) bytes and maxChannelSegments (16)
//     dot-separated segments, none of them empty (no leading, trailing or
//     doubled dot);
//   - segments of ASCII letters, digits and the characters _ - : @ + = ~
//     (no spaces, control characters, non-ASCII, "/", "," or "%", so a
//     name is safe in a URL path; "+" must be percent-encoded in a query
//     string);
//   - in patterns only: "*" as a whole segment (one segment), ">" as the
//     whole last segment (one or more segments). A concrete channel
//     contains neither.
func validChannel(name string, pattern bool) error {
	what := "channel"
	if pattern {
		what = "channel pattern"
	}
	if name == "" {
		return badRequest("empty " + what)
	}
	if len(name) > maxChannelLen {
		return badRequest(fmt.Sprintf("%s longer than %d bytes", what, maxChannelLen))
	}
	segs := 0
	rest := name
	for {
		seg, tail, more := strings.Cut(rest, ".")
		segs++
		if segs > maxChannelSegments {
			return badRequest(fmt.Sprintf("%s %q has more than %d dot-separated segments", what, name, maxChannelSegments))
		}
		if err := validSegment(name, seg, pattern, !more, what); err != nil {
			return err
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// validSegment checks one segment of name; last tells whether it is the
// last segment.
func validSegment(name, seg string, pattern, last bool, what string) error {
	switch seg {
	case "":
		return badRequest(fmt.Sprintf("%s %q has an empty segment (leading, trailing or double dot)", what, name))
	case "*":
		if !pattern {
			return badRequest(fmt.Sprintf("channel %q: wildcard \"*\" is only allowed in subscription patterns", name))
		}
		return nil
	case ">":
		if !pattern {
			return badRequest(fmt.Sprintf("channel %q: wildcard \">\" is only allowed in subscription patterns", name))
		}
		if !last {
			return badRequest(fmt.Sprintf("%s %q: \">\" is only allowed as the last segment", what, name))
		}
		return nil
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte(channelChars, c) >= 0:
		case (c == '*' || c == '>') && !pattern:
			return badRequest(fmt.Sprintf("channel %q: wildcard %q is only allowed in subscription patterns", name, string(c)))
		case c == '*' || c == '>':
			return badRequest(fmt.Sprintf("%s %q: wildcard %q must be a whole segment", what, name, string(c)))
		case c >= utf8.RuneSelf:
			return badRequest(fmt.Sprintf("%s %q: non-ASCII characters are not allowed (use letters, digits and %s)", what, name, channelChars))
		default:
			return badRequest(fmt.Sprintf("%s %q: character %q not allowed (use letters, digits and %s)", what, name, string(c), channelChars))
		}
	}
	return nil
}

// channelPatternMatches reports whether pattern ("*" one segment, trailing
// ">" one or more further segments) matches the concrete channel. It is the
// per-connection check of a push to given users; channelIndex serves the
// push to a channel's subscribers.
func channelPatternMatches(pattern, channel string) bool {
	for {
		ps, prest, pmore := cutDot(pattern)
		cs, crest, cmore := cutDot(channel)
		if ps == ">" && !pmore {
			return true // cs is at least one segment
		}
		if ps != "*" && ps != cs {
			return false
		}
		if pmore != cmore {
			return false
		}
		if !pmore {
			return true
		}
		pattern, channel = prest, crest
	}
}

func cutDot(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
