package gormhook_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/hooks/gormhook"
	"github.com/golang-jwt/jwt/v5"
	"gorm.io/gorm"
)

var nodeSecret = []byte("gormhook test secret")

// tapCall is one Publish a tap saw, with its outcome.
type tapCall struct {
	Event, ID string
	ETag      string // as the hook gave it
	Version   uint64
	Gap       bool
	Err       error
}

// tap is a real plugin whose publishes are recorded and can be held up or
// failed (before runs first; its error is returned instead of publishing).
// It keeps the plugin's Health and ETag, which the hook uses.
type tap struct {
	*realtime.Plugin
	before func(p realtime.Publication) error
	after  func(p realtime.Publication, err error)

	mu    sync.Mutex
	calls []tapCall
}

func (tp *tap) Publish(ctx context.Context, p realtime.Publication) (string, error) {
	var etag string
	var err error
	if tp.before != nil {
		err = tp.before(p)
	}
	if err == nil {
		etag, err = tp.Plugin.Publish(ctx, p)
	}
	tp.mu.Lock()
	tp.calls = append(tp.calls, tapCall{Event: p.Event, ID: p.ID, ETag: p.ETag, Version: p.Version, Gap: p.Gap, Err: err})
	tp.mu.Unlock()
	if tp.after != nil {
		tp.after(p, err)
	}
	return etag, err
}

// accepted returns the versions published without error, in call order
// (duplicates the broker dropped included), and the refusals as out of
// order.
func (tp *tap) accepted() (ok []uint64, refusals int) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, c := range tp.calls {
		switch {
		case c.Err == nil:
			ok = append(ok, c.Version)
		case errors.Is(c.Err, realtime.ErrOutOfOrder):
			refusals++
		}
	}
	return ok, refusals
}

// node is one instance of the app: its own connection pool, hook and
// plugin (a node of a shared MemoryBroker), serving the plugin's routes.
type node struct {
	db  *gorm.DB
	rt  *realtime.Plugin
	tap *tap
	h   *gormhook.Hook
	url string
}

// newNodes starts n nodes on one database and one broker.
func newNodes(t *testing.T, tdb *testDB, m *realtime.MemoryBroker, n int, cfg gormhook.OutboxConfig) []*node {
	t.Helper()
	gin.SetMode(gin.TestMode)
	nodes := make([]*node, n)
	for i := range nodes {
		db := tdb.open(t)
		rt, err := realtime.New(realtime.Config{JWTSecret: nodeSecret, Broker: m.Node(),
			Logger: slog.New(slog.DiscardHandler)})
		mustNoErr(t, err)
		r := gin.New()
		rt.RegisterCollection(r.Group("/api/v1"), "posts")
		srv := httptest.NewServer(r)
		t.Cleanup(srv.Close)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := rt.Close(ctx); err != nil {
				t.Errorf("close the plugin: %v", err)
			}
		})
		tp := &tap{Plugin: rt}
		h := useOutbox(t, db, tp, cfg)
		nodes[i] = &node{db: db, rt: rt, tap: tp, h: h, url: srv.URL}
	}
	return nodes
}

func nodeToken(t *testing.T) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "u1", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(nodeSecret)
	mustNoErr(t, err)
	return tok
}

// sseFrame is one frame a subscriber received.
type sseFrame struct{ Event, ID, Data string }

// sseClient follows a record's SSE stream like a browser's EventSource:
// it reconnects with Last-Event-ID whenever the stream ends.
type sseClient struct {
	mu     sync.Mutex
	frames []sseFrame
	conns  atomic.Int32
}

// subscribe follows the record's stream on n until the test ends, and
// waits until the node counts the subscriber.
func (n *node) subscribe(t *testing.T, id string) *sseClient {
	t.Helper()
	before := n.rt.Subscribers()
	c := &sseClient{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	tr := &http.Transport{}
	client := &http.Client{Transport: tr}
	token := nodeToken(t)
	go func() {
		defer close(done)
		defer tr.CloseIdleConnections()
		last := ""
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.url+"/api/v1/posts/"+id+"/subscribe", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			if last != "" {
				req.Header.Set("Last-Event-ID", last)
			}
			if resp, err := client.Do(req); err == nil {
				if resp.StatusCode == http.StatusOK {
					c.conns.Add(1)
					last = c.read(resp.Body, last)
				}
				_ = resp.Body.Close()
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the subscription", func() bool { return n.rt.Subscribers() > before })
	return c
}

// read reads frames until the stream ends; it returns the last event id.
func (c *sseClient) read(body io.Reader, last string) string {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var f sseFrame
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if f.Event != "" {
				c.mu.Lock()
				c.frames = append(c.frames, f)
				c.mu.Unlock()
				if f.ID != "" {
					last = f.ID
				}
			}
			f = sseFrame{}
		case strings.HasPrefix(line, "event: "):
			f.Event = line[len("event: "):]
		case strings.HasPrefix(line, "id: "):
			f.ID = line[len("id: "):]
		case strings.HasPrefix(line, "data: "):
			f.Data += line[len("data: "):]
		}
	}
	return last
}

func (c *sseClient) got() []sseFrame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sseFrame(nil), c.frames...)
}

// views returns the views of the snapshot and changed frames received, and
// the number of other frames (resync, deleted).
func (c *sseClient) views(t *testing.T) (views []int, others []string) {
	t.Helper()
	for _, f := range c.got() {
		if f.Event != realtime.EventSnapshot && f.Event != realtime.EventChanged {
			others = append(others, f.Event)
			continue
		}
		var p Post
		if err := json.Unmarshal([]byte(f.Data), &p); err != nil {
			t.Fatalf("frame %q: %v", f.Data, err)
		}
		views = append(views, p.Views)
	}
	return views, others
}

// lastData is the data of the last frame received.
func (c *sseClient) lastData() string {
	fs := c.got()
	if len(fs) == 0 {
		return ""
	}
	return fs[len(fs)-1].Data
}

// checkEveryVersion: a subscriber got every version of the counter exactly
// once and in order (each write adds one view: a version missing, doubled,
// out of order or merged into a later one breaks the run), the last one
// the record as stored.
func checkEveryVersion(t *testing.T, name string, c *sseClient, from, to int, stored string) {
	t.Helper()
	views, others := c.views(t)
	if len(others) > 0 {
		t.Errorf("%s: frames other than snapshot and changed: %v", name, others)
	}
	if len(views) != to-from+1 {
		t.Errorf("%s: %d frames, want %d", name, len(views), to-from+1)
	}
	for i, v := range views {
		if v != from+i {
			t.Errorf("%s: frame %d has views %d, want %d (frames %v)", name, i, v, from+i, views)
			break
		}
	}
	if last := c.lastData(); last != stored {
		t.Errorf("%s: last frame %s\nstored %s", name, last, stored)
	}
}

// bump adds one view to post id on db, in its own transaction.
func bump(db *gorm.DB, id uint) error {
	return db.Model(&Post{ID: id}).Update("views", gorm.Expr("views + 1")).Error
}

// TestSeveralNodes: several instances (each its own pool, hook and plugin,
// one broker) and many goroutines update one row concurrently: every
// instance's subscriber gets every version exactly once, in order, the
// last equal to the database.
func TestSeveralNodes(t *testing.T) {
	forEachDialect(t, func(t *testing.T, tdb *testDB) {
		m := realtime.NewMemoryBroker(realtime.MemoryBufferConfig{Size: 10000})
		nodes := newNodes(t, tdb, m, 3, gormhook.OutboxConfig{Interval: 20 * time.Millisecond, Grace: 500 * time.Millisecond})
		subs := make([]*sseClient, len(nodes))
		for i, n := range nodes {
			subs[i] = n.subscribe(t, "1")
		}
		p := Post{Title: "counter"}
		mustNoErr(t, nodes[0].db.Create(&p).Error)

		const perNode, each = 3, 10
		var wg sync.WaitGroup
		errs := make(chan error, len(nodes)*perNode)
		for _, n := range nodes {
			for range perNode {
				wg.Go(func() {
					for range each {
						if err := bump(n.db, p.ID); err != nil {
							errs <- err
							return
						}
					}
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		last := 7 + len(nodes)*perNode*each
		stored := getJSON(t, nodes[0].db, p.ID)
		for i, c := range subs {
			waitFor(t, fmt.Sprintf("subscriber %d to get the last version", i), func() bool { return c.lastData() == stored })
		}
		waitFor(t, "the outbox to empty", func() bool { return outboxRows(t, nodes[0].db) == 0 })
		for i, c := range subs {
			checkEveryVersion(t, fmt.Sprint("subscriber ", i), c, 7, last, stored)
		}
		if v := storedVersion(t, nodes[0].db, "posts", "1"); v != uint64(last-6) {
			t.Errorf("stored version %d, want %d", v, last-6)
		}
	})
}

// TestOutage: the broker goes down while instances write, and comes back:
// the writes commit all along, and every subscriber then gets every
// version exactly once, in order (the outbox drained per record, exactly
// as committed: nothing merged, nothing doubled), the last equal to the
// database.
func TestOutage(t *testing.T) {
	forEachDialect(t, func(t *testing.T, tdb *testDB) {
		m := realtime.NewMemoryBroker(realtime.MemoryBufferConfig{Size: 10000})
		nodes := newNodes(t, tdb, m, 2, gormhook.OutboxConfig{Interval: 20 * time.Millisecond, Grace: 200 * time.Millisecond})
		subs := []*sseClient{nodes[0].subscribe(t, "1"), nodes[1].subscribe(t, "1")}
		p := Post{Title: "counter"}
		mustNoErr(t, nodes[0].db.Create(&p).Error)

		const writers, each = 4, 15
		var written atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			n := nodes[w%len(nodes)]
			wg.Go(func() {
				for range each {
					if err := bump(n.db, p.ID); err != nil {
						errs <- err
						return
					}
					written.Add(1)
					time.Sleep(time.Millisecond)
				}
			})
		}
		waitFor(t, "writes before the outage", func() bool { return written.Load() >= writers*each/4 })
		m.SetUnavailable(errors.New("memory broker: connection refused"))
		during := written.Load()
		waitFor(t, "writes during the outage", func() bool { return written.Load() >= during+writers*each/4 })
		m.SetUnavailable(nil)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		last := 7 + writers*each
		stored := getJSON(t, nodes[0].db, p.ID)
		for i, c := range subs {
			waitFor(t, fmt.Sprintf("subscriber %d to get the last version", i), func() bool { return c.lastData() == stored })
		}
		waitFor(t, "the outbox to empty", func() bool { return outboxRows(t, nodes[0].db) == 0 })
		for i, c := range subs {
			checkEveryVersion(t, fmt.Sprint("subscriber ", i), c, 7, last, stored)
		}
		for i, n := range nodes {
			ok, refusals := n.tap.accepted()
			t.Logf("node %d: %d publishes, %d refused as out of order; subscriber connected %d times",
				i, len(ok), refusals, subs[i].conns.Load())
		}
	})
}

// firstPublishes drops from versions those already published before: the
// duplicates a broker drops.
func firstPublishes(versions []uint64) []uint64 {
	var out []uint64
	var top uint64
	for _, v := range versions {
		if v > top {
			out, top = append(out, v), v
		}
	}
	return out
}

// TestDuplicateAcrossDrainers: a process that published its commit's
// events and died before deleting their rows leaves rows another process
// drains: the versions are published again and the broker drops them, so
// subscribers get each event once, deleted included.
func TestDuplicateAcrossDrainers(t *testing.T) {
	forEachDialect(t, func(t *testing.T, tdb *testDB) {
		m := realtime.NewMemoryBroker(realtime.MemoryBufferConfig{})
		nodes := newNodes(t, tdb, m, 2, gormhook.OutboxConfig{Interval: 10 * time.Millisecond, Grace: 100 * time.Millisecond})
		a, b := nodes[0], nodes[1]
		mustNoErr(t, a.h.Close(context.Background())) // A never drains: B does
		sub := b.subscribe(t, "1")

		var dying atomic.Bool
		a.tap.after = func(p realtime.Publication, err error) {
			if err == nil && dying.Load() {
				panic("process A dies after publishing, before deleting its rows")
			}
		}
		p := Post{Title: "a"}
		mustNoErr(t, a.db.Create(&p).Error)
		dying.Store(true)
		mustNoErr(t, bump(a.db, p.ID))
		mustNoErr(t, a.db.Delete(&p).Error)
		if n := outboxRows(t, a.db); n != 2 {
			t.Fatalf("%d outbox rows left by A, want 2", n)
		}
		waitFor(t, "B to drain", func() bool { return outboxRows(t, b.db) == 0 })
		fs := sub.got()
		if len(fs) != 3 || fs[0].Event != "snapshot" || fs[1].Event != "changed" || fs[2].Event != "deleted" {
			t.Fatalf("subscriber got %v, want snapshot, changed, deleted once each", fs)
		}
		okA, _ := a.tap.accepted()
		okB, _ := b.tap.accepted()
		// B may also drain version 1's row, when A deleted it more than
		// Grace after its commit (a loaded machine): one more duplicate.
		if fmt.Sprint(okA) != "[1 2 3]" || !slices.Contains(okB, 2) || !slices.Contains(okB, 3) {
			t.Fatalf("A published %v, B %v; want [1 2 3] and the duplicates 2 and 3", okA, okB)
		}
	})
}

// TestOutOfOrderRetry: a commit whose version is refused because the
// version before it (committed just before, by another goroutine) is not
// published yet tries again, and publishes once its predecessor is.
func TestOutOfOrderRetry(t *testing.T) {
	tdb := newTestDB(t, "sqlite")
	m := realtime.NewMemoryBroker(realtime.MemoryBufferConfig{})
	n := newNodes(t, tdb, m, 1, noDrain)[0]
	sub := n.subscribe(t, "1")
	p := Post{Title: "a"}
	mustNoErr(t, n.db.Create(&p).Error)

	hold, held, refused := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once sync.Once
	n.tap.before = func(p realtime.Publication) error {
		if p.Version == 2 {
			close(held)
			<-hold
		}
		return nil
	}
	n.tap.after = func(p realtime.Publication, err error) {
		if p.Version == 3 && errors.Is(err, realtime.ErrOutOfOrder) {
			once.Do(func() { close(refused) })
		}
	}
	first := make(chan error, 1)
	go func() { first <- bump(n.db, p.ID) }() // version 2, held before its publish
	<-held
	second := make(chan error, 1)
	go func() { second <- bump(n.db, p.ID) }() // version 3, refused until 2 is out
	<-refused
	close(hold)
	mustNoErr(t, <-first)
	mustNoErr(t, <-second)

	ok, refusals := n.tap.accepted()
	if fmt.Sprint(ok) != "[1 2 3]" || refusals < 1 {
		t.Fatalf("published %v with %d refusals; want [1 2 3] after at least one refusal", ok, refusals)
	}
	if rows := outboxRows(t, n.db); rows != 0 {
		t.Fatalf("%d outbox rows left: the retry did not publish", rows)
	}
	waitFor(t, "three frames", func() bool { return len(sub.got()) == 3 })
	checkEveryVersion(t, "subscriber", sub, 7, 9, getJSON(t, n.db, p.ID))
}

// TestOutOfOrderLeftToDrainer: when the predecessor stays unpublished for
// longer than the commit retries, the refused row is left in the outbox and
// the drainer publishes it after its predecessor.
func TestOutOfOrderLeftToDrainer(t *testing.T) {
	tdb := newTestDB(t, "sqlite")
	m := realtime.NewMemoryBroker(realtime.MemoryBufferConfig{})
	n := newNodes(t, tdb, m, 1, gormhook.OutboxConfig{Interval: 10 * time.Millisecond, Grace: 3 * time.Second})[0]
	sub := n.subscribe(t, "1")
	p := Post{Title: "a"}
	mustNoErr(t, n.db.Create(&p).Error)

	hold, held := make(chan struct{}), make(chan struct{})
	var holding sync.Once
	n.tap.before = func(p realtime.Publication) error {
		if p.Version == 2 {
			holding.Do(func() { close(held); <-hold })
		}
		return nil
	}
	first := make(chan error, 1)
	go func() { first <- bump(n.db, p.ID) }()
	<-held
	mustNoErr(t, bump(n.db, p.ID)) // version 3: refused, retried, left
	if rows := outboxRows(t, n.db); rows != 2 {
		t.Fatalf("%d outbox rows, want versions 2 and 3", rows)
	}
	close(hold)
	mustNoErr(t, <-first)
	waitFor(t, "the drainer", func() bool { return outboxRows(t, n.db) == 0 })
	ok, refusals := n.tap.accepted()
	if fmt.Sprint(ok) != "[1 2 3]" || refusals < 2 {
		t.Fatalf("published %v with %d refusals; want [1 2 3] after the commit's refused tries", ok, refusals)
	}
	waitFor(t, "three frames", func() bool { return len(sub.got()) == 3 })
	checkEveryVersion(t, "subscriber", sub, 7, 9, getJSON(t, n.db, p.ID))
}

// TestGapFallback: a row refused as out of order for GapAfter, with no
// earlier version of its record left in the outbox (here: that row was
// deleted by hand, and the tap refuses that version, so that a drain which
// read the row before the delete cannot publish it either: the version can
// never be published), is published with Gap. While an earlier row is left
// (failing for another reason), it waits instead, and follows it in order.
func TestGapFallback(t *testing.T) {
	cfg := gormhook.OutboxConfig{Interval: 10 * time.Millisecond, Grace: 20 * time.Millisecond,
		ClaimTTL: 300 * time.Millisecond, GapAfter: 100 * time.Millisecond}
	t.Run("version lost", func(t *testing.T) {
		tdb := newTestDB(t, "sqlite")
		m := realtime.NewMemoryBroker(realtime.MemoryBufferConfig{})
		n := newNodes(t, tdb, m, 1, cfg)[0]
		n.tap.before = func(p realtime.Publication) error {
			if p.Version == 2 {
				return errors.New("version 2 is lost")
			}
			return nil
		}
		p := Post{Title: "a"}
		mustNoErr(t, n.db.Create(&p).Error)
		m.SetUnavailable(errors.New("down"))
		mustNoErr(t, bump(n.db, p.ID))
		mustNoErr(t, bump(n.db, p.ID))
		mustExec(t, n.db, "DELETE FROM realtime_outbox WHERE version = 2")
		m.SetUnavailable(nil)
		waitFor(t, "the outbox to drain", func() bool { return outboxRows(t, n.db) == 0 })
		n.tap.mu.Lock()
		defer n.tap.mu.Unlock()
		last := n.tap.calls[len(n.tap.calls)-1]
		if last.Version != 3 || !last.Gap || last.Err != nil {
			t.Fatalf("last publish %+v, want version 3 with Gap", last)
		}
		for _, c := range n.tap.calls[:len(n.tap.calls)-1] {
			if c.Gap {
				t.Fatalf("publish %+v with Gap before the last", c)
			}
		}
	})
	t.Run("earlier version left", func(t *testing.T) {
		tdb := newTestDB(t, "sqlite")
		m := realtime.NewMemoryBroker(realtime.MemoryBufferConfig{})
		n := newNodes(t, tdb, m, 1, cfg)[0]
		sub := n.subscribe(t, "1")
		p := Post{Title: "a"}
		mustNoErr(t, n.db.Create(&p).Error)
		var poisoned atomic.Bool
		poisoned.Store(true)
		n.tap.before = func(p realtime.Publication) error {
			if p.Version == 2 && poisoned.Load() {
				return errors.New("cannot publish version 2 for now")
			}
			return nil
		}
		mustNoErr(t, bump(n.db, p.ID))
		mustNoErr(t, bump(n.db, p.ID))
		time.Sleep(4 * cfg.GapAfter) // version 3 refused all along
		if rows := outboxRows(t, n.db); rows != 2 {
			t.Fatalf("%d outbox rows, want versions 2 and 3", rows)
		}
		poisoned.Store(false)
		waitFor(t, "the outbox to drain", func() bool { return outboxRows(t, n.db) == 0 })
		n.tap.mu.Lock()
		for _, c := range n.tap.calls {
			if c.Gap {
				t.Errorf("publish %+v with Gap", c)
			}
		}
		n.tap.mu.Unlock()
		// Grace is short here: the drainer may claim version 1's row
		// before its committer deleted it, and publish it again (the
		// broker drops it; the subscriber check below sees each once).
		ok, _ := n.tap.accepted()
		if fmt.Sprint(firstPublishes(ok)) != "[1 2 3]" {
			t.Fatalf("published %v, want [1 2 3] (repeats aside)", ok)
		}
		waitFor(t, "three frames", func() bool { return len(sub.got()) == 3 })
		checkEveryVersion(t, "subscriber", sub, 7, 9, getJSON(t, n.db, p.ID))
	})
}

// TestLastVersionForgotten: the engine forgets the record's last version
// (here its buffer is invalidated behind the plugins' backs, as a Redis
// restarted empty or an expired version key does) while version 2 waits in
// the outbox (its publish failed). Version 3, committed by another node,
// is not published at its commit (the engine would take it as the first
// and drop version 2 as a duplicate: its subscribers would see 1 → 3 and
// resync): it waits, and the drainer publishes 2 then 3. A version with
// no earlier one waiting is published at its commit even so.
func TestLastVersionForgotten(t *testing.T) {
	forEachDialect(t, func(t *testing.T, tdb *testDB) {
		m := realtime.NewMemoryBroker(realtime.MemoryBufferConfig{})
		nodes := newNodes(t, tdb, m, 2, noDrain)
		a, b := nodes[0], nodes[1]
		subA, subB := a.subscribe(t, "1"), b.subscribe(t, "1")
		p := Post{Title: "counter"}
		mustNoErr(t, a.db.Create(&p).Error) // version 1
		forget := func() {
			t.Helper()
			mustNoErr(t, m.Node().Invalidate(context.Background(), realtime.DefaultTenant, "posts"))
		}

		a.tap.before = func(p realtime.Publication) error {
			if p.Version == 2 {
				return fmt.Errorf("%w: connection reset", realtime.ErrUnavailable)
			}
			return nil
		}
		mustNoErr(t, bump(a.db, p.ID)) // version 2: its publish fails, its row stays
		forget()
		mustNoErr(t, bump(b.db, p.ID)) // version 3: must wait for 2
		if rows := outboxRows(t, a.db); rows != 2 {
			t.Fatalf("%d outbox rows, want versions 2 and 3", rows)
		}
		b.tap.mu.Lock()
		for _, c := range b.tap.calls {
			if c.Version == 3 && !errors.Is(c.Err, realtime.ErrLastUnknown) {
				t.Errorf("node B's publish of version 3 at its commit: %v; want ErrLastUnknown", c.Err)
			}
		}
		b.tap.mu.Unlock()

		drainer := newNodes(t, tdb, m, 1, gormhook.OutboxConfig{Interval: 10 * time.Millisecond, Grace: 20 * time.Millisecond})[0]
		waitFor(t, "the drainer", func() bool { return outboxRows(t, a.db) == 0 })
		ok, _ := drainer.tap.accepted()
		if fmt.Sprint(ok) != "[2 3]" {
			t.Fatalf("the drainer published %v, want [2 3]", ok)
		}

		forget()
		mustNoErr(t, bump(b.db, p.ID)) // version 4: version 3 is published
		if rows := outboxRows(t, b.db); rows != 0 {
			t.Fatalf("%d outbox rows after version 4's commit, want 0", rows)
		}
		for _, n := range []*node{a, b, drainer} {
			n.tap.mu.Lock()
			for _, c := range n.tap.calls {
				if c.Gap {
					t.Errorf("publish %+v with Gap", c)
				}
			}
			n.tap.mu.Unlock()
		}
		stored := getJSON(t, a.db, p.ID)
		for name, sub := range map[string]*sseClient{"A": subA, "B": subB} {
			waitFor(t, "subscriber "+name+" to get version 4", func() bool { return sub.lastData() == stored })
			checkEveryVersion(t, "subscriber "+name, sub, 7, 10, stored)
		}
	})
}

// backlogOfVersion2 starts a node that does not drain, with a subscriber
// of post 1, and leaves version 2 of the post in the outbox for two hours
// (its publish failed): a backlog. Versions published after it are
// refused until it is drained.
func backlogOfVersion2(t *testing.T, tdb *testDB) (*realtime.MemoryBroker, *node, *sseClient, Post) {
	t.Helper()
	m := realtime.NewMemoryBroker(realtime.MemoryBufferConfig{})
	a := newNodes(t, tdb, m, 1, noDrain)[0]
	sub := a.subscribe(t, "1")
	p := Post{Title: "counter"}
	mustNoErr(t, a.db.Create(&p).Error) // version 1
	a.tap.before = func(p realtime.Publication) error {
		if p.Version == 2 {
			return fmt.Errorf("%w: connection reset", realtime.ErrUnavailable)
		}
		return nil
	}
	mustNoErr(t, bump(a.db, p.ID)) // version 2 stays
	mustExec(t, a.db, "UPDATE realtime_outbox SET created_at = ? WHERE version = 2", time.Now().UTC().Add(-2*time.Hour))
	a.tap.before = nil
	return m, a, sub, p
}

// TestDrainTakesYoungerRowsOfABacklog: a record's rows younger than Grace
// (refused at their commits because an older version waits) are drained
// with its older rows, not a Grace later.
func TestDrainTakesYoungerRowsOfABacklog(t *testing.T) {
	forEachDialect(t, func(t *testing.T, tdb *testDB) {
		m, a, sub, p := backlogOfVersion2(t, tdb)
		mustNoErr(t, bump(a.db, p.ID)) // version 3: refused, left
		if rows := outboxRows(t, a.db); rows != 2 {
			t.Fatalf("%d outbox rows, want versions 2 and 3", rows)
		}
		drainer := newNodes(t, tdb, m, 1, gormhook.OutboxConfig{Interval: 10 * time.Millisecond, Grace: time.Hour})[0]
		waitFor(t, "the drainer", func() bool { return outboxRows(t, a.db) == 0 })
		ok, _ := drainer.tap.accepted()
		drained2and3(t, ok, a, sub, p)
	})
}

// drained2and3 checks that a drainer published versions 2 and 3 (ok: what
// it published, in order) and that the subscriber got every version.
func drained2and3(t *testing.T, ok []uint64, a *node, sub *sseClient, p Post) {
	t.Helper()
	if fmt.Sprint(ok) != "[2 3]" {
		t.Fatalf("the drainer published %v, want [2 3]", ok)
	}
	stored := getJSON(t, a.db, p.ID)
	waitFor(t, "version 3", func() bool { return sub.lastData() == stored })
	checkEveryVersion(t, "subscriber", sub, 7, 9, stored)
}

// TestDrainFollowsCommitsDuringIt: a commit made while a drainer publishes
// its record's backlog leaves its row to that drainer (the backlog is
// older than Grace), and the drainer publishes it in the same drain, not a
// Grace later: subscribers resuming from that version find it in the
// broker, and the record's later commits are not refused behind it.
func TestDrainFollowsCommitsDuringIt(t *testing.T) {
	forEachDialect(t, func(t *testing.T, tdb *testDB) {
		m, a, sub, p := backlogOfVersion2(t, tdb)

		// The drainer's Grace is an hour: only the follow-up publishes
		// version 3, committed while the drainer publishes version 2.
		drainer := newNodes(t, tdb, m, 1, gormhook.OutboxConfig{Interval: 10 * time.Millisecond, Grace: time.Hour})[0]
		var once sync.Once
		committed := make(chan error, 1)
		drainer.tap.before = func(pub realtime.Publication) error {
			if pub.Version == 2 {
				once.Do(func() { committed <- bump(a.db, p.ID) }) // version 3: refused, left
			}
			return nil
		}
		waitFor(t, "the drainer", func() bool { return outboxRows(t, a.db) == 0 })
		mustNoErr(t, <-committed)
		ok, _ := drainer.tap.accepted()
		drained2and3(t, firstPublishes(ok), a, sub, p) // a duplicate the broker dropped counts once
	})
}

// TestNextPending: db.Use registers the hook with the plugin
// (AddPendingEvents), and the hook tells which version waits in the outbox
// after a given ETag (its row's prev_etag), in the record's tenant only:
// a client reconnecting from that ETag after the engine restarted empty
// waits for it instead of resyncing (realtime's TestOrderReconnectWaitsForPending).
func TestNextPending(t *testing.T) {
	forEachDialect(t, func(t *testing.T, tdb *testDB) {
		m := realtime.NewMemoryBroker(realtime.MemoryBufferConfig{})
		a := newNodes(t, tdb, m, 1, noDrain)[0]
		p := Post{Title: "counter"}
		mustNoErr(t, a.db.Create(&p).Error) // version 1, published
		v1 := a.tap.calls[0].ETag
		a.tap.before = func(realtime.Publication) error {
			return fmt.Errorf("%w: connection reset", realtime.ErrUnavailable)
		}
		mustNoErr(t, bump(a.db, p.ID)) // version 2 stays in the outbox
		mustNoErr(t, bump(a.db, p.ID)) // version 3 too
		ref := realtime.Ref{Tenant: realtime.DefaultTenant, Collection: "posts", ID: fmt.Sprint(p.ID)}
		ctx := context.Background()
		for _, tc := range []struct {
			name   string
			ref    realtime.Ref
			etag   string
			want   uint64
			wantOK bool
		}{
			{"after version 1", ref, v1, 2, true},
			{"an unknown ETag", ref, `"nope"`, 0, false},
			{"another tenant", realtime.Ref{Tenant: "other", Collection: "posts", ID: ref.ID}, v1, 0, false},
			{"another record", realtime.Ref{Tenant: ref.Tenant, Collection: "posts", ID: "999"}, v1, 0, false},
		} {
			v, ok, err := a.h.NextPending(ctx, tc.ref, tc.etag)
			mustNoErr(t, err)
			if v != tc.want || ok != tc.wantOK {
				t.Errorf("%s: NextPending = %d, %v; want %d, %v", tc.name, v, ok, tc.want, tc.wantOK)
			}
		}
	})
	pub := &registering{}
	h := useOutbox(t, openFile(t, newPath(t)), pub, noDrain)
	if len(pub.got) != 1 || pub.got[0] != h {
		t.Fatalf("db.Use registered %v, want the hook", pub.got)
	}
}

// registering is a Publisher that takes PendingEvents, as the plugin does.
type registering struct {
	recorder
	got []realtime.PendingEvents
}

func (r *registering) AddPendingEvents(p realtime.PendingEvents) { r.got = append(r.got, p) }
