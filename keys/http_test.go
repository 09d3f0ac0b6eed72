package keys_test

import (
	"testing"

	"github.com/pgcache/pgcache/keys"
)

// TestDepsAndTags: a row's Deps key shares its slot and matches no invalidation
// pattern; its tag is the same under every schema version, differs between rows,
// tables, prefixes and lookups, and is spelled as CDNs accept.
func TestDepsAndTags(t *testing.T) {
	v1 := mustSpace(t, "app:", `"Sales"."Order|Items"`, "v1")
	v2 := mustSpace(t, "app:", `"Sales"."Order|Items"`, "v2")
	other := mustSpace(t, "app:", "widgets", "v1")
	otherPrefix := mustSpace(t, "app2:", `"Sales"."Order|Items"`, "v1")
	l, err := keys.NewLookup(keys.Unique, "email")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, pk := range [][]string{{"1"}, {""}, {}, {"a", "b*"}, {"}:v"}, {"é", "x,y"}, {"1,2"}} {
		k := v1.Key(pk...)
		if keys.HashSlot(k.Deps()) != keys.HashSlot(k.Value()) {
			t.Errorf("Key(%q): deps and value in different slots", pk)
		}
		for _, pattern := range []string{v1.Pattern(), v1.TablePattern()} {
			if globMatch(pattern, k.Deps()) {
				t.Errorf("pattern %q matches deps key %q", pattern, k.Deps())
			}
		}
		tag := k.Tag()
		if !keys.ValidTag(tag) {
			t.Errorf("Key(%q).Tag() = %q: not a valid tag", pk, tag)
		}
		if got := v2.Key(pk...).Tag(); got != tag {
			t.Errorf("Key(%q): tag %q under v1, %q under v2", pk, tag, got)
		}
		for _, o := range []keys.Key{other.Key(pk...), otherPrefix.Key(pk...)} {
			if o.Tag() == tag {
				t.Errorf("Key(%q): tag %q shared with %s", pk, tag, o)
			}
		}
		if prev, dup := seen[tag]; dup {
			t.Errorf("tag %q of %q and %q", tag, pk, prev)
		}
		seen[tag] = k.Value()
	}
	lk := v1.LookupKey(l, "a@b")
	if lt := lk.Tag(); !keys.ValidTag(lt) || lt != v2.LookupKey(l, "a@b").Tag() || lt == v1.Key("a@b").Tag() {
		t.Errorf("lookup tag %q: invalid, version-dependent or a row's", lt)
	}
	if keys.HashSlot(v1.TableDeps()) != keys.HashSlot(v1.TableIndex()) || v1.TableDeps() != v2.TableDeps() || v1.TableDeps() == v1.TableIndex() {
		t.Errorf("TableDeps %q: not in the index's slot, or version-dependent", v1.TableDeps())
	}
	if tt := v1.TableTag(); !keys.ValidTag(tt) || tt != v2.TableTag() || tt == other.TableTag() || tt == otherPrefix.TableTag() {
		t.Errorf("TableTag %q: invalid, version-dependent or shared", tt)
	}
	for _, bad := range []string{"", "pgc-", "pgc-AAAAAAAAAAAAAAAA", "xkey", "pgc-aaaaaaaaaaaaaaa1", "pgc-aaaaaaaaaaaaaaaa "} {
		if keys.ValidTag(bad) {
			t.Errorf("ValidTag(%q) = true", bad)
		}
	}
	if (keys.Key{}).Tag() != "" || (keys.Key{}).Deps() != "" || (keys.Space{}).TableTag() != "" || (keys.Space{}).TableDeps() != "" {
		t.Error("zero Key or Space: non-empty deps or tag")
	}
}

// TestInvalidated: the keys invalidation deletes are each row's Value, Fence and Deps,
// in that order, the zero Key's included.
func TestInvalidated(t *testing.T) {
	sp := mustSpace(t, "app:", `"Sales"."Order|Items"`, "v1")
	ks := []keys.Key{sp.Key("1"), {}, sp.Key("a|b", "ü"), sp.Key("22")}
	var want []string
	for _, k := range ks {
		want = append(want, k.Value(), k.Fence(), k.Deps())
	}
	got := keys.Invalidated(ks...)
	if len(got) != len(want) {
		t.Fatalf("%d keys, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("key %d: %q, want %q", i, got[i], want[i])
		}
	}
	if n := len(keys.Invalidated()); n != 0 {
		t.Errorf("%d keys for no row", n)
	}
}
