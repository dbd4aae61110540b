package realtime

// Property test of the replay → live hand-over (PROTOCOL.md §2–§3): under
// concurrent publishing, clients that subscribe, drop and resume at random
// points receive every version exactly once, in publish order, or a resync
// wherever they jumped.
//
// Reproduce a run with the seed it logs:
//
//	go test -race -run TestHandoverProperty -seed=N .
//	REALTIME_SEED=N go test -race -run TestHandoverProperty .

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

var handoverSeed = flag.Uint64("seed", 0, "seed of TestHandoverProperty (0: from REALTIME_SEED, else random)")

// recordingBuffer is a Buffer that records the events appended to one
// record's stream: the plugin appends under the stream's lock, so their
// order is the publish order every subscriber must see. Its current method
// is the record store of that record, always consistent with the buffer.
type recordingBuffer struct {
	Buffer
	key StreamKey

	mu    sync.Mutex
	order []*Event
	index map[string]int // ETag → position in order
}

func newRecordingBuffer(inner Buffer, key StreamKey) *recordingBuffer {
	return &recordingBuffer{Buffer: inner, key: key, index: make(map[string]int)}
}

func (b *recordingBuffer) Append(ctx context.Context, key StreamKey, ev *Event) (uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	seq, err := b.Buffer.Append(ctx, key, ev)
	if err == nil && key == b.key {
		if _, dup := b.index[ev.ETag]; !dup {
			b.index[ev.ETag] = len(b.order)
		}
		b.order = append(b.order, ev)
	}
	return seq, err
}

// load is a RecordLoader for the recorded record: its newest version.
func (b *recordingBuffer) load(_ context.Context, ref Ref) (any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ref != b.key || len(b.order) == 0 {
		return nil, ErrNotFound
	}
	return json.RawMessage(b.order[len(b.order)-1].Data), nil
}

// position returns the publish position of etag and its event.
func (b *recordingBuffer) position(etag string) (int, *Event, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i, ok := b.index[etag]
	if !ok {
		return 0, nil, false
	}
	return i, b.order[i], true
}

func (b *recordingBuffer) published() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.order)
}

// connLog is what one connection of a client sent and received.
type connLog struct {
	lastID string // the Last-Event-ID it sent
	frames []sseFrame
	end    string // how it ended
}

// checkSequence verifies a client's connections against the publish order:
// a changed event is always the next version; a snapshot comes first on a
// connection without resume point, or right after a resync, and never goes
// back; a resync is a connection's first event. It returns the position of
// the last version received.
func checkSequence(b *recordingBuffer, conns []connLog) (int, error) {
	pos := -1
	for ci, c := range conns {
		resynced := false
		for j, f := range c.frames {
			where := fmt.Sprintf("connection %d (Last-Event-ID %q), event %d %v", ci, c.lastID, j, framesOf([]sseFrame{f}))
			if f.Event == EventResync {
				if j != 0 || f.HasID || f.Data != resyncData {
					return pos, fmt.Errorf("%s: a resync must be the first frame, without id, data %s", where, resyncData)
				}
				resynced = true
				continue
			}
			idx, ev, ok := b.position(f.ID)
			if !ok {
				return pos, fmt.Errorf("%s: an id that was never published", where)
			}
			if f.Data != string(ev.Data) {
				return pos, fmt.Errorf("%s: data %s, published %s", where, f.Data, ev.Data)
			}
			switch f.Event {
			case EventSnapshot:
				first := j == 0 && c.lastID == "" && pos == -1
				if !first && !(resynced && j == 1) {
					return pos, fmt.Errorf("%s: a snapshot neither first nor after a resync", where)
				}
				if idx <= pos {
					return pos, fmt.Errorf("%s: snapshot of version %d after version %d", where, idx, pos)
				}
			case EventChanged:
				if idx != pos+1 {
					return pos, fmt.Errorf("%s: version %d after version %d (lost or duplicated)", where, idx, pos)
				}
			default:
				return pos, fmt.Errorf("%s: unexpected event type", where)
			}
			pos = idx
		}
	}
	return pos, nil
}

func handoverBaseSeed(t *testing.T) uint64 {
	if *handoverSeed != 0 {
		return *handoverSeed
	}
	if v := os.Getenv("REALTIME_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("REALTIME_SEED: %v", err)
		}
		return s
	}
	return rand.Uint64()
}

func TestHandoverProperty(t *testing.T) {
	base := handoverBaseSeed(t)
	t.Logf("seed %d (reproduce: go test -race -run TestHandoverProperty -seed=%d .)", base, base)
	iterations := 16 // a few seconds under -race on 2 cores
	if testing.Short() {
		iterations = 4
	}
	for i := range iterations {
		seed := base + uint64(i)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { handoverRun(t, seed) })
	}
}

func handoverRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	const (
		publishers = 3
		perPub     = 150 // events per publisher
		clients    = 6
	)
	key := StreamKey{Tenant: DefaultTenant, Collection: "posts", ID: "r"}
	bufSize := []int{3, 8, 32, 256}[rng.IntN(4)]
	cfg := Config{
		QueueSize:     []int{2, 8, 512}[rng.IntN(3)],
		DisableHijack: rng.IntN(3) == 0,
		Retry:         time.Millisecond,
	}
	if rng.IntN(2) == 0 {
		cfg.Heartbeat = time.Millisecond // keepalives interleave with the hand-over
	}
	rb := newRecordingBuffer(NewMemoryBuffer(MemoryBufferConfig{Size: bufSize}), key)
	cfg.Buffer = rb
	cfg.Loader = rb.load
	t.Logf("buffer %d, queue %d, hijack %v, heartbeat %v", bufSize, cfg.QueueSize, !cfg.DisableHijack, cfg.Heartbeat)
	rt, srv := newPluginServer(t, cfg, nil, nil)
	tok := userToken(t, "u1")
	url := recordURL(srv, "r")
	tr := &http.Transport{}
	httpc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()

	publish := func(n int) error {
		_, err := rt.Changed(context.Background(), "posts", "r", rec{ID: "r", N: n})
		return err
	}
	if err := publish(-1); err != nil { // version 0: the record exists
		t.Fatal(err)
	}
	total := publishers*perPub + 1

	ctx, cancel := context.WithTimeout(context.Background(), 2*hangGuard)
	defer cancel()
	var wg sync.WaitGroup
	start := make(chan struct{})
	pubErr := make(chan error, publishers)
	for p := range publishers {
		prng := rand.New(rand.NewPCG(seed, uint64(100+p)))
		wg.Go(func() {
			<-start
			for i := range perPub {
				if err := publish(p*10000 + i); err != nil {
					pubErr <- err
					return
				}
				// Spread the publishes so that subscribes and drops fall
				// in between (not a timing under test).
				time.Sleep(time.Duration(prng.IntN(600)) * time.Microsecond)
			}
		})
	}
	logs := make([][]connLog, clients)
	errs := make([]error, clients)
	for c := range clients {
		crng := rand.New(rand.NewPCG(seed, uint64(200+c)))
		wg.Go(func() {
			<-start
			logs[c], errs[c] = handoverClient(ctx, crng, httpc, url, tok, rb, total)
		})
	}
	close(start)
	wg.Wait()
	close(pubErr)
	for err := range pubErr {
		t.Fatalf("publish: %v", err)
	}
	if got := rb.published(); got != total {
		t.Fatalf("%d events recorded, %d published", got, total)
	}
	reconnects, resyncs := 0, 0
	for c := range clients {
		reconnects += len(logs[c]) - 1
		for _, l := range logs[c] {
			if len(l.frames) > 0 && l.frames[0].Event == EventResync {
				resyncs++
			}
		}
		pos, err := checkSequence(rb, logs[c])
		if err == nil && pos != total-1 {
			err = fmt.Errorf("ended at version %d of %d", pos, total-1)
		}
		if err == nil {
			err = errs[c]
		}
		if err != nil {
			t.Errorf("client %d: %v", c, err)
			for i, l := range logs[c] {
				t.Logf("client %d connection %d: Last-Event-ID %q, %d frames, end: %s", c, i, l.lastID, len(l.frames), l.end)
			}
		}
	}
	t.Logf("%d clients, %d reconnects (%d resynced), %d versions", clients, reconnects, resyncs, total)
}

// handoverClient follows the record until it has received the last of
// total versions, dropping its connection at random points and resuming
// from the last id it received, as an EventSource does.
func handoverClient(ctx context.Context, rng *rand.Rand, httpc *http.Client, url, tok string, rb *recordingBuffer, total int) ([]connLog, error) {
	var conns []connLog
	lastID := ""
	for {
		if err := ctx.Err(); err != nil {
			return conns, fmt.Errorf("gave up: %w", err)
		}
		cctx, cancel := context.WithCancel(ctx)
		resp, err := dial(cctx, httpc, url, tok, lastID)
		if err != nil {
			cancel()
			return conns, fmt.Errorf("subscribe: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			cancel()
			return conns, fmt.Errorf("subscribe: %s", resp.Status)
		}
		cl := connLog{lastID: lastID}
		budget := 0 // frames to read before dropping the connection
		if rng.IntN(5) != 0 {
			budget = 1 + rng.IntN(12)
		}
		lr := &lineReader{br: newFrameReader(resp.Body).br}
		finished := false
		for len(cl.frames) < budget {
			f, err := lr.next(false)
			if err != nil {
				cl.end = "read: " + err.Error() // dropped by the server (queue full)
				break
			}
			cl.frames = append(cl.frames, f)
			if f.HasID {
				lastID = f.ID
				if i, _, _ := rb.position(f.ID); i == total-1 {
					finished = true
					break
				}
			}
		}
		if cl.end == "" {
			cl.end = "dropped by the client"
		}
		cancel()
		resp.Body.Close()
		conns = append(conns, cl)
		if finished {
			return conns, nil
		}
		if rng.IntN(4) == 0 {
			time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
		}
	}
}

// TestCheckSequence makes sure the property's checker can fail.
func TestCheckSequence(t *testing.T) {
	key := StreamKey{Tenant: DefaultTenant, Collection: "posts", ID: "r"}
	rb := newRecordingBuffer(NewMemoryBuffer(MemoryBufferConfig{}), key)
	var ids []string
	for n := range 4 {
		ev := &Event{Type: EventChanged, Ref: key, Data: json.RawMessage(recJSON("r", n)), ETag: DefaultETag("posts", "r", []byte(recJSON("r", n)))}
		if _, err := rb.Append(context.Background(), key, ev); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.ETag)
	}
	ch := func(n int) sseFrame {
		return sseFrame{Event: EventChanged, ID: ids[n], HasID: true, Data: recJSON("r", n), HasData: true}
	}
	snap := func(n int) sseFrame { f := ch(n); f.Event = EventSnapshot; return f }
	resync := sseFrame{Event: EventResync, Data: resyncData, HasData: true}
	cases := []struct {
		name  string
		conns []connLog
		ok    bool
	}{
		{"in order across a reconnect", []connLog{{frames: []sseFrame{snap(0), ch(1)}}, {lastID: ids[1], frames: []sseFrame{ch(2), ch(3)}}}, true},
		{"jump after resync", []connLog{{frames: []sseFrame{snap(0)}}, {lastID: ids[0], frames: []sseFrame{resync, snap(3)}}}, true},
		{"lost event", []connLog{{frames: []sseFrame{snap(0), ch(2)}}}, false},
		{"duplicate at reconnect", []connLog{{frames: []sseFrame{snap(0), ch(1)}}, {lastID: ids[1], frames: []sseFrame{ch(1), ch(2)}}}, false},
		{"jump without resync", []connLog{{frames: []sseFrame{snap(0)}}, {lastID: ids[0], frames: []sseFrame{snap(2)}}}, false},
		{"snapshot going back", []connLog{{frames: []sseFrame{snap(0), ch(1), ch(2)}}, {lastID: ids[2], frames: []sseFrame{resync, snap(1)}}}, false},
		{"resync in the middle", []connLog{{frames: []sseFrame{snap(0), resync, snap(2)}}}, false},
	}
	for _, tc := range cases {
		_, err := checkSequence(rb, tc.conns)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	if _, err := checkSequence(rb, []connLog{{frames: []sseFrame{{Event: EventChanged, ID: `"x"`, HasID: true}}}}); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("unknown id accepted: %v", err)
	}
}

// TestHandoverSnapshotOvertaken: the snapshot's version is published while
// the subscriber is being set up, and evicted from the buffer before the
// plugin looks it up (a burst of writes). Events older than the snapshot,
// and the snapshot's own event, must not follow it.
func TestHandoverSnapshotOvertaken(t *testing.T) {
	for _, hijack := range []bool{true, false} {
		t.Run(fmt.Sprintf("hijack=%v", hijack), func(t *testing.T) {
			var rt *Plugin
			var mu sync.Mutex
			stored := rec{ID: "42", N: 1}
			publish := func(n int) {
				mu.Lock()
				stored = rec{ID: "42", N: n}
				mu.Unlock()
				if _, err := rt.Changed(context.Background(), "posts", "42", rec{ID: "42", N: n}); err != nil {
					t.Error(err)
				}
			}
			var armed sync.Once
			loader := func(ctx context.Context, ref Ref) (any, error) {
				var r rec
				arm := false
				armed.Do(func() { arm = true })
				if !arm {
					mu.Lock()
					defer mu.Unlock()
					return stored, nil
				}
				// While the subscriber holds: v2 and v3 are written and
				// published, this read sees v3, then v4 is published and
				// pushes v3 out of the one-event buffer.
				publish(2)
				publish(3)
				mu.Lock()
				r = stored
				mu.Unlock()
				publish(4)
				return r, nil
			}
			rt2, srv := newPluginServer(t, Config{
				Loader:        loader,
				Buffer:        NewMemoryBuffer(MemoryBufferConfig{Size: 1}),
				DisableHijack: !hijack,
			}, nil, nil)
			rt = rt2
			v1, err := rt.Changed(context.Background(), "posts", "42", rec{ID: "42", N: 1})
			if err != nil {
				t.Fatal(err)
			}
			_ = v1
			s := openStream(t, nil, recordURL(srv, "42"), userToken(t, "u1"), nil)
			v3, _ := rt.ETag("posts", "42", rec{ID: "42", N: 3})
			v4, _ := rt.ETag("posts", "42", rec{ID: "42", N: 4})
			expectFrames(t, s, frame{EventSnapshot, v3, recJSON("42", 3)}, frame{EventChanged, v4, recJSON("42", 4)})
			v5 := func() string { publish(5); e, _ := rt.ETag("posts", "42", rec{ID: "42", N: 5}); return e }()
			expectFrames(t, s, frame{EventChanged, v5, recJSON("42", 5)})
		})
	}
}
