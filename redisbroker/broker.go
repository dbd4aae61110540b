package redisbroker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ginrealtime/realtime"
	"github.com/redis/go-redis/v9"
)

// Broker is a realtime.Broker and realtime.PresenceStore on Redis: one per
// node (app instance), all sharing one Redis (or Redis Cluster) and one
// Config.Prefix. See the package documentation.
type Broker struct {
	client redis.UniversalClient
	cfg    Config
	log    *slog.Logger
	keys   keys
	id     string // random: names the probe channel
	probe  string // probe channel

	// now is the clock of the age bound (MaxAge) of Since: tests set it.
	now func() time.Time

	// cmdMu orders the subscription commands: the decision to (un)subscribe
	// a channel, the queuing of its confirmation and the write of the
	// command happen under it, so the confirmations come back in that order.
	cmdMu sync.Mutex
	// dmu is held by run around each node call about a channel, and
	// taken by Unwatch and Unlisten once the channel is dropped.
	dmu sync.Mutex

	mu      sync.Mutex
	node    realtime.Node
	started bool
	stopped bool
	chans   map[string]*chanState // wanted channels, by name
	sess    *session              // current Pub/Sub link; nil while down
	// linkCh is closed and replaced whenever the link changes state.
	linkCh chan struct{}
	// tried is set once the first link attempt has ended (up or not):
	// before, Watch and Listen wait for it instead of failing.
	tried   bool
	healthy bool // last state reported to Node.Health
	seq     int  // sessions opened
	// counts are the link's catch-ups (stats.go).
	counts linkCounts

	stop   chan struct{}
	ctx    context.Context // ended by Stop: the link's commands
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var (
	_ realtime.Broker        = (*Broker)(nil)
	_ realtime.PresenceStore = (*Broker)(nil)
	_ realtime.Pusher        = (*Broker)(nil)
)

// New returns a Broker on client with cfg (zero fields take their
// defaults). It does not contact Redis: Start does. The app closes client
// itself, after Stop.
func New(client redis.UniversalClient, cfg Config) (*Broker, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: nil redis client", ErrInvalidConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	b := &Broker{
		client:  client,
		cfg:     cfg,
		log:     cfg.Logger,
		keys:    keys{prefix: cfg.Prefix},
		id:      randomID(),
		now:     time.Now,
		chans:   make(map[string]*chanState),
		linkCh:  make(chan struct{}),
		healthy: true,
		stop:    make(chan struct{}),
	}
	b.probe = b.keys.probe(b.id)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// randomID returns 128 random bits in hex.
func randomID() string {
	var r [16]byte
	_, _ = rand.Read(r[:]) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(r[:])
}

// Append implements realtime.Buffer: one script stores the event at the end
// of its stream, links it to the previous one and publishes it. A retry of
// the script (go-redis retries a command whose connection broke) carries the
// same dedupe id and returns the entry written by the first run.
func (b *Broker) Append(ctx context.Context, key realtime.StreamKey, ev *realtime.Event) (uint64, error) {
	seqs, _, err := b.appendOnce(ctx, []realtime.StreamKey{key}, ev, randomID(), false, realtime.AppendInOrder)
	if err != nil {
		return 0, err
	}
	return seqs[0], nil
}

// AppendRecord implements realtime.Broker: the event is appended to the
// record's stream and to its collection's by one script (both or neither,
// nothing between them), deduplicated like Append. With ev.Version > 0 the
// same script applies the version rule against the record's last version
// (its version key): a duplicate returns dup true, a version beyond the
// next one an error wrapping ErrOutOfOrder (and realtime.ErrOutOfOrder)
// unless mode is realtime.AppendGap, and with mode
// realtime.AppendIfLastKnown a version above 1 without a version key an
// error wrapping ErrLastUnknown (and realtime.ErrLastUnknown); nothing is
// appended or published then.
func (b *Broker) AppendRecord(ctx context.Context, ev *realtime.Event, mode realtime.AppendMode) (bool, error) {
	if ev == nil {
		return false, fmt.Errorf("redisbroker: append: %w: nil event", realtime.ErrBadRequest)
	}
	if err := mode.Validate(); err != nil {
		return false, fmt.Errorf("redisbroker: append: %w", err)
	}
	coll := realtime.StreamKey{Tenant: ev.Ref.Tenant, Collection: ev.Ref.Collection}
	_, dup, err := b.appendOnce(ctx, []realtime.StreamKey{ev.Ref, coll}, ev, randomID(), true, mode)
	return dup, err
}

// Statuses of appendScript.
const (
	appendDone    = 0 // appended now
	appendRetried = 1 // appended by an earlier run with the same dedupe id
	appendDup     = 2 // a version at or below the record's last: nothing done
	appendAhead   = 3 // a version beyond the next one: nothing done
	appendUnknown = 4 // the record's last version unknown (mode if-last-known): nothing done
)

// appendOnce appends ev to streams (of one collection) with the dedupe id
// given (tests call it twice with one id, as a retry would). With record
// set, streams[0] is ev.Ref's stream and the version rule applies (ev.Version,
// mode): it returns dup true for a duplicate version. The dedupe id (its
// first 8 hex digits) also seeds the epoch of a stream that has none.
func (b *Broker) appendOnce(ctx context.Context, streams []realtime.StreamKey, ev *realtime.Event, dedupe string, record bool, mode realtime.AppendMode) ([]uint64, bool, error) {
	seqs, dup, _, err := b.appendRun(ctx, streams, ev, dedupe, record, mode, nil)
	return seqs, dup, err
}

// pushArgs is the message a push publishes once its event is appended
// (Push), and the channels it is published on.
type pushArgs struct {
	msg      []byte
	channels []string
}

// appendRun is appendOnce that, with push, also publishes push's message
// (appendScript) and returns its receivers.
func (b *Broker) appendRun(ctx context.Context, streams []realtime.StreamKey, ev *realtime.Event, dedupe string, record bool, mode realtime.AppendMode, push *pushArgs) ([]uint64, bool, int, error) {
	if ev == nil {
		return nil, false, 0, fmt.Errorf("redisbroker: append: %w: nil event", realtime.ErrBadRequest)
	}
	data, err := realtime.MarshalEvent(ev)
	if err != nil {
		return nil, false, 0, fmt.Errorf("redisbroker: append: %w: %w", realtime.ErrBadRequest, err)
	}
	first := streams[0]
	n := len(streams)
	ks := make([]string, 2*n, 2*n+3)
	for i, k := range streams {
		ks[i] = b.keys.stream(k)
		ks[n+i] = epochKey(ks[i])
	}
	ks = append(ks, b.keys.index(first.Tenant, first.Collection), b.keys.dedupe(first, dedupe))
	version, below, modeArg := "0", "0", "0"
	if record {
		ks = append(ks, b.keys.version(first))
		if ev.Version > 0 {
			version = strconv.FormatUint(ev.Version, 10)
			below = strconv.FormatUint(ev.Version-1, 10)
		}
		switch mode {
		case realtime.AppendGap:
			modeArg = "1"
		case realtime.AppendIfLastKnown:
			modeArg = "2"
		}
	}
	args := []any{n, b.cfg.Size, b.cfg.StreamTTL.Milliseconds(), ev.ETag, data, int64(dedupeTTL / time.Second),
		epochSeed(dedupe), version, below, modeArg}
	if push != nil {
		args = append(args, push.msg)
		for _, c := range push.channels {
			args = append(args, c)
		}
	}
	res, err := appendScript.Run(ctx, b.client, ks, args...).Slice()
	if err != nil {
		return nil, false, 0, unavailable("append", err)
	}
	if len(res) < 2 {
		return nil, false, 0, fmt.Errorf("%w: append answered %d values", ErrCorrupt, len(res))
	}
	status, ok1 := res[0].(int64)
	last, ok2 := res[1].(string)
	if !ok1 || !ok2 {
		return nil, false, 0, fmt.Errorf("%w: append answered %T %T", ErrCorrupt, res[0], res[1])
	}
	switch status {
	case appendDup:
		return nil, true, 0, nil
	case appendAhead:
		return nil, false, 0, fmt.Errorf("%w: append %s/%s: version %d after %s", ErrOutOfOrder, first.Collection, first.ID, ev.Version, last)
	case appendUnknown:
		return nil, false, 0, fmt.Errorf("%w: append %s/%s: version %d", ErrLastUnknown, first.Collection, first.ID, ev.Version)
	case appendDone, appendRetried:
	default:
		return nil, false, 0, fmt.Errorf("%w: append answered status %d", ErrCorrupt, status)
	}
	// A push retried after its first run (appendRetried) published
	// already: its receivers are not known.
	if len(res) != n+2 && (push == nil || len(res) != n+3) {
		return nil, false, 0, fmt.Errorf("%w: append answered %d values", ErrCorrupt, len(res))
	}
	seqs := make([]uint64, n)
	for i := range streams {
		id, _ := res[i+2].(string)
		if seqs[i], err = position(id); err != nil {
			return nil, false, 0, err
		}
	}
	nodes := 0
	if len(res) == n+3 {
		k, _ := res[n+2].(int64)
		nodes = int(k)
	}
	return seqs, false, nodes, nil
}

// epochSeed returns the seed of a new epoch (epochFunc) from a random id
// (randomID): its first 8 hex digits.
func epochSeed(random string) string {
	if len(random) > 8 {
		return random[:8]
	}
	return random
}

// entry is a stream entry as stored.
type entry struct {
	id, prev string
	seq      uint64
	etag     string
	ev       string // MarshalEvent bytes
}

func parseEntry(m redis.XMessage) (entry, error) {
	e := entry{id: m.ID}
	var ok1, ok2, ok3 bool
	e.etag, ok1 = m.Values["etag"].(string)
	e.prev, ok2 = m.Values["prev"].(string)
	e.ev, ok3 = m.Values["ev"].(string)
	if !ok1 || !ok2 || !ok3 {
		return e, fmt.Errorf("%w: entry %s lacks a field", ErrCorrupt, m.ID)
	}
	var err error
	e.seq, err = position(m.ID)
	return e, err
}

func (e entry) decode() (realtime.Entry, error) {
	ev, err := realtime.UnmarshalEvent([]byte(e.ev))
	if err != nil {
		return realtime.Entry{}, fmt.Errorf("%w: entry %s: %w", ErrCorrupt, e.id, err)
	}
	return realtime.Entry{Seq: e.seq, Event: ev}, nil
}

// Since implements realtime.Buffer with the answers of
// realtime.MemoryBuffer: the stream's newest Size entries, without those
// older than MaxAge (from the oldest on), are searched for lastID; an ETag
// found twice is unknown; on a record stream the newest ETag is up to date
// even when its entry aged out (trimming by count keeps the newest entry,
// so it is always there).
func (b *Broker) Since(ctx context.Context, key realtime.StreamKey, lastID string) (realtime.Lookup, error) {
	msgs, err := b.client.XRevRangeN(ctx, b.keys.stream(key), "+", "-", int64(b.cfg.Size)).Result()
	if err != nil {
		return realtime.Lookup{}, unavailable("since", err)
	}
	if len(msgs) == 0 {
		return realtime.Lookup{Status: realtime.LookupUnknown}, nil
	}
	// Oldest first.
	ents := make([]entry, len(msgs))
	for i, m := range msgs {
		e, err := parseEntry(m)
		if err != nil {
			return realtime.Lookup{}, err
		}
		ents[len(msgs)-1-i] = e
	}
	head := ents[len(ents)-1]
	if lastID == "" {
		return realtime.Lookup{Status: realtime.LookupUnknown, Seq: head.seq}, nil
	}
	if key.ID != "" && lastID == head.etag {
		d, err := head.decode()
		if err != nil {
			return realtime.Lookup{}, err
		}
		return realtime.Lookup{Status: realtime.LookupUpToDate, Seq: head.seq, Version: d.Event.Version}, nil
	}
	// The age bound, from the oldest on, as MemoryBuffer trims.
	cutoff := b.now().Add(-b.cfg.MaxAge)
	decoded := make([]realtime.Entry, 0, len(ents))
	for i, e := range ents {
		d, err := e.decode()
		if err != nil {
			return realtime.Lookup{}, err
		}
		if len(decoded) == 0 && d.Event.Time.Before(cutoff) {
			ents[i] = entry{} // aged out
			continue
		}
		decoded = append(decoded, d)
	}
	return realtime.ResumeIn(decoded, lastID, key.ID != ""), nil
}

// Invalidate implements realtime.Buffer: every stream of the collection is
// emptied (in one script). An emptied stream keeps its last id, so later
// positions are larger than every earlier one.
func (b *Broker) Invalidate(ctx context.Context, tenant, collection string) error {
	if err := invalidateScript.Run(ctx, b.client, []string{b.keys.index(tenant, collection)}).Err(); err != nil {
		return unavailable("invalidate", err)
	}
	return nil
}

// watchBase returns the epoch of stream name (created if missing) and its
// last generated id ("" for none): where a watch begins.
func (b *Broker) watchBase(ctx context.Context, name string) (epoch, last string, err error) {
	v, err := watchScript.Run(ctx, b.client, []string{name, epochKey(name)},
		epochSeed(randomID()), b.cfg.StreamTTL.Milliseconds()).Slice()
	if err != nil {
		return "", "", unavailable("watch", err)
	}
	if len(v) != 2 {
		return "", "", fmt.Errorf("%w: watch answer", ErrCorrupt)
	}
	epoch, ok1 := v[0].(string)
	last, ok2 := v[1].(string)
	if !ok1 || !ok2 || epoch == "" {
		return "", "", fmt.Errorf("%w: watch answer", ErrCorrupt)
	}
	return epoch, last, nil
}

// readAfter returns the epoch of stream name (created if missing), its
// last generated id, and its entries after id ("" for all), oldest first.
func (b *Broker) readAfter(ctx context.Context, name, id string) (string, string, []entry, error) {
	v, err := catchUpScript.Run(ctx, b.client, catchUpKeys(name), catchUpArgs(b, id)...).Result()
	if err != nil {
		return "", "", nil, unavailable("catch up", err)
	}
	return parseCatchUp(v)
}

// catchUpKeys and catchUpArgs are catchUpScript's keys and arguments for
// stream name read after id.
func catchUpKeys(name string) []string { return []string{name, epochKey(name)} }

func catchUpArgs(b *Broker, id string) []any {
	return []any{epochSeed(randomID()), b.cfg.StreamTTL.Milliseconds(), after(id)}
}

// parseCatchUp reads catchUpScript's answer: the epoch and last id are
// returned even when an entry is unreadable (the error wraps ErrCorrupt).
func parseCatchUp(v any) (epoch, last string, ents []entry, err error) {
	bad := fmt.Errorf("%w: catch-up answer", ErrCorrupt)
	top, ok := v.([]any)
	if !ok || len(top) != 3 {
		return "", "", nil, bad
	}
	epoch, ok1 := top[0].(string)
	last, ok2 := top[1].(string)
	raw, ok3 := top[2].([]any)
	if !ok1 || !ok2 || !ok3 || epoch == "" {
		return "", "", nil, bad
	}
	msgs := make([]redis.XMessage, len(raw))
	for i, r := range raw {
		pair, ok := r.([]any)
		if !ok || len(pair) != 2 {
			return epoch, last, nil, bad
		}
		id, ok1 := pair[0].(string)
		kv, ok2 := pair[1].([]any)
		if !ok1 || !ok2 || len(kv)%2 != 0 {
			return epoch, last, nil, bad
		}
		vals := make(map[string]any, len(kv)/2)
		for j := 0; j < len(kv); j += 2 {
			k, _ := kv[j].(string)
			vals[k] = kv[j+1]
		}
		msgs[i] = redis.XMessage{ID: id, Values: vals}
	}
	ents, err = parseEntries(msgs)
	return epoch, last, ents, err
}

func parseEntries(msgs []redis.XMessage) ([]entry, error) {
	out := make([]entry, len(msgs))
	for i, m := range msgs {
		e, err := parseEntry(m)
		if err != nil {
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

// itoa is strconv.Itoa, short.
func itoa(n int) string { return strconv.Itoa(n) }

var _ realtime.RecentReader = (*Broker)(nil)

// Recent implements realtime.RecentReader (channel history): key's newest
// n entries still kept (at most Size; leading entries older than MaxAge
// dropped, as Since trims), oldest first.
func (b *Broker) Recent(ctx context.Context, key realtime.StreamKey, n int) ([]realtime.Entry, error) {
	if n <= 0 {
		return nil, nil
	}
	msgs, err := b.client.XRevRangeN(ctx, b.keys.stream(key), "+", "-", int64(min(n, b.cfg.Size))).Result()
	if err != nil {
		return nil, unavailable("recent", err)
	}
	cutoff := b.now().Add(-b.cfg.MaxAge)
	out := make([]realtime.Entry, 0, len(msgs))
	for i := len(msgs) - 1; i >= 0; i-- {
		e, err := parseEntry(msgs[i])
		if err != nil {
			return nil, err
		}
		d, err := e.decode()
		if err != nil {
			return nil, err
		}
		if len(out) == 0 && d.Event.Time.Before(cutoff) {
			continue
		}
		out = append(out, d)
	}
	return out, nil
}
