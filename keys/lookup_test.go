package keys_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/pgcache/pgcache/keys"
)

func TestLookupKey(t *testing.T) {
	sp, err := keys.NewSpace("app", `"Sales".order_items`, "s1")
	if err != nil {
		t.Fatal(err)
	}
	email, err := keys.NewLookup(keys.Unique, "email")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sp.LookupKey(email, "a@b.c").Value(), `app{"Sales".order_items|s1|u=email|a@b.c}:v`; got != want {
		t.Errorf("unique key = %s, want %s", got, want)
	}
	// Declared order does not matter: values go in the order of the column names.
	ab, _ := keys.NewLookup(keys.Unique, "tenant_id", "email")
	ba, _ := keys.NewLookup(keys.Unique, "email", "tenant_id")
	if ab != ba {
		t.Errorf("lookups over the same columns differ: %v, %v", ab, ba)
	}
	if got := ab.Columns(); !slices.Equal(got, []string{"email", "tenant_id"}) {
		t.Errorf("Columns = %q", got)
	}
	if got := keys.Order([]string{"tenant_id", "email"}); !slices.Equal(got, []int{1, 0}) {
		t.Errorf("Order = %v, want [1 0]", got)
	}
	list, _ := keys.NewLookup(keys.List, "order_id")
	k := sp.LookupKey(list, "42")
	if got, want := k.Fence(), `app{"Sales".order_items|s1|l=order_id|42}:f`; got != want {
		t.Errorf("list fence = %s, want %s", got, want)
	}
	if keys.HashSlot(k.Value()) != keys.HashSlot(k.Fence()) {
		t.Error("a lookup entry and its fence are in different slots")
	}
	// Separators inside values and columns are escaped, so the encoding stays injective.
	odd, _ := keys.NewLookup(keys.Unique, "a|b", "c,d")
	if got, want := sp.LookupKey(odd, "x,y", "").Value(), `app{"Sales".order_items|s1|u=a%7Cb,c%2Cd|x%2Cy,~}:v`; got != want {
		t.Errorf("escaped key = %s, want %s", got, want)
	}
	// No lookup key is a row key.
	if _, _, err := keys.ParseKey(k.Value()); !errors.Is(err, keys.ErrBadKey) {
		t.Errorf("ParseKey(%s) = %v, want ErrBadKey", k.Value(), err)
	}
	for _, l := range []keys.Lookup{email, ab, list, odd} {
		vals := make([]string, len(l.Columns()))
		for i := range vals {
			vals[i] = "v|" + string(rune('a'+i))
		}
		key := sp.LookupKey(l, vals...)
		gs, gl, gv, err := keys.ParseLookupKey(key.Fence())
		if err != nil || gs != sp || gl != l || !slices.Equal(gv, vals) {
			t.Errorf("ParseLookupKey(%s) = %v, %v, %q, %v", key.Fence(), gs, gl, gv, err)
		}
		table, version, pl, ok := keys.ParseLookupField(sp.LookupField(l))
		if !ok || table != sp.Table() || version != sp.Version() || pl != l {
			t.Errorf("ParseLookupField(%s) = %s, %s, %v, %t", sp.LookupField(l), table, version, pl, ok)
		}
	}
}

func TestNewLookupRefuses(t *testing.T) {
	for _, c := range []struct {
		kind keys.LookupKind
		cols []string
	}{
		{'x', []string{"a"}},
		{keys.Unique, nil},
		{keys.List, []string{"a", ""}},
		{keys.Unique, []string{"a", "b", "a"}},
	} {
		if _, err := keys.NewLookup(c.kind, c.cols...); !errors.Is(err, keys.ErrBadSpace) {
			t.Errorf("NewLookup(%v, %q) = %v, want ErrBadSpace", c.kind, c.cols, err)
		}
	}
}

func TestParseLookupRefuses(t *testing.T) {
	for _, key := range []string{
		"app{t|s1|42}:v",        // a row key
		"app{t|s1|u=b,a|1,2}:v", // columns out of name order
		"app{t|s1|u=a|1,2}:v",   // more values than columns
		"app{t|s1|x=a|1}:v",     // unknown kind
		"app{t|s1|u=|1}:v",      // no column
		"app{t|s1|u=a|1}:p",     // not a value or fence key
		"app{t|s1|u=a|1|2}:v",   // a stray '|'
		"app{t|s1|u=a|%41}:v",   // an escape of a byte that needs none
	} {
		if _, _, _, err := keys.ParseLookupKey(key); !errors.Is(err, keys.ErrBadKey) {
			t.Errorf("ParseLookupKey(%s) = %v, want ErrBadKey", key, err)
		}
	}
	for _, f := range []string{"t|s1", "t|s1|u=b,a", "|s1|u=a", "t||u=a", "u=a"} {
		if _, _, _, ok := keys.ParseLookupField(f); ok {
			t.Errorf("ParseLookupField(%s) accepted", f)
		}
	}
}
