package keys_test

import (
	"strings"
	"testing"

	"github.com/pgcache/pgcache/keys"
)

// TestPending: a row's pending write-back record shares the row's hash slot, and no
// invalidation pattern matches it, so neither a row's nor a table's invalidation can
// delete a write that has not reached Postgres yet.
func TestPending(t *testing.T) {
	s := mustSpace(t, "app:", `"Sales"."Order|Items"`, "v1")
	for _, pk := range [][]string{{"1"}, {""}, {}, {"a", "b*"}, {"}:v"}, {"é", "x,y"}} {
		k := s.Key(pk...)
		if want := strings.TrimSuffix(k.Value(), ":v") + ":p"; k.Pending() != want {
			t.Errorf("Key(%q).Pending() = %q, want %q", pk, k.Pending(), want)
		}
		if keys.HashSlot(k.Pending()) != keys.HashSlot(k.Value()) {
			t.Errorf("Key(%q): pending and value in slots %d and %d", pk, keys.HashSlot(k.Pending()), keys.HashSlot(k.Value()))
		}
		for _, pattern := range []string{s.Pattern(), s.TablePattern()} {
			if globMatch(pattern, k.Pending()) {
				t.Errorf("invalidation pattern %q matches the pending record %q", pattern, k.Pending())
			}
		}
	}
	if p := (keys.Key{}).Pending(); p != "" {
		t.Errorf("zero Key: Pending() = %q, want empty", p)
	}
}
