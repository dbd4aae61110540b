package brokertest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
)

// presenceNodes starts two nodes and returns them as PresenceStores, or
// skips t when they are not.
func presenceNodes(t *testing.T, newNodes factory) (a, b realtime.PresenceStore) {
	t.Helper()
	n := start(t, newNodes, realtime.MemoryBufferConfig{})
	a, okA := n.a.(realtime.PresenceStore)
	b, okB := n.b.(realtime.PresenceStore)
	if !okA || !okB {
		t.Skip("the broker does not implement realtime.PresenceStore")
	}
	return a, b
}

func addPresence(t *testing.T, p realtime.PresenceStore, ttl time.Duration, conns ...realtime.PresenceConn) {
	t.Helper()
	if err := p.AddPresence(t.Context(), ttl, conns...); err != nil {
		t.Fatalf("AddPresence: %v", err)
	}
}

// presence describes a tenant's presence as seen through p.
func presence(t *testing.T, p realtime.PresenceStore, tenant string) string {
	t.Helper()
	users, conns, err := p.Presence(t.Context(), tenant)
	if err != nil {
		t.Fatalf("Presence %q: %v", tenant, err)
	}
	if users == nil {
		users = []string{}
	}
	return fmt.Sprintf("%q %d", users, conns)
}

func wantPresence(t *testing.T, p realtime.PresenceStore, tenant string, users []string, conns int) {
	t.Helper()
	if users == nil {
		users = []string{}
	}
	if got, want := presence(t, p, tenant), fmt.Sprintf("%q %d", users, conns); got != want {
		t.Fatalf("Presence(%q) = %s, want %s", tenant, got, want)
	}
}

func wantUserPresence(t *testing.T, p realtime.PresenceStore, tenant, user string, conns int) {
	t.Helper()
	got, err := p.UserPresence(t.Context(), tenant, user)
	if err != nil {
		t.Fatalf("UserPresence %q %q: %v", tenant, user, err)
	}
	if got != conns {
		t.Fatalf("UserPresence(%q, %q) = %d, want %d", tenant, user, got, conns)
	}
}

// waitPresence polls until p reports users and conns for tenant, and fails
// after WaitTimeout.
func waitPresence(t *testing.T, p realtime.PresenceStore, tenant string, users []string, conns int) {
	t.Helper()
	if users == nil {
		users = []string{}
	}
	want := fmt.Sprintf("%q %d", users, conns)
	deadline := time.Now().Add(WaitTimeout)
	for {
		got := presence(t, p, tenant)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Presence(%q) still %s after %v, want %s", tenant, got, WaitTimeout, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const long = time.Hour // a TTL that does not run out during a test

// testPresence checks the PresenceStore ability, when the Broker has it.
func testPresence(t *testing.T, newNodes factory) {
	alice1 := realtime.PresenceConn{Tenant: "t1", User: "alice", ConnID: "c1"}
	bob := realtime.PresenceConn{Tenant: "t1", User: "bob", ConnID: "c2"}
	alice2 := realtime.PresenceConn{Tenant: "t1", User: "alice", ConnID: "c3"}
	carol := realtime.PresenceConn{Tenant: "t2", User: "carol", ConnID: "c4"}
	zed := realtime.PresenceConn{Tenant: "t1", User: "zed", ConnID: "c5"}

	t.Run("SeesBothNodes", func(t *testing.T) {
		a, b := presenceNodes(t, newNodes)
		wantPresence(t, a, "t1", nil, 0)
		addPresence(t, a, long, zed, alice1)
		addPresence(t, b, long, bob, alice2, carol)
		for _, p := range []realtime.PresenceStore{a, b} {
			wantPresence(t, p, "t1", []string{"alice", "bob", "zed"}, 4)
			wantPresence(t, p, "t2", []string{"carol"}, 1)
			wantPresence(t, p, "t3", nil, 0)
			wantUserPresence(t, p, "t1", "alice", 2)
			wantUserPresence(t, p, "t1", "bob", 1)
			wantUserPresence(t, p, "t2", "alice", 0)
			wantUserPresence(t, p, "t1", "nobody", 0)
		}
		// Adding an open connection again does not count it twice.
		addPresence(t, b, long, alice1)
		wantPresence(t, a, "t1", []string{"alice", "bob", "zed"}, 4)
	})

	t.Run("Remove", func(t *testing.T) {
		a, b := presenceNodes(t, newNodes)
		addPresence(t, a, long, alice1, bob)
		addPresence(t, b, long, alice2, carol)
		if err := b.RemovePresence(t.Context(), alice1); err != nil { // added by the other node
			t.Fatalf("RemovePresence: %v", err)
		}
		wantPresence(t, a, "t1", []string{"alice", "bob"}, 2)
		wantUserPresence(t, a, "t1", "alice", 1)
		if err := a.RemovePresence(t.Context(), alice2, bob); err != nil {
			t.Fatalf("RemovePresence: %v", err)
		}
		wantPresence(t, b, "t1", nil, 0)
		wantUserPresence(t, b, "t1", "alice", 0)
		wantPresence(t, b, "t2", []string{"carol"}, 1)
		if err := a.RemovePresence(t.Context(), alice1); err != nil { // already gone
			t.Fatalf("RemovePresence of a removed connection: %v", err)
		}
	})

	t.Run("ExpiresAfterTTL", func(t *testing.T) {
		a, b := presenceNodes(t, newNodes)
		addPresence(t, a, long, alice1)
		addPresence(t, b, 300*time.Millisecond, bob, alice2) // b's node "dies": never refreshed
		waitPresence(t, a, "t1", []string{"alice"}, 1)
		wantUserPresence(t, b, "t1", "alice", 1)
		wantUserPresence(t, b, "t1", "bob", 0)
	})

	t.Run("AddRefreshesTTL", func(t *testing.T) {
		// bob is added with a short TTL and refreshed with a long one; zed
		// is added after with the short TTL: once zed expired, bob's first
		// TTL has run out too, and he must still be there.
		a, b := presenceNodes(t, newNodes)
		addPresence(t, a, 300*time.Millisecond, bob)
		addPresence(t, a, long, bob)
		addPresence(t, b, 300*time.Millisecond, zed)
		waitPresence(t, b, "t1", []string{"bob"}, 1)
		users, _, err := a.Presence(t.Context(), "t1")
		if err != nil || !slices.Equal(users, []string{"bob"}) {
			t.Fatalf("Presence = %q, %v; want [bob]", users, err)
		}
	})
}
