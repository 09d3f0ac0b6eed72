package keys_test

import (
	"fmt"
	"testing"

	"github.com/pgcache/pgcache/keys"
)

// TestPrefixKeys: the keys of a prefix are spelled as deployed data has them, and
// none is taken for a row's key, a table's index or another prefix's key.
func TestPrefixKeys(t *testing.T) {
	tests := []struct {
		prefix                             keys.Prefix
		registry, journal, deadLetter, gap string
		purges                             string
	}{
		{"pgc", "pgc:models", "pgc:journal", "pgc:deadletter", "pgc:gaps", "pgc:purges"},
		{"app:", "app::models", "app::journal", "app::deadletter", "app::gaps", "app::purges"},
		{"a.b-c_1", "a.b-c_1:models", "a.b-c_1:journal", "a.b-c_1:deadletter", "a.b-c_1:gaps", "a.b-c_1:purges"},
	}
	for _, tt := range tests {
		got := []string{tt.prefix.Registry(), tt.prefix.Journal(), tt.prefix.DeadLetter(), tt.prefix.Gaps(), tt.prefix.Purges()}
		want := []string{tt.registry, tt.journal, tt.deadLetter, tt.gap, tt.purges}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("Prefix(%q): key %d is %q, want %q", tt.prefix, i, got[i], want[i])
			}
		}
		sp := mustSpace(t, string(tt.prefix), `"Sales"."Order|Items{x}"`, "v1")
		for _, k := range got {
			if _, _, err := keys.ParseKey(k); err == nil {
				t.Errorf("ParseKey(%q) accepts a prefix's key", k)
			}
			if _, ok := keys.KeyOfValue(k); ok {
				t.Errorf("KeyOfValue(%q) accepts a prefix's key", k)
			}
			for _, pattern := range []string{sp.Pattern(), sp.TablePattern()} {
				if globMatch(pattern, k) {
					t.Errorf("pattern %q matches the prefix's key %q", pattern, k)
				}
			}
			if k == sp.TableIndex() {
				t.Errorf("prefix key %q is the table's index", k)
			}
		}
		if !globMatch(keys.RegistryPattern(), tt.registry) {
			t.Errorf("RegistryPattern() %q does not match %q", keys.RegistryPattern(), tt.registry)
		}
		for _, k := range []string{tt.journal, tt.deadLetter, tt.gap, tt.purges, sp.TableIndex(), sp.Key("1").Value(), sp.Key("1").Fence(), sp.Key("1").Pending()} {
			if globMatch(keys.RegistryPattern(), k) {
				t.Errorf("RegistryPattern() %q matches %q", keys.RegistryPattern(), k)
			}
		}
		if p, ok := keys.ParseRegistry(tt.registry); !ok || p != tt.prefix {
			t.Errorf("ParseRegistry(%q) = %q, %v; want %q, true", tt.registry, p, ok, tt.prefix)
		}
	}
	if p, ok := keys.ParseRegistry("pgc:journal"); ok {
		t.Errorf("ParseRegistry(%q) = %q, true; want false", "pgc:journal", p)
	}
}

// TestRegistryField: a registry field gives back the table and version it was built
// from, a table containing '|' (a quoted name) included; the field is cut at its last
// '|', since a version never has one.
func TestRegistryField(t *testing.T) {
	for _, tt := range []struct{ table, version, field string }{
		{"public.users", "v1", "public.users|v1"},
		{`"Sales"."Order|Items"`, "v2", `"Sales"."Order|Items"|v2`},
		{"a|", "v", "a||v"},
		{"|", "v", "||v"},
		{"{t}:v", "_wb", "{t}:v|_wb"},
	} {
		sp := mustSpace(t, "app:", tt.table, tt.version)
		f := sp.RegistryField()
		if f != tt.field {
			t.Errorf("NewSpace(%q, %q).RegistryField() = %q, want %q", tt.table, tt.version, f, tt.field)
		}
		table, version, ok := keys.ParseRegistryField(f)
		if !ok || table != tt.table || version != tt.version {
			t.Errorf("ParseRegistryField(%q) = %q, %q, %v; want %q, %q, true", f, table, version, ok, tt.table, tt.version)
		}
	}
	if f := (keys.Space{}).RegistryField(); f != "" {
		t.Errorf("zero Space: RegistryField() = %q, want empty", f)
	}
	// Fields not built by RegistryField: cut at the last '|' without checking the
	// parts, as the invalidator has always read them.
	for _, tt := range []struct {
		field, table, version string
		ok                    bool
	}{
		{"", "", "", false},
		{"public.users", "", "", false},
		{"|v", "", "v", true},
		{"t|", "t", "", true},
		{"t|a.b", "t", "a.b", true},
	} {
		table, version, ok := keys.ParseRegistryField(tt.field)
		if table != tt.table || version != tt.version || ok != tt.ok {
			t.Errorf("ParseRegistryField(%q) = %q, %q, %v; want %q, %q, %v", tt.field, table, version, ok, tt.table, tt.version, tt.ok)
		}
	}
}

// TestKeyOfValue: a value key read back from Redis names the row's other keys; no
// other key of the row passes for a value key.
func TestKeyOfValue(t *testing.T) {
	sp := mustSpace(t, "app:", `"Sales"."Order|Items"`, "v1")
	for _, pk := range [][]string{{"1"}, {""}, {}, {"a", "}:v"}} {
		k := sp.Key(pk...)
		got, ok := keys.KeyOfValue(k.Value())
		if !ok || got != k {
			t.Errorf("KeyOfValue(%q) = %q, %v; want %q, true", k.Value(), got, ok, k)
		}
		for _, other := range []string{k.Fence(), k.Pending(), sp.TableIndex(), ""} {
			if got, ok := keys.KeyOfValue(other); ok || got != (keys.Key{}) {
				t.Errorf("KeyOfValue(%q) = %q, %v; want the zero Key, false", other, got, ok)
			}
		}
	}
}

func FuzzRegistryField(f *testing.F) {
	f.Add("public.users", "v1")
	f.Add(`"Sales"."Order|Items"`, "v2")
	f.Add("|", "_wb")
	f.Fuzz(func(t *testing.T, table, version string) {
		// Arbitrary fields are cut at a '|' or refused, never panic.
		field := table + version
		if gt, gv, ok := keys.ParseRegistryField(field); ok && gt+"|"+gv != field {
			t.Fatalf("ParseRegistryField(%q) = %q, %q: the parts do not make the field", field, gt, gv)
		}
		if table == "" {
			table = "t"
		}
		sp, err := keys.NewSpace("p", table, safeName(version, versionAlphabet))
		if err != nil {
			t.Fatal(err)
		}
		gt, gv, ok := keys.ParseRegistryField(sp.RegistryField())
		if !ok || gt != sp.Table() || gv != sp.Version() {
			t.Fatalf("ParseRegistryField(%q) = %q, %q, %v; want %q, %q, true", sp.RegistryField(), gt, gv, ok, sp.Table(), sp.Version())
		}
	})
}

func ExamplePrefix() {
	p := keys.Prefix("app")
	fmt.Println(p.Registry())
	fmt.Println(p.Journal())
	fmt.Println(p.DeadLetter())
	fmt.Println(p.Gaps())
	users, err := keys.NewSpace(string(p), keys.QualifiedTable("public", "users"), "v1")
	if err != nil {
		panic(err)
	}
	fmt.Println(users.RegistryField())
	fmt.Println(keys.ParseRegistryField(`"Sales"."Order|Items"|v2`))
	// Output:
	// app:models
	// app:journal
	// app:deadletter
	// app:gaps
	// public.users|v1
	// "Sales"."Order|Items" v2 true
}

// TestJournalShards: the journal's shards are named "<prefix>:journal{i}", each in the
// hash slot of its number, and a row's shard is its hash slot modulo the shard count.
func TestJournalShards(t *testing.T) {
	p := keys.Prefix("pgc")
	seen := make(map[uint16]bool)
	for i := range keys.JournalShards {
		name := p.JournalShard(i)
		if want := fmt.Sprintf("pgc:journal{%d}", i); name != want {
			t.Errorf("shard %d = %q, want %q", i, name, want)
		}
		slot := keys.HashSlot(name)
		if slot != keys.HashSlot(fmt.Sprint(i)) {
			t.Errorf("shard %q is in slot %d, not its tag's", name, slot)
		}
		seen[slot] = true
	}
	if len(seen) != keys.JournalShards {
		t.Errorf("shards in %d slots, want %d", len(seen), keys.JournalShards)
	}
	sp, err := keys.NewSpace("pgc", "public.widgets", "v1")
	if err != nil {
		t.Fatal(err)
	}
	counts := make([]int, keys.JournalShards)
	for id := range 1000 {
		k := sp.Key(fmt.Sprint(id))
		s := keys.JournalShardOf(k)
		if want := int(keys.HashSlot(k.Value()) % keys.JournalShards); s != want {
			t.Fatalf("row %d: shard %d, want %d", id, s, want)
		}
		counts[s]++
		if l := k.Landed(); keys.HashSlot(l) != keys.HashSlot(k.Value()) {
			t.Fatalf("landing mark %q is not in its row's slot", l)
		}
	}
	for i, n := range counts {
		if n == 0 {
			t.Errorf("shard %d holds none of 1000 rows", i)
		}
	}
}
