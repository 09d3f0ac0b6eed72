package invalidator_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/invalidator"
)

var servers integration.Shared

func TestMain(m *testing.M) { os.Exit(servers.Run(m)) }

// env is a widgets table, with an Invalidator under its prefix and a slot name of the
// test's own.
type env struct {
	*fixture.Table
	slot string
	inv  *invalidator.Invalidator
	// stop stops the stream start started.
	stop func()
}

// newEnv is an empty widgets table on the shared servers.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, servers.Postgres(t).NewDatabase(t), servers.Redis(t), 0)
}

// newEnvOn is a widgets table of rows 1..n named "v0" on a database and a Redis of the
// test's choosing.
func newEnvOn(t *testing.T, pg *integration.Database, rd *integration.Redis, n int) *env {
	t.Helper()
	e := &env{Table: fixture.New(t, pg, rd, n), slot: "slot_" + pg.Name}
	var err error
	if e.inv, err = invalidator.New(e.Redis, invalidator.Options{Prefix: e.Prefix}); err != nil {
		t.Fatal(err)
	}
	return e
}

// start runs the change stream into the invalidator until the test ends, and waits
// until it streams.
func (e *env) start(t *testing.T) *cdc.Stream {
	t.Helper()
	s, stop := runStream(t, e.PG.RoleURL, cdc.Options{
		Slot: e.slot, Publication: "pgcache", Tables: []string{"widgets"}, StatusInterval: 100 * time.Millisecond,
	}, e.inv)
	e.stop = stop
	return s
}

// runStream runs a stream into h until stop is called or the test ends, and waits until
// it streams.
func runStream(t *testing.T, connURL string, opts cdc.Options, h cdc.Handler) (s *cdc.Stream, stop func()) {
	t.Helper()
	s, err := cdc.NewStream(connURL, opts, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("stream: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	integration.Eventually(t, "stream connected", func() bool { return s.Stats().Connected })
	return s, stop
}

func (e *env) get(t *testing.T, id int64) (fixture.Widget, bool) {
	t.Helper()
	w, ok, err := e.Repo.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return w, ok
}

// TestRawSQLChanges: rows changed with raw SQL, outside the library, leave the cache.
func TestRawSQLChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'one'), (2, 'two'), (3, 'three')`)
	e.start(t)
	e.Fill(t, 1, 2, 3, 404, 300)

	e.Exec(t, `UPDATE widgets SET name = 'uno' WHERE id = 1`)
	integration.Eventually(t, "updated row invalidated", func() bool { return !e.Cached(t, 1) })
	if w, _ := e.get(t, 1); w.Name != "uno" {
		t.Fatalf("after UPDATE, Get = %+v", w)
	}

	e.Exec(t, `DELETE FROM widgets WHERE id = 2`)
	integration.Eventually(t, "deleted row invalidated", func() bool { return !e.Cached(t, 2) })
	if _, ok := e.get(t, 2); ok {
		t.Fatal("after DELETE, Get still finds the row")
	}

	e.Exec(t, `INSERT INTO widgets (id, name) VALUES (404, 'found')`)
	integration.Eventually(t, "negative entry of an inserted row cleared", func() bool { return !e.Cached(t, 404) })
	if w, ok := e.get(t, 404); !ok || w.Name != "found" {
		t.Fatalf("after INSERT, Get = %+v, %v", w, ok)
	}

	// A primary-key change: the old key and the new key (cached as absent) both go.
	e.Exec(t, `UPDATE widgets SET id = 300 WHERE id = 3`)
	integration.Eventually(t, "old and new keys invalidated", func() bool { return !e.Cached(t, 3) && !e.Cached(t, 300) })
	if _, ok := e.get(t, 3); ok {
		t.Fatal("after the key change, the old id is still found")
	}
	if w, ok := e.get(t, 300); !ok || w.Name != "three" {
		t.Fatalf("after the key change, Get(300) = %+v, %v", w, ok)
	}

	e.Fill(t, 1, 404, 300)
	e.Exec(t, `TRUNCATE widgets`)
	integration.Eventually(t, "truncated table invalidated", func() bool { return !e.Cached(t, 1) && !e.Cached(t, 404) && !e.Cached(t, 300) })
}

// TestGapFlushesTable: rows cached before the worker's slot existed may have changed
// unseen; a new slot invalidates the whole table before streaming.
func TestGapFlushesTable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'one'), (2, 'two')`)
	e.Fill(t, 1, 2)
	e.Exec(t, `UPDATE widgets SET name = 'changed while no worker ran' WHERE id = 1`)
	e.start(t)
	if e.Cached(t, 1) || e.Cached(t, 2) {
		t.Fatal("rows cached before the slot existed survived the gap")
	}
	if s := e.inv.Stats(); s.TablesFlushed != 1 {
		t.Fatalf("stats %+v, want one table flushed", s)
	}
	if w, _ := e.get(t, 1); w.Name != "changed while no worker ran" {
		t.Fatalf("after the gap Get = %+v", w)
	}
}

// holdFirst is the invalidator, except that its first batch waits until the stream
// has received want transactions, so that the next batch holds the rest of them.
type holdFirst struct {
	*invalidator.Invalidator
	want   int
	stream atomic.Pointer[cdc.Stream]

	mu      sync.Mutex
	batches []int // transactions per batch
}

func (h *holdFirst) HandleBatch(ctx context.Context, txs []*cdc.Tx) error {
	h.mu.Lock()
	first := len(h.batches) == 0
	h.batches = append(h.batches, len(txs))
	h.mu.Unlock()
	for first && ctx.Err() == nil {
		if s := h.stream.Load(); s != nil && s.Stats().Pending >= h.want {
			break
		}
		time.Sleep(time.Millisecond)
	}
	return h.Invalidator.HandleBatch(ctx, txs)
}

// TestBacklogInBatches: transactions committed while no worker ran are handled in
// batches on its return, every changed row's key deleted, and a row changed by several
// transactions of a batch deleted once.
func TestBacklogInBatches(t *testing.T) {
	t.Parallel()
	const txs = 40
	e := newEnv(t)
	e.Exec(t, `INSERT INTO widgets (id, name) SELECT g, 'v0' FROM generate_series(1, 4) g`)
	opts := cdc.Options{Slot: e.slot, Publication: "pgcache", Tables: []string{"widgets"}, StatusInterval: 100 * time.Millisecond}
	_, stop := runStream(t, e.PG.RoleURL, opts, e.inv) // creates the slot; the backlog waits in it
	stop()

	e.Fill(t, 1, 2, 3, 4)
	for i := range txs {
		e.Exec(t, fmt.Sprintf(`UPDATE widgets SET name = 'v%d' WHERE id = %d`, i+1, i%4+1))
	}
	h := &holdFirst{Invalidator: e.inv, want: txs}
	s, _ := runStream(t, e.PG.RoleURL, opts, h)
	h.stream.Store(s)
	integration.Eventually(t, "backlog handled", func() bool { return e.inv.Stats().Transactions >= txs })

	for id := int64(1); id <= 4; id++ {
		if e.Cached(t, id) {
			t.Errorf("row %d still cached", id)
		}
		if w, _ := e.get(t, id); w.Name != fmt.Sprint("v", txs-4+int(id)) {
			t.Errorf("Get(%d) = %+v, want the last update", id, w)
		}
	}
	h.mu.Lock()
	batches := slices.Clone(h.batches)
	h.mu.Unlock()
	if slices.Max(batches) < 2 {
		t.Fatalf("batches of %v transactions, want the backlog handled several at a time", batches)
	}
	if st := e.inv.Stats(); st.Transactions != txs || st.Changes != txs || st.KeysDeleted >= txs {
		t.Fatalf("stats %+v: want %d transactions and changes, and fewer keys deleted (each row once per batch)", st, txs)
	}
}
