package realtime

import (
	"context"
	"encoding/json"
	"testing"
)

// TestDeletedPriorGuardsDeletion: a deleted event published with the record
// as it was is shown to the Authorizer (Access.Record), so a subscriber who
// could not see the record does not learn of its deletion, while the frame
// itself still carries only {"id":…}.
func TestDeletedPriorGuardsDeletion(t *testing.T) {
	// alice may see everything; bob only records that are not private.
	auth := func(_ context.Context, a Access) error {
		if a.Identity.User == "alice" || a.Record == nil {
			return nil
		}
		var r struct{ Private bool }
		if err := json.Unmarshal(a.Record, &r); err != nil || r.Private {
			return ErrForbidden
		}
		return nil
	}
	rt, srv := newTestServer(t, Config{Authorize: auth})
	ctx := context.Background()

	streams := map[string]*frameReader{}
	for _, user := range []string{"alice", "bob"} {
		resp := getWith(t, srv.URL+"/api/v1/posts/subscribe", userToken(t, user), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: subscribe: %d", user, resp.StatusCode)
		}
		defer resp.Body.Close()
		streams[user] = newFrameReader(resp.Body) // 200 came after the subscriber was attached
	}

	secret := map[string]any{"id": "s", "private": true}
	if _, err := rt.Publish(ctx, Publication{Collection: "posts", ID: "s", Event: EventDeleted, Record: secret}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Publish(ctx, Publication{Collection: "posts", ID: "p", Event: EventDeleted,
		Data: json.RawMessage(`{"id":"p","private":false}`)}); err != nil {
		t.Fatal(err)
	}

	alice := readFrames(t, streams["alice"], 2)
	for i, id := range []string{"s", "p"} {
		want := `{"id":"` + id + `"}`
		if alice[i].Event != EventDeleted || alice[i].Data != want || alice[i].ID != TombstoneETag("posts", id) {
			t.Fatalf("alice frame %d = %+v, want deleted %s", i, alice[i], want)
		}
	}
	bob := readFrames(t, streams["bob"], 1)
	if bob[0].Event != EventDeleted || bob[0].Data != `{"id":"p"}` {
		t.Fatalf("bob's first frame = %+v, want only the public deletion", bob[0])
	}
}
