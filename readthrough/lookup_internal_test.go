package readthrough

import (
	"testing"

	"github.com/pgcache/pgcache/keys"
)

// FuzzGoValue: a canonical primary-key value stored in a lookup entry turns back into
// a Go value whose key is the same (the row key a hit reads is the one a fill of the
// row writes).
func FuzzGoValue(f *testing.F) {
	for _, s := range []string{"42", "-7", "abc", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "12.50", `\xDEad`, "ab  ", ""} {
		for k := keys.Text; k <= keys.Char; k++ {
			f.Add(uint8(k), s)
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, text string) {
		k := keys.Kind(kind % uint8(keys.Char+1))
		canon, err := keys.FromText(k, text)
		if err != nil {
			return
		}
		v, err := goValue(k, canon)
		if err != nil {
			t.Fatalf("goValue(%v, %q): %v", k, canon, err)
		}
		again, err := keys.FromGo(k, v)
		if err != nil || again != canon {
			t.Fatalf("goValue(%v, %q) = %#v, whose key is %q, %v", k, canon, v, again, err)
		}
	})
}
