package keys_test

import (
	"testing"

	"github.com/pgcache/pgcache/keys"
)

// TestTableIndex: every version of a table shares one index key, other tables and
// prefixes have others, and no invalidation pattern or key parser takes it for a row.
func TestTableIndex(t *testing.T) {
	v1 := mustSpace(t, "app:", `"Sales"."Order|Items{x}"`, "v1")
	v2 := mustSpace(t, "app:", `"Sales"."Order|Items{x}"`, "v2")
	other := mustSpace(t, "app:", `"Sales"."Order"`, "v1")
	otherPrefix := mustSpace(t, "app:rows", `"Sales"."Order|Items{x}"`, "v1")
	idx := v1.TableIndex()
	if want := `app::rows{"Sales"."Order%7CItems%7Bx%7D"}`; idx != want {
		t.Fatalf("TableIndex() = %q, want %q", idx, want)
	}
	if v2.TableIndex() != idx {
		t.Errorf("versions of one table give indexes %q and %q", idx, v2.TableIndex())
	}
	for _, sp := range []keys.Space{other, otherPrefix} {
		if sp.TableIndex() == idx {
			t.Errorf("%q and %q share the index %q", sp.Prefix()+sp.Table(), v1.Prefix()+v1.Table(), idx)
		}
		for _, pattern := range []string{sp.Pattern(), sp.TablePattern(), v1.Pattern(), v1.TablePattern()} {
			if globMatch(pattern, idx) || globMatch(pattern, sp.TableIndex()) {
				t.Errorf("pattern %q matches an index key", pattern)
			}
		}
	}
	if _, _, err := keys.ParseKey(idx); err == nil {
		t.Errorf("ParseKey(%q) accepts the index key", idx)
	}
	if got := (keys.Space{}).TableIndex(); got != "" {
		t.Errorf("zero Space: TableIndex() = %q, want empty", got)
	}
}
