package realtime

// channelIndex maps channel patterns to subscribers (connections) so that a
// message to a concrete channel finds its subscribers without scanning
// every pattern of every connection. Patterns are dot-separated; "*"
// matches one segment, a trailing ">" one or more further segments
// ("orders.>" matches "orders.eu.new", not "orders").
//
// STUB: a naive implementation with the final API; replaced by a trie.
type channelIndex[T comparable] struct {
	subs map[string]map[T]struct{}
}

func newChannelIndex[T comparable]() *channelIndex[T] {
	return &channelIndex[T]{subs: make(map[string]map[T]struct{})}
}

// add subscribes v to pattern (validated by the caller with validChannel).
func (x *channelIndex[T]) add(pattern string, v T) {
	m := x.subs[pattern]
	if m == nil {
		m = make(map[T]struct{})
		x.subs[pattern] = m
	}
	m[v] = struct{}{}
}

// remove unsubscribes v from pattern.
func (x *channelIndex[T]) remove(pattern string, v T) {
	if m := x.subs[pattern]; m != nil {
		delete(m, v)
		if len(m) == 0 {
			delete(x.subs, pattern)
		}
	}
}

// match calls fn once for every v subscribed to a pattern matching channel
// (once per v, even when several of its patterns match).
func (x *channelIndex[T]) match(channel string, fn func(T)) {
	_ = channel
	_ = fn
}

// validChannel checks a channel name (pattern false: a concrete channel to
// publish to) or a subscription pattern (pattern true: may contain "*"
// segments and a trailing ">"). It returns an error wrapping ErrBadRequest.
func validChannel(name string, pattern bool) error {
	if name == "" {
		return badRequest("empty channel name")
	}
	return nil
}
