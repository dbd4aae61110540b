package realtime

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	r3 "github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"
)

// r3Event is what the r3labs client delivered, copied.
type r3Event struct{ event, id, data string }

// r3Subscribe connects r3labs/sse/v2's client to url with tok, resuming
// from lastID when set. Events with an event type arrive on the returned
// channel; stop cancels the subscription and waits for the client to end.
func r3Subscribe(t *testing.T, url, tok, lastID string) (events <-chan r3Event, stop func()) {
	t.Helper()
	c := r3.NewClient(url)
	c.Headers["Authorization"] = "Bearer " + tok
	c.ReconnectStrategy = &backoff.StopBackOff{} // never retry: the test decides
	if lastID != "" {
		c.LastEventID.Store([]byte(lastID))
	}
	ch := make(chan r3Event, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.SubscribeRawWithContext(ctx, func(m *r3.Event) {
			if len(m.Event) == 0 { // the retry block, keepalives
				return
			}
			select {
			case ch <- r3Event{string(m.Event), string(m.ID), string(m.Data)}:
			case <-ctx.Done():
			}
		})
	}()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(hangGuard):
			t.Error("the r3labs client did not stop")
		}
	}
	t.Cleanup(stop)
	return ch, stop
}

func r3Next(t *testing.T, ch <-chan r3Event) r3Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(hangGuard):
		t.Fatal("no event from the r3labs client")
		return r3Event{}
	}
}

// TestR3labsClient: r3labs/sse/v2's client, a third-party client, follows a
// record stream: the snapshot, then changed, each with the record
// version's ETag as id; a second client that sends the snapshot's ETag as
// Last-Event-ID gets the change only.
func TestR3labsClient(t *testing.T) {
	store := newRecordStore()
	rt, srv := newTestServer(t, Config{Loader: store.Load})
	tok := userToken(t, "u1")
	v1 := json.RawMessage(`{"id":"1","title":"first"}`)
	store.put(Ref{Collection: "posts", ID: "1"}, v1)
	e1, err := rt.Snapshot(context.Background(), "posts", "1", v1) // the app created it
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/api/v1/posts/1/subscribe"

	events, stop := r3Subscribe(t, url, tok, "")
	if got := r3Next(t, events); got != (r3Event{EventSnapshot, e1, string(v1)}) {
		t.Fatalf("first event %+v, want snapshot %s %s", got, e1, v1)
	}
	v2 := json.RawMessage(`{"id":"1","title":"second"}`)
	store.put(Ref{Collection: "posts", ID: "1"}, v2)
	e2, err := rt.Changed(context.Background(), "posts", "1", v2)
	if err != nil {
		t.Fatal(err)
	}
	if got := r3Next(t, events); got != (r3Event{EventChanged, e2, string(v2)}) {
		t.Fatalf("second event %+v, want changed %s %s", got, e2, v2)
	}
	stop()

	resumed, _ := r3Subscribe(t, url, tok, e1)
	if got := r3Next(t, resumed); got != (r3Event{EventChanged, e2, string(v2)}) {
		t.Fatalf("resumed from %s: %+v, want changed %s", e1, got, e2)
	}
	v3 := json.RawMessage(`{"id":"1","title":"third"}`)
	store.put(Ref{Collection: "posts", ID: "1"}, v3)
	e3, err := rt.Changed(context.Background(), "posts", "1", v3)
	if err != nil {
		t.Fatal(err)
	}
	if got := r3Next(t, resumed); got != (r3Event{EventChanged, e3, string(v3)}) {
		t.Fatalf("resumed client, live: %+v, want changed %s", got, e3)
	}
}
