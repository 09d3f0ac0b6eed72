package writeback_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/writeback"
)

// TestSettleWhileNextApplies: a flusher settles a batch (clears its rows' pending
// records, acknowledges its entries) while the next batch's transaction runs. Row 1
// is written (v1), its batch commits, and v2 of the row is written before that batch
// is settled; the next batch reads the row's state (v2 pending) before the first one
// clears it. The first batch's clear must leave v2's pending record alone: until v2
// commits, readers get v2 from it, not v1 from Postgres. The control
// (testhooks.Flush.ClearAny) clears whatever write the record holds, and a reader in
// that window gets v1.
func TestSettleWhileNextApplies(t *testing.T) { fixture.OnBoth(t, testSettleWhileNextApplies) }

func testSettleWhileNextApplies(t *testing.T, top topology) {
	withControl(t, "versioned-clear", "control-clear-any", func(t *testing.T, control bool) { settleWhileNextApplies(t, top, control) })
}

func settleWhileNextApplies(t *testing.T, top topology, control bool) {
	e := newEnv(t, top)
	ctx := ctxT(t)
	repo := e.widgets(t)
	if err := repo.Save(ctx, &Widget{ID: 1, Name: "v1"}); err != nil {
		t.Fatal(err)
	}
	f := e.flusher(t, writeback.FlusherOptions{})
	var commits, sorts, settles, precommits atomic.Int32
	sorted2 := make(chan struct{})
	var overlapped atomic.Bool
	var window atomic.Value // what a reader got between the first batch's settle and v2's commit
	hooks := &testhooks.Flush{
		ClearAny: control,
		AfterCommit: func() {
			if commits.Add(1) == 1 {
				if err := repo.Save(ctx, &Widget{ID: 1, Name: "v2"}); err != nil {
					t.Error(err)
				}
			}
		},
		AfterSort: func() {
			if sorts.Add(1) == 2 {
				close(sorted2)
			}
		},
		BeforeSettle: func() {
			if settles.Add(1) == 1 {
				// Settle the first batch only once the next one read the row's state.
				select {
				case <-sorted2:
					overlapped.Store(true)
				case <-time.After(20 * time.Second):
				}
			}
		},
		BeforeCommit: func() {
			if precommits.Add(1) != 2 {
				return
			}
			// The first batch settled: its entry was acknowledged and trimmed away.
			err := poll(20*time.Second, func() (bool, error) {
				n, err := f.Backlog(ctx)
				return n == 1, err
			})
			if err != nil {
				t.Errorf("the first batch was not settled while the second applied: %v", err)
				return
			}
			w, ok, err := repo.Get(ctx, int64(1))
			if err != nil || !ok {
				t.Errorf("Get between the first batch's settle and v2's commit: %v, %v", ok, err)
				return
			}
			window.Store(w.Name)
		},
	}
	drainHooked(t, f, hooks)
	if !overlapped.Load() {
		t.Fatal("the first batch was settled before the second read its rows' state: the test did not test the overlap")
	}
	got, _ := window.Load().(string)
	if control {
		if got != "v1" {
			t.Fatalf("control: a reader got %q between the clear of any write and v2's commit, want v1 from Postgres", got)
		}
		return
	}
	if got != "v2" {
		t.Fatalf("a reader got %q between the first batch's settle and v2's commit, want v2 (acknowledged, pending)", got)
	}
	if w := e.rows(t)[1]; w.Name != "v2" {
		t.Fatalf("Postgres holds %q after the flush, want v2", w.Name)
	}
	if w, _, _ := repo.Get(ctx, int64(1)); w.Name != "v2" {
		t.Fatalf("Get = %+v after the flush, want v2", w)
	}
}
