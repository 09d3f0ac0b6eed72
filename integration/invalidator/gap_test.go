package invalidator_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/invalidator"
)

// dyingGap is the invalidator, except that its process dies inside Gap: Gap never
// returns.
type dyingGap struct {
	*invalidator.Invalidator
	once    sync.Once
	entered chan struct{}
}

func (d *dyingGap) Gap(ctx context.Context, tables []string, reason string) error {
	d.once.Do(func() { close(d.entered) })
	<-ctx.Done()
	return ctx.Err()
}

// TestGapSurvivesCrash: a worker that dies after creating its slot and before its Gap
// flushed the tables leaves a gap record, and the next worker, finding the slot,
// flushes the tables before it streams (contract item 7).
func TestGapSurvivesCrash(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'one'), (2, 'two')`)
	e.Fill(t, 1, 2)
	e.Exec(t, `UPDATE widgets SET name = 'changed while no worker ran' WHERE id = 1`)

	dying := &dyingGap{Invalidator: e.inv, entered: make(chan struct{})}
	s, err := cdc.NewStream(e.PG.RoleURL, cdc.Options{Slot: e.slot, Publication: "pgcache", Tables: []string{"widgets"}}, dying)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-dying.entered:
	case <-time.After(time.Minute):
		t.Fatal("Gap was not called")
	}
	var slots int
	if err := e.DB.Raw(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = ?`, e.slot).Scan(&slots).Error; err != nil || slots != 1 {
		t.Fatalf("slot %s: %d (%v), want it created before Gap", e.slot, slots, err)
	}
	cancel() // the process dies
	<-done
	if !e.Cached(t, 1) {
		t.Fatal("the dying worker flushed the table after all; the test shows nothing")
	}

	inv, err := invalidator.New(e.Redis, invalidator.Options{Prefix: e.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	e.inv = inv
	e.start(t)
	if e.Cached(t, 1) || e.Cached(t, 2) {
		t.Fatal("the next worker found the slot and streamed without flushing the table")
	}
	if s := inv.Stats(); s.TablesFlushed != 1 {
		t.Fatalf("stats %+v, want one table flushed", s)
	}
	if w, _ := e.get(t, 1); w.Name != "changed while no worker ran" {
		t.Fatalf("after the gap Get = %+v", w)
	}
	if tables, err := inv.RecordedGap(context.Background()); err != nil || len(tables) != 0 {
		t.Fatalf("gap records after the flush: %v, %v; want none", tables, err)
	}
}

// TestGapClearsItsTables: Gap clears the records of the tables it flushed, and only
// theirs.
func TestGapClearsItsTables(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if err := e.inv.RecordGap(ctx, []string{"widgets", "gadgets"}, cdc.GapSlotCreated); err != nil {
		t.Fatal(err)
	}
	if err := e.inv.Gap(ctx, []string{"widgets"}, cdc.GapRecorded); err != nil {
		t.Fatal(err)
	}
	if tables, err := e.inv.RecordedGap(ctx); err != nil || len(tables) != 1 || tables[0] != "gadgets" {
		t.Fatalf("records after flushing widgets: %v, %v; want [gadgets]", tables, err)
	}
}
