package realtime

import (
	"encoding/json"
	"slices"
	"testing"
)

// TestTargetSetsFollowChanges: a push's targets are kept per tenant and
// channel (tenantTargets.sets); every change of the tenant's targets, their
// channels or their filters is seen by the next push.
func TestTargetSetsFollowChanges(t *testing.T) {
	data := json.RawMessage(`{"kind":"a"}`)
	newTarget := func(user string) *target {
		return &target{id: user, ident: &Identity{Tenant: "t", User: user}, all: true,
			c: newConn(nil, nil, 8, false)}
	}
	ids := func(s *targetSet) []string {
		var out []string
		for _, x := range s.list {
			out = append(out, x.id)
		}
		slices.Sort(out)
		return out
	}
	filter, err := parseFilter(json.RawMessage(`{"kind":"b"}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(r *registry, a, b *target)
		want   []string // the targets of a push to channel "news" after it
	}{
		{"a target subscribes", func(r *registry, _, b *target) {
			if _, err := r.subscribe(b, []string{"news"}, 10); err != nil {
				t.Fatal(err)
			}
		}, []string{"a", "b"}},
		{"a target unsubscribes", func(r *registry, a, _ *target) { r.unsubscribe(a, []string{"news"}) }, nil},
		{"a target adds a filter", func(r *registry, a, _ *target) {
			if err := r.addFilters(a, []pushFilter{filter}); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"a target leaves", func(r *registry, a, _ *target) { r.remove(a, false) }, nil},
		{"a target joins", func(r *registry, _, _ *target) {
			if !r.add(newTarget("c"), []string{"news"}, nil) {
				t.Fatal("add refused")
			}
		}, []string{"a", "c"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRegistry()
			a, b := newTarget("a"), newTarget("b")
			r.add(a, []string{"news"}, nil)
			r.add(b, nil, nil)
			first := r.targets("t", nil, nil, "news", "x", data)
			if got := ids(first); !slices.Equal(got, []string{"a"}) {
				t.Fatalf("before: %v", got)
			}
			if again := r.targets("t", nil, nil, "news", "x", data); again != first {
				t.Fatal("the same push's targets were not kept")
			}
			tc.change(r, a, b)
			if got := ids(r.targets("t", nil, nil, "news", "x", data)); !slices.Equal(got, tc.want) {
				t.Fatalf("after: %v, want %v", got, tc.want)
			}
		})
	}
}

// TestTargetSetsNotKept: the targets of a push that names or excludes
// users, or reaches a target with filters, depend on the push: they are
// found again each time.
func TestTargetSetsNotKept(t *testing.T) {
	r := newRegistry()
	a := &target{id: "a", ident: &Identity{Tenant: "t", User: "a"}, all: true, c: newConn(nil, nil, 8, false)}
	f := &target{id: "f", ident: &Identity{Tenant: "t", User: "f"}, all: true, c: newConn(nil, nil, 8, false)}
	r.add(a, []string{"news"}, nil)
	r.add(f, []string{"news"}, nil)
	filter, err := parseFilter(json.RawMessage(`{"kind":"b"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.addFilters(f, []pushFilter{filter}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		users, except []string
		data          string
		want          int
	}{
		{"filtered out", nil, nil, `{"kind":"a"}`, 1},
		{"filter matches", nil, nil, `{"kind":"b"}`, 2},
		{"users", []string{"a"}, nil, `{"kind":"b"}`, 1},
		{"excluded", nil, []string{"a"}, `{"kind":"b"}`, 1},
		{"filtered out again", nil, nil, `{"kind":"a"}`, 1},
	} {
		if got := len(r.targets("t", tc.users, tc.except, "news", "x", json.RawMessage(tc.data)).list); got != tc.want {
			t.Errorf("%s: %d targets, want %d", tc.name, got, tc.want)
		}
	}
}
