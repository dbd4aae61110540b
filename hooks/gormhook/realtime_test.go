package gormhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/hooks/gormhook"
	"github.com/golang-jwt/jwt/v5"
	"gorm.io/gorm"
)

// etagTap is a real *realtime.Plugin that also remembers the ETag of each
// event it published.
type etagTap struct {
	*realtime.Plugin
	mu    sync.Mutex
	etags []string
	evs   []string
}

func (e *etagTap) Publish(ctx context.Context, p realtime.Publication) (string, error) {
	etag, err := e.Plugin.Publish(ctx, p)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		e.etags = append(e.etags, etag)
		e.evs = append(e.evs, p.Event+" "+p.Collection+"/"+p.ID)
	}
	return etag, err
}

func (e *etagTap) last() (event, etag string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.etags) == 0 {
		return "", ""
	}
	return e.evs[len(e.evs)-1], e.etags[len(e.etags)-1]
}

// TestWithRealtimePlugin: with the real plugin, on every database, the ETag
// of each event is the one the app's REST handler computes with rt.ETag over
// the record it reads, also when the write had only part of the record; the
// events reach the plugin's long poll with those ETags as ids.
func TestWithRealtimePlugin(t *testing.T) {
	forEachDialect(t, testWithRealtimePlugin)
}

func testWithRealtimePlugin(t *testing.T, tdb *testDB) {
	secret := []byte("x")
	rt, err := realtime.New(realtime.Config{JWTSecret: secret})
	mustNoErr(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := rt.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	tap := &etagTap{Plugin: rt}
	db := tdb.open(t)
	use(t, db, gormhook.New(tap, gormhook.Watch(&Post{}, "posts")))

	// What the app's GET handler sends as ETag.
	restETag := func(id uint) string {
		t.Helper()
		var p Post
		mustNoErr(t, db.First(&p, id).Error)
		etag, err := rt.ETag("posts", fmt.Sprint(id), p)
		mustNoErr(t, err)
		return etag
	}

	p := Post{Title: "first", Body: "body"}
	mustNoErr(t, db.Create(&p).Error)
	ev, created := tap.last()
	if ev != "snapshot posts/1" || created != restETag(p.ID) {
		t.Fatalf("after create: %s %s, want snapshot with the REST ETag %s", ev, created, restETag(p.ID))
	}

	mustNoErr(t, db.Transaction(func(tx *gorm.DB) error {
		return tx.Model(&Post{ID: p.ID}).Updates(map[string]any{"title": "second"}).Error
	}))
	ev, changed := tap.last()
	if ev != "changed posts/1" || changed != restETag(p.ID) || changed == created {
		t.Fatalf("after update: %s %s, want changed with the REST ETag %s", ev, changed, restETag(p.ID))
	}
	partial, err := rt.ETag("posts", "1", &Post{ID: p.ID, Title: "second"})
	mustNoErr(t, err)
	if partial == changed {
		t.Fatal("the partial in-memory struct has the stored record's ETag: the test proves nothing")
	}

	// The long poll resumes after the snapshot and gets the changed event,
	// its id the REST ETag and its data the stored record.
	gin.SetMode(gin.TestMode)
	r := gin.New()
	rt.RegisterCollection(r.Group("/api/v1"), "posts")
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "u1", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(secret)
	mustNoErr(t, err)
	q := url.Values{"lastEventId": {created}, "timeout": {"2"}}
	req := httptest.NewRequest(http.MethodGet, "/api/v1/posts/1/poll?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Fatalf("poll: %d %s", w.Code, w.Body)
	}
	var resp struct {
		Events []struct {
			Event string          `json:"event"`
			ID    string          `json:"id"`
			Data  json.RawMessage `json:"data"`
		} `json:"events"`
	}
	mustNoErr(t, json.Unmarshal(w.Body.Bytes(), &resp))
	if len(resp.Events) != 1 || resp.Events[0].Event != "changed" || resp.Events[0].ID != changed ||
		string(resp.Events[0].Data) != getJSON(t, db, p.ID) {
		t.Fatalf("poll answer %s, want one changed event with id %s", w.Body, changed)
	}

	mustNoErr(t, db.Delete(&p).Error)
	if ev, etag := tap.last(); ev != "deleted posts/1" || etag != realtime.TombstoneETag("posts", "1") {
		t.Fatalf("after delete: %s %s", ev, etag)
	}
}

// Doc carries its own ETag (a revision column) and implements
// realtime.Versioner with it.
type Doc struct {
	ID   uint   `json:"id" gorm:"primaryKey"`
	Rev  uint64 `json:"rev"`
	Body string `json:"body"`
}

func (d *Doc) ETag() string          { return fmt.Sprintf(`"rev-%d"`, d.Rev) }
func (d *Doc) RecordVersion() uint64 { return d.Rev }

// TestETaggerAndVersioner: a record's own ETag (realtime.ETagger) is its
// events' ETag, as the plugin gives it to the app's handlers; its
// realtime.Versioner is not the events' version: the hook numbers them.
func TestETaggerAndVersioner(t *testing.T) {
	rt, err := realtime.New(realtime.Config{JWTSecret: []byte("x")})
	mustNoErr(t, err)
	t.Cleanup(func() { _ = rt.Close(context.Background()) })
	tp := &tap{Plugin: rt}
	db := openRaw(t, nil)
	mustNoErr(t, db.AutoMigrate(&Doc{}))
	use(t, db, gormhook.New(tp, gormhook.Watch(&Doc{}, "docs")))
	d := Doc{Rev: 10, Body: "a"}
	mustNoErr(t, db.Create(&d).Error)
	mustNoErr(t, db.Model(&d).Updates(map[string]any{"rev": 20, "body": "b"}).Error)
	want, err := rt.ETag("docs", "1", &Doc{ID: 1, Rev: 20, Body: "b"})
	mustNoErr(t, err)
	if want != `"rev-20"` {
		t.Fatalf("rt.ETag = %s", want)
	}
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if len(tp.calls) != 2 || tp.calls[0].Version != 1 || tp.calls[1].Version != 2 || tp.calls[1].Err != nil ||
		tp.calls[0].ETag != `"rev-10"` || tp.calls[1].ETag != want {
		t.Fatalf("publishes %+v, want versions 1 and 2 with the records' own ETags", tp.calls)
	}
	var etags []string
	mustNoErr(t, db.Table(gormhook.DefaultOutboxTable).Pluck("etag", &etags).Error)
	if len(etags) != 0 {
		t.Fatalf("outbox rows left: %v", etags)
	}
}
