package readthrough_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

// TestWriteBackSoftDeleteRaced: a write-back soft delete reads the row's pending
// record, journals an entry built on it and lands the entry only if the record is
// still the one it read; a Save of the row that lands in between (the hook) makes it
// start again, up to three times. Raced once, the delete lands on the racing Save:
// readers see that Save's row deleted, and the flush leaves it so in Postgres. Raced
// three times, Delete fails with ErrRaced and nothing of it is seen: readers and,
// after the flush, Postgres hold the last Save, live. A Save journaled after the
// delete's entry but landed before it orders the delete before itself: Delete
// succeeds, superseded, and the Save's row stays live. The control lands without the
// check (testhooks.WriteBack.UncheckedBase): the delete carries the row it read
// first, and the racing Save is lost.
func TestWriteBackSoftDeleteRaced(t *testing.T) { fixture.OnBoth(t, testWriteBackSoftDeleteRaced) }

func testWriteBackSoftDeleteRaced(t *testing.T, top topology) {
	for _, c := range []struct {
		name       string
		races      int
		superseded bool // the Save races after the delete's entry, not before it
		unchecked  bool
	}{
		{"raced once", 1, false, false},
		{"raced three times", 3, false, false},
		{"superseded", 1, true, false},
		{"control-unchecked", 1, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnvOn(t, top)
			ctx := ctxT(t)
			scoped, unscoped, _ := gadgets(t, e, writepolicy.WriteBack)
			if err := scoped.Save(ctx, &Gadget{ID: 1, Name: "saved"}); err != nil {
				t.Fatal(err)
			}
			races := 0
			race := func() {
				if races < c.races {
					races++
					if err := scoped.Save(ctx, &Gadget{ID: 1, Name: fmt.Sprint("race ", races)}); err != nil {
						t.Error(err)
					}
				}
			}
			wh := &testhooks.WriteBack{UncheckedBase: c.unchecked, AfterPendingRead: race}
			if c.superseded {
				wh = &testhooks.WriteBack{BeforeLanding: func(string) { race() }}
			}
			err := scoped.Delete(testhooks.WithWriteBack(ctx, wh), int64(1))
			last := fmt.Sprint("race ", c.races)
			deleted := c.races < 3 && !c.superseded
			switch {
			case c.races < 3 && err != nil:
				t.Fatalf("Delete raced %d times: %v, want it done", c.races, err)
			case c.races == 3 && !errors.Is(err, writeback.ErrRaced):
				t.Fatalf("Delete raced %d times: %v, want ErrRaced", c.races, err)
			}
			g, ok, err := unscoped.Get(ctx, int64(1))
			if err != nil || !ok || g.DeletedAt.Valid != deleted || !c.unchecked && g.Name != last {
				t.Fatalf("pending: unscoped Get(1) = %+v, %v, %v; want %q, deleted %v", g, ok, err, last, deleted)
			}
			if _, ok, err := scoped.Get(ctx, int64(1)); err != nil || ok == deleted {
				t.Fatalf("pending: scoped Get(1) found %v, %v; want found %v", ok, err, !deleted)
			}
			flush(t, e)
			db, ok := uncached(t, e.db, 1, true)
			if c.unchecked {
				if !ok || db.Name != "saved" {
					t.Fatalf("control: Postgres holds %+v, %v; want the first row deleted, the racing Save lost: the test cannot fail", db, ok)
				}
				return
			}
			if !ok || db.Name != last || db.DeletedAt.Valid != deleted {
				t.Fatalf("Postgres holds %+v, %v; want %q, deleted %v", db, ok, last, deleted)
			}
		})
	}
}
