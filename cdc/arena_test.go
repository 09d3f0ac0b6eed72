package cdc_test

import (
	"testing"

	"github.com/pgcache/pgcache/cdc"
)

// TestChangesShareNoSlice: the changes of a transaction take their keys from shared
// chunks, but appending to one change's key cannot alter another's, and each row keeps
// its own values.
func TestChangesShareNoSlice(t *testing.T) {
	const relID = 16470
	d := cdc.NewDecoder()
	for _, m := range [][]byte{
		encRelation(relID, "public", "pairs", 'd', col{"a", oidInt8, true}, col{"b", oidText, false}),
		encBegin(0x10, 1),
		encInsert(relID, text("1"), text("one")),
		encInsert(relID, text("2"), text("two")),
	} {
		if _, err := d.Decode(m); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := d.Decode(encCommit(0x10, 0x20))
	if err != nil || tx == nil || len(tx.Changes) != 2 {
		t.Fatalf("commit: %v, %v", tx, err)
	}
	first, second := tx.Changes[0], tx.Changes[1]
	_ = append(first.Key, "intruder")
	if second.Key[0] != "2" || first.Key[0] != "1" {
		t.Fatalf("keys %q and %q after appending to the first; want [1] and [2]", first.Key, second.Key)
	}
	if got := rowsOf(first) + " | " + rowsOf(second); got != `("1" "one") / () | ("2" "two") / ()` {
		t.Fatalf("rows %s", got)
	}
}
