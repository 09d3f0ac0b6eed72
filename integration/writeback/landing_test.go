package writeback_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/writeback"
)

// TestEntryBeforeItsWrite: a flusher reads a write's journal entry before the write
// landed in the row's slot (on a Cluster a write is two steps; the hook makes it two
// steps on a single Redis too) and sorts it out several times meanwhile. It must
// neither apply it (nothing of the write is in Redis yet) nor drop it: once the write
// lands, the flusher applies it. The control (testhooks.Flush.AssumeLanded) takes an
// entry whose row's pending record does not hold it for superseded, as the flusher
// did before writes had two steps: it drops the entry, and the acknowledged write
// never reaches Postgres.
func TestEntryBeforeItsWrite(t *testing.T) { fixture.OnBoth(t, testEntryBeforeItsWrite) }

func testEntryBeforeItsWrite(t *testing.T, top topology) {
	withControl(t, "held", "control-assume-landed", func(t *testing.T, control bool) {
		e := newEnv(t, top)
		ctx := ctxT(t)
		repo := e.widgets(t)
		f := e.flusher(t, writeback.FlusherOptions{})

		var sorted atomic.Int64 // batches sorted out since the entry was read
		var read atomic.Bool
		fh := &testhooks.Flush{
			AssumeLanded: control,
			AfterRead:    func(int) { read.Store(true) },
			AfterSort: func() {
				if read.Load() {
					sorted.Add(1)
				}
			},
		}
		fctx, stop := context.WithCancel(testhooks.WithFlush(context.Background(), fh))
		done := make(chan error, 1)
		go func() { done <- f.Run(fctx) }()
		defer func() {
			stop()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()

		wh := &testhooks.WriteBack{BeforeLanding: func(string) {
			// The entry is in the journal; the flusher reads it and sorts it out
			// three times before the write lands (under the control, once: it
			// drops the entry).
			want := map[bool]int64{false: 3, true: 1}[control]
			if err := poll(20*time.Second, func() (bool, error) { return sorted.Load() >= want, nil }); err != nil {
				t.Errorf("the flusher did not read the entry: %v", err)
			}
		}}
		if err := repo.Save(testhooks.WithWriteBack(ctx, wh), &Widget{ID: 1, Name: "landed"}); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := repo.Get(ctx, int64(1)); err != nil || !ok || got.Name != "landed" {
			t.Fatalf("Get after Save = %+v, %v, %v; want the write", got, ok, err)
		}
		err := poll(5*time.Second, func() (bool, error) { return e.rows(t)[1].Name == "landed", nil })
		if control {
			if err == nil {
				t.Fatal("control: the write reached Postgres although the flusher took its entry for superseded")
			}
			if n, _ := f.Backlog(ctx); n != 0 {
				t.Fatalf("control: backlog %d, want the entry dropped", n)
			}
			return
		}
		if err != nil {
			t.Fatalf("the write never reached Postgres: %v (stats %+v)", err, f.Stats())
		}
	})
}

// TestEntryNeverLands: a write whose process stalls between its journal entry and its
// landing for longer than LandingTimeout. The flusher gives the entry up and fences
// it; the late landing is refused with ErrLate, so the Save fails and nothing of it is
// visible: the row keeps its previous value in Redis and in Postgres. A write after
// it lands and is applied as usual.
func TestEntryNeverLands(t *testing.T) { fixture.OnBoth(t, testEntryNeverLands) }

func testEntryNeverLands(t *testing.T, top topology) {
	t.Parallel()
	e := newEnv(t, top)
	ctx := ctxT(t)
	repo := e.widgets(t)
	if err := repo.Save(ctx, &Widget{ID: 1, Name: "before"}); err != nil {
		t.Fatal(err)
	}
	f := e.flusher(t, writeback.FlusherOptions{LandingTimeout: 200 * time.Millisecond})
	drain(t, f)

	fctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(fctx) }()
	wh := &testhooks.WriteBack{BeforeLanding: func(string) {
		if err := poll(20*time.Second, func() (bool, error) { return f.Stats().Abandoned >= 1, nil }); err != nil {
			t.Errorf("the flusher did not give the entry up: %v", err)
		}
	}}
	err := repo.Save(testhooks.WithWriteBack(ctx, wh), &Widget{ID: 1, Name: "late"})
	if !errors.Is(err, writeback.ErrLate) {
		t.Fatalf("Save landing after the fence = %v, want ErrLate", err)
	}
	if got, ok, err := repo.Get(ctx, int64(1)); err != nil || !ok || got.Name != "before" {
		t.Fatalf("Get after the refused Save = %+v, %v, %v; want the previous value", got, ok, err)
	}
	if err := repo.Save(ctx, &Widget{ID: 1, Name: "after"}); err != nil {
		t.Fatal(err)
	}
	if err := poll(20*time.Second, func() (bool, error) { return e.rows(t)[1].Name == "after", nil }); err != nil {
		t.Fatalf("the next write was not applied: %v (stats %+v)", err, f.Stats())
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for id, names := range e.applications(t) {
		for _, n := range names {
			if n == "late" {
				t.Errorf("row %d: the refused write was applied (%q)", id, names)
			}
		}
	}
}
