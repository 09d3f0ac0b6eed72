package store_test

import (
	"testing"

	"github.com/pgcache/pgcache/internal/store"
)

func TestCompareIDs(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1-0", "1-0", 0},
		{"1-0", "1-1", -1},
		{"9-5", "10-0", -1}, // numeric, not lexical
		{"1700000000000-12", "1700000000000-3", 1},
		{"2-0", "1-99", 1},
	} {
		if got := store.CompareIDs(c.a, c.b); got != c.want {
			t.Errorf("CompareIDs(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
