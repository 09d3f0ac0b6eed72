package writeback_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writeback"
)

// TestBatchFailsWhileNextIsRead: the flusher reads the next batch while it applies one
// (Run's read-ahead). The batch being applied fails (as when Redis fails before its
// versions are read) after the next one was read. Nothing may be lost or applied out
// of order: the flusher drops the batch it read ahead and reads its own entries again,
// both batches' writes reach Postgres, each row's writes in the order they were made,
// and the journal drains. The control (testhooks.Flush.ForgetFailed) goes on with the
// batch read ahead: the failed batch's entries wait for a claim (ClaimAfter, an hour
// here) and their writes do not reach Postgres.
func TestBatchFailsWhileNextIsRead(t *testing.T) { fixture.OnBoth(t, testBatchFailsWhileNextIsRead) }

func testBatchFailsWhileNextIsRead(t *testing.T, top topology) {
	withControl(t, "reread", "control-forget-failed", func(t *testing.T, control bool) { batchFailsWhileNextIsRead(t, top, control) })
}

func batchFailsWhileNextIsRead(t *testing.T, top topology, control bool) {
	const rows, batch = 10, 5
	e := newEnv(t, top)
	ctx := ctxT(t)
	repo := e.widgets(t)
	saveTwice(t, ctx, repo, rows)
	f := e.flusher(t, writeback.FlusherOptions{BatchSize: batch, FlushInterval: 50 * time.Millisecond, ClaimAfter: time.Hour})
	var (
		reads     int
		mu        sync.Mutex
		readAhead = make(chan struct{})
		failOnce  sync.Once
	)
	hooks := &testhooks.Flush{
		ForgetFailed: control,
		AfterRead: func(int) {
			mu.Lock()
			defer mu.Unlock()
			if reads++; reads == 2 { // the first batch is in flush: this read is ahead
				close(readAhead)
			}
		},
		FailBatch: func() (err error) {
			failOnce.Do(func() {
				select {
				case <-readAhead:
				case <-time.After(10 * time.Second):
					t.Error("the flusher did not read ahead while it applied a batch")
				}
				err = errors.New("test: the batch fails")
			})
			return err
		},
	}
	drained := runUntilDrained(t, ctx, f, hooks)
	got := e.rows(t)
	if control {
		if drained == nil && len(got) == rows {
			t.Fatal("control: every write was applied although the failed batch was forgotten")
		}
		return
	}
	if drained != nil {
		t.Fatalf("journal not drained: %v (stats %+v)", drained, f.Stats())
	}
	checkSecondWrites(t, e, got, rows)
}

// TestSettleFails: the flusher settles a batch (clears its pending records and
// acknowledges its entries) while the next batch is applied, and the settling fails
// (as when Redis fails) once the next batch's transaction has begun. Nothing may be
// lost or applied out of order: the flusher reads its own entries again, those of the
// batch that failed to settle among them, each row ends with its latest write and the
// journal drains. The control (testhooks.Flush.ForgetFailed) goes on without reading
// its own entries again: the unsettled batch's entries wait for a claim (ClaimAfter,
// an hour here) and the journal does not drain.
func TestSettleFails(t *testing.T) { fixture.OnBoth(t, testSettleFails) }

func testSettleFails(t *testing.T, top topology) {
	withControl(t, "reread", "control-forget-failed", func(t *testing.T, control bool) { settleFails(t, top, control) })
}

func settleFails(t *testing.T, top topology, control bool) {
	const rows, batch = 10, 5
	e := newEnv(t, top)
	ctx := ctxT(t)
	repo := e.widgets(t)
	saveTwice(t, ctx, repo, rows)
	f := e.flusher(t, writeback.FlusherOptions{BatchSize: batch, FlushInterval: 50 * time.Millisecond, ClaimAfter: time.Hour})
	var (
		mu       sync.Mutex
		applies  int
		nextOn   = make(chan struct{})
		failOnce sync.Once
	)
	hooks := &testhooks.Flush{
		ForgetFailed: control,
		BeforeApply: func() {
			mu.Lock()
			defer mu.Unlock()
			if applies++; applies == 2 { // the first batch is being settled
				close(nextOn)
			}
		},
		FailSettle: func() (err error) {
			failOnce.Do(func() {
				select {
				case <-nextOn:
				case <-time.After(10 * time.Second):
					t.Error("the flusher did not apply a batch while it settled the one before")
				}
				err = errors.New("test: settling the batch fails")
			})
			return err
		},
	}
	drained := runUntilDrained(t, ctx, f, hooks)
	if control {
		if drained == nil {
			t.Fatal("control: the journal drained although the batch that failed to settle was forgotten")
		}
		return
	}
	if drained != nil {
		t.Fatalf("journal not drained: %v (stats %+v)", drained, f.Stats())
	}
	checkSecondWrites(t, e, e.rows(t), rows)
	for id := int64(1); id <= rows; id++ {
		if w, ok, err := repo.Get(ctx, id); err != nil || !ok || w.Name != fmt.Sprintf("%db", id) {
			t.Errorf("Get(%d) = %+v, %v, %v after the flush, want %db", id, w, ok, err, id)
		}
	}
}

// saveTwice writes each of rows rows twice, as "<id>a" then "<id>b", so that with
// batches smaller than rows a row's writes are in different batches.
func saveTwice(t *testing.T, ctx context.Context, repo *readthrough.Repository[Widget], rows int64) {
	t.Helper()
	for _, v := range []string{"a", "b"} {
		for id := int64(1); id <= rows; id++ {
			if err := repo.Save(ctx, &Widget{ID: id, Name: fmt.Sprintf("%d%s", id, v)}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// runUntilDrained runs f with hooks until the journal is empty, for at most ten
// seconds, stops it, and returns whether the journal drained (nil) or why not.
func runUntilDrained(t *testing.T, ctx context.Context, f *writeback.Flusher, hooks *testhooks.Flush) error {
	t.Helper()
	fctx, stop := context.WithCancel(testhooks.WithFlush(context.Background(), hooks))
	done := make(chan error, 1)
	go func() { done <- f.Run(fctx) }()
	drained := poll(10*time.Second, func() (bool, error) {
		n, err := f.Backlog(ctx)
		return n == 0, err
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return drained
}

// checkSecondWrites checks that each of rows rows holds its second write (saveTwice)
// in got, and was written with it last and once: a row's first write may be coalesced
// away; none is applied after the second.
func checkSecondWrites(t *testing.T, e *env, got map[int64]Widget, rows int64) {
	t.Helper()
	apps := e.applications(t)
	for id := int64(1); id <= rows; id++ {
		want := fmt.Sprintf("%db", id)
		if got[id].Name != want {
			t.Errorf("row %d holds %q, want %q", id, got[id].Name, want)
		}
		a := apps[id]
		if len(a) == 0 || a[len(a)-1] != want || slices.Index(a, want) != len(a)-1 {
			t.Errorf("row %d written as %q, want its second write last and once", id, a)
		}
	}
}
