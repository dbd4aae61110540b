package realtime

import (
	"container/list"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// LookupStatus tells what a buffer knows of a resume point.
type LookupStatus int

const (
	// LookupUnknown: the resume point is not (or no longer, or ambiguously) in
	// the buffer: the subscriber needs a resync.
	LookupUnknown LookupStatus = iota
	// LookupFound: the resume point is buffered; Events holds every later event.
	LookupFound
	// LookupUpToDate: the resume point is the stream's newest event.
	LookupUpToDate
)

func (s LookupStatus) String() string {
	switch s {
	case LookupFound:
		return "found"
	case LookupUpToDate:
		return "up-to-date"
	default:
		return "unknown"
	}
}

// Entry is a buffered event with its position in its stream.
type Entry struct {
	// Seq is the event's position in its stream, assigned by Append: it
	// strictly increases within a stream and is never reused, even after
	// the stream was evicted or invalidated and started again (subscribers
	// drop positions they have passed).
	Seq   uint64
	Event *Event
}

// Lookup is the answer of Buffer.Since.
type Lookup struct {
	Status LookupStatus
	// Seq is the position of the resume point (Found, UpToDate).
	Seq uint64
	// Version is the record version of the resume point's event
	// (Event.Version; Found, UpToDate; 0 when unknown): the replay must go
	// on from the next one.
	Version uint64
	// Events are the events after the resume point, oldest first (Found).
	Events []Entry
}

// Buffer keeps the recent events of every stream (one per record and one per
// collection) and assigns each appended event its position. Implementations
// must be safe for concurrent use; the plugin serialises Appends per key.
type Buffer interface {
	// Append stores ev at the end of key's stream and returns its position.
	Append(ctx context.Context, key StreamKey, ev *Event) (seq uint64, err error)
	// Since looks up the resume point lastID (an ETag) in key's stream.
	Since(ctx context.Context, key StreamKey, lastID string) (Lookup, error)
	// Invalidate forgets the streams of a collection and of all its records,
	// so that every later resume point of them is unknown.
	Invalidate(ctx context.Context, tenant, collection string) error
}

// MemoryBufferConfig bounds a MemoryBuffer.
type MemoryBufferConfig struct {
	// Size is the number of events kept per stream. Default: 100.
	Size int
	// MaxAge is how long an event is kept. Default: 1h.
	MaxAge time.Duration
	// MaxBytes caps the estimated size of all streams; the least recently
	// active streams are evicted first. Default: 64 MiB.
	MaxBytes int64
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// MemoryBuffer is the in-process Buffer: a ring of events per stream, all
// streams bounded together by a byte cap with least-recently-active eviction.
type MemoryBuffer struct {
	cfg MemoryBufferConfig

	mu      sync.Mutex
	streams map[StreamKey]*memStream
	lru     list.List // of *memStream, front = most recently active
	bytes   int64
	seq     uint64 // last position handed out, shared by all streams
	// entries are the events held; evictions those dropped early to keep
	// MaxBytes (ReportStats).
	entries   int
	evictions uint64
}

var _ Buffer = (*MemoryBuffer)(nil)

type memStream struct {
	key     StreamKey
	elem    *list.Element
	entries []Entry // ring in insertion order: oldest first after trim
	bytes   int64
	// head is the newest event ever appended, kept when entries age out, so a
	// subscriber at the head is known to be up to date.
	headSeq     uint64
	headETag    string
	headVersion uint64 // the newest event's Event.Version
	// version is the last record version appended (Event.Version; 0: none
	// known; events without a version leave it). It is forgotten with the
	// stream, like an engine forgetting a stream: any version is then
	// appended.
	version uint64
}

// NewMemoryBuffer returns an in-memory Buffer with cfg's bounds (zero fields
// take their defaults). A negative bound is a programming error, refused as
// Config refuses its own: NewMemoryBuffer panics with ErrInvalidConfig.
func NewMemoryBuffer(cfg MemoryBufferConfig) *MemoryBuffer {
	if cfg.Size < 0 || cfg.MaxAge < 0 || cfg.MaxBytes < 0 {
		panic(fmt.Errorf("%w: MemoryBufferConfig bounds must not be negative", ErrInvalidConfig))
	}
	if cfg.Size <= 0 {
		cfg.Size = 100
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = time.Hour
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 64 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &MemoryBuffer{cfg: cfg, streams: make(map[StreamKey]*memStream)}
}

// Append implements Buffer.
func (b *MemoryBuffer) Append(_ context.Context, key StreamKey, ev *Event) (uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.appendLocked(key, ev).headSeq, nil
}

// appendLocked stores ev at the end of key's stream (b.mu held).
func (b *MemoryBuffer) appendLocked(key StreamKey, ev *Event) *memStream {
	s := b.streams[key]
	if s == nil {
		s = &memStream{key: key}
		s.elem = b.lru.PushFront(s)
		b.streams[key] = s
	} else {
		b.lru.MoveToFront(s.elem)
	}
	b.seq++ // one counter for all streams: a dropped stream never restarts at 1
	s.headSeq = b.seq
	s.headETag = ev.ETag
	s.headVersion = ev.Version
	sz := ev.size()
	s.entries = append(s.entries, Entry{Seq: s.headSeq, Event: ev})
	s.bytes += sz
	b.bytes += sz
	b.entries++
	b.trim(s)
	for b.bytes > b.cfg.MaxBytes && b.lru.Len() > 1 {
		victim := b.lru.Back().Value.(*memStream)
		if victim == s {
			break
		}
		b.evictions += uint64(len(victim.entries))
		b.drop(victim)
	}
	if b.bytes > b.cfg.MaxBytes { // one stream alone over the cap: keep its newest
		for len(s.entries) > 1 && b.bytes > b.cfg.MaxBytes {
			b.evictions++
			b.shift(s)
		}
	}
	return s
}

// appendRecord appends a record event to its record's and its
// collection's streams in one step, applying the version rule of
// Broker.AppendRecord (versionRule) on the record's stream.
func (b *MemoryBuffer) appendRecord(ev *Event, mode AppendMode) (seqs [2]uint64, dup bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ev.Version > 0 {
		var last uint64
		if s := b.streams[ev.Ref]; s != nil {
			last = s.version
		}
		if dup, err := versionRule(last, ev.Version, mode); dup || err != nil {
			return seqs, dup, err
		}
	}
	for i, key := range [2]StreamKey{ev.Ref, ev.Ref.collectionKey()} {
		s := b.appendLocked(key, ev)
		seqs[i] = s.headSeq
		if i == 0 && ev.Version > 0 {
			s.version = ev.Version
		}
	}
	return seqs, false, nil
}

// versionRule is the order of a record's versions (Broker.AppendRecord):
// with last the record's last version appended (0: unknown), v is a
// duplicate when at or below it, and out of order when beyond last + 1
// unless mode is AppendGap; with last unknown, v is taken unless mode is
// AppendIfLastKnown and v is above 1.
func versionRule(last, v uint64, mode AppendMode) (dup bool, err error) {
	switch {
	case last == 0 && mode == AppendIfLastKnown && v > 1:
		return false, fmt.Errorf("%w: version %d", ErrLastUnknown, v)
	case last == 0:
		return false, nil
	case v <= last:
		return true, nil
	case v > last+1 && mode != AppendGap:
		return false, fmt.Errorf("%w: version %d after %d", ErrOutOfOrder, v, last)
	}
	return false, nil
}

// trim drops entries over the count and age bounds.
func (b *MemoryBuffer) trim(s *memStream) {
	for len(s.entries) > b.cfg.Size {
		b.shift(s)
	}
	cutoff := b.cfg.Now().Add(-b.cfg.MaxAge)
	for len(s.entries) > 0 && s.entries[0].Event.Time.Before(cutoff) {
		b.shift(s)
	}
}

func (b *MemoryBuffer) shift(s *memStream) {
	sz := s.entries[0].Event.size()
	s.entries[0] = Entry{}
	s.entries = s.entries[1:]
	s.bytes -= sz
	b.bytes -= sz
	b.entries--
	if len(s.entries) == 0 {
		s.entries = nil
	}
}

func (b *MemoryBuffer) drop(s *memStream) {
	b.bytes -= s.bytes
	b.entries -= len(s.entries)
	b.lru.Remove(s.elem)
	delete(b.streams, s.key)
}

// Since implements Buffer. A resume point found more than once (a record
// that went back to an earlier version) is ambiguous and reported unknown;
// on a record stream, the newest ETag (kept even after its entry aged out)
// is always up to date.
func (b *MemoryBuffer) Since(_ context.Context, key StreamKey, lastID string) (Lookup, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.streams[key]
	if s == nil {
		return Lookup{Status: LookupUnknown}, nil
	}
	b.lru.MoveToFront(s.elem)
	b.trim(s)
	if lastID == "" {
		return Lookup{Status: LookupUnknown, Seq: s.headSeq}, nil
	}
	if key.ID != "" && lastID == s.headETag {
		return Lookup{Status: LookupUpToDate, Seq: s.headSeq, Version: s.headVersion}, nil
	}
	lk := ResumeIn(s.entries, lastID, key.ID != "")
	lk.Events = slices.Clone(lk.Events)
	return lk, nil
}

// ResumeIn is the resume rule of every Buffer (written once: MemoryBuffer
// and redisbroker apply it to what they keep): where a subscriber whose
// last event had the ETag lastID goes on in a stream whose retained
// entries are entries, oldest first. Found, the events after the resume
// point (Events aliases entries); UpToDate, none; Unknown, the point is not
// there, or not in one place only (an ETag seen twice), and the subscriber
// needs resync.
//
// On a record's stream (record) the resume point is also found before an
// entry whose Event.PrevETag is lastID: a subscriber that got the version
// before that entry as a snapshot, not as an event (a new subscriber, or
// one resynced after the events were lost), resumes exactly from it.
func ResumeIn(entries []Entry, lastID string, record bool) Lookup {
	at := -1 // the index of the first entry to send
	for i := len(entries) - 1; i >= 0; i-- {
		ev := entries[i].Event
		next := -1
		switch {
		case ev.ETag == lastID:
			next = i + 1
		case record && ev.PrevETag == lastID && ev.Version > 0:
			next = i
		default:
			continue
		}
		if at >= 0 && at != next {
			return Lookup{Status: LookupUnknown} // ambiguous
		}
		at = next
	}
	if at < 0 {
		return Lookup{Status: LookupUnknown}
	}
	var seq, version uint64
	if at > 0 && entries[at-1].Event.ETag == lastID {
		seq, version = entries[at-1].Seq, entries[at-1].Event.Version
	} else { // before entries[at], which follows lastID's version
		seq, version = entries[at].Seq-1, entries[at].Event.Version-1
	}
	if at == len(entries) {
		return Lookup{Status: LookupUpToDate, Seq: seq, Version: version}
	}
	return Lookup{Status: LookupFound, Seq: seq, Version: version, Events: entries[at:]}
}

// Invalidate implements Buffer.
func (b *MemoryBuffer) Invalidate(_ context.Context, tenant, collection string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, s := range b.streams {
		if k.Tenant == tenant && k.Collection == collection {
			b.drop(s)
		}
	}
	return nil
}

// Stats reports the buffer's streams and estimated bytes.
func (b *MemoryBuffer) Stats() (streams int, bytes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.streams), b.bytes
}

var _ StatsSource = (*MemoryBuffer)(nil)

// ReportStats implements StatsSource: Stats.Buffer.
func (b *MemoryBuffer) ReportStats(s *Stats) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s.Buffer.Reported = true
	s.Buffer.Streams += len(b.streams)
	s.Buffer.Entries += b.entries
	s.Buffer.Bytes += b.bytes
	s.Buffer.Evictions += b.evictions
}
