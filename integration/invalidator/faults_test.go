package invalidator_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/invalidator"
)

// faultOptions are stream options for fault tests: frequent status updates and short
// reconnection backoff.
func faultOptions(slot string) cdc.Options {
	return cdc.Options{
		Slot: slot, Publication: "pgcache", Tables: []string{"widgets"},
		StatusInterval: 100 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
	}
}

// observer is the Invalidator as a cdc.Handler, recording the transactions it was
// given and how often it failed.
type observer struct {
	*invalidator.Invalidator

	mu       sync.Mutex
	given    map[uint32]given
	failures int
}

type given struct {
	commit cdc.LSN
	at     time.Time // first given
}

func newObserver(inv *invalidator.Invalidator) *observer {
	return &observer{Invalidator: inv, given: make(map[uint32]given)}
}

func (o *observer) Handle(ctx context.Context, tx *cdc.Tx) error {
	return o.HandleBatch(ctx, []*cdc.Tx{tx})
}

func (o *observer) HandleBatch(ctx context.Context, txs []*cdc.Tx) error {
	o.mu.Lock()
	for _, tx := range txs {
		if _, ok := o.given[tx.XID]; !ok {
			o.given[tx.XID] = given{commit: tx.CommitLSN, at: time.Now()}
		}
	}
	o.mu.Unlock()
	err := o.Invalidator.HandleBatch(ctx, txs)
	if err != nil {
		o.mu.Lock()
		o.failures++
		o.mu.Unlock()
	}
	return err
}

// firstSince returns the commit position of the earliest transaction first given to
// the invalidator after t.
func (o *observer) firstSince(t time.Time) (cdc.LSN, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var first cdc.LSN
	for _, g := range o.given {
		if g.at.After(t) && (first == 0 || g.commit < first) {
			first = g.commit
		}
	}
	return first, first != 0
}

// slotHolds reports whether the slot's confirmed position, as Postgres has it, is at
// or before lsn, so that the transaction committed at lsn will be delivered again.
func slotHolds(t *testing.T, admin *gorm.DB, slot string, lsn cdc.LSN) (bool, string) {
	t.Helper()
	pos, ok, err := fixture.SlotConfirmed(t.Context(), admin, slot)
	if err != nil {
		t.Fatal(err)
	}
	return ok && pos <= lsn, pos.String()
}

// TestRedisPaused freezes Redis for 10s while rows change. The invalidator cannot
// delete their keys, so the slot's confirmed position, as Postgres has it, must stay at
// or before the first of those commits the whole time; once Redis answers again the worker catches up and
// no changed row is left cached.
func TestRedisPaused(t *testing.T) {
	t.Parallel()
	const (
		rows    = 20
		barrier = rows + 1
		pause   = 10 * time.Second
	)
	rd := integration.NewRedis(t, integration.RedisOptions{})
	pg := servers.Postgres(t).NewDatabase(t)
	e := newEnvOn(t, pg, rd, rows+1)
	admin := fixture.Open(t, pg.URL)
	obs := newObserver(e.inv)
	runStream(t, e.PG.RoleURL, faultOptions(e.slot), obs)
	for id := int64(1); id <= rows; id++ {
		e.Fill(t, id)
	}

	ctx := context.Background()
	if err := rd.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	paused := true
	t.Cleanup(func() {
		if paused {
			_ = rd.Unpause(context.Background())
		}
	})
	pausedAt := time.Now()
	for id := 1; id <= rows; id++ {
		e.Exec(t, fmt.Sprintf(`UPDATE widgets SET name = 'changed while Redis was paused %d' WHERE id = %d`, id, id))
	}
	var (
		checks int
		first  cdc.LSN
	)
	// No deletion can succeed while Redis is frozen, so no transaction given to the
	// invalidator since the pause may be confirmed.
	for time.Since(pausedAt) < pause {
		if lsn, ok := obs.firstSince(pausedAt); ok {
			first = lsn
			if holds, confirmed := slotHolds(t, admin, e.slot, lsn); !holds {
				t.Fatalf("with Redis paused, the slot confirmed %s, past the commit at %s whose keys cannot have been deleted", confirmed, lsn)
			}
			checks++
		}
		time.Sleep(50 * time.Millisecond) // sampling the slot, not ordering
	}
	if checks < 10 {
		t.Fatalf("only %d checks of the slot while a transaction was pending; the changes did not reach the invalidator", checks)
	}
	if err := rd.Unpause(ctx); err != nil {
		t.Fatal(err)
	}
	paused = false

	e.Barrier(t, barrier)
	for id := int64(1); id <= rows; id++ {
		if e.Cached(t, id) {
			t.Errorf("row %d changed while Redis was paused is still cached after catch-up", id)
		}
	}
	if stale, _ := e.Stale(t, rows); len(stale) > 0 {
		t.Errorf("stale rows:\n%s", strings.Join(stale, "\n"))
	}
	integration.Eventually(t, "the slot to confirm the caught-up changes", func() bool {
		holds, _ := slotHolds(t, admin, e.slot, first)
		return !holds
	})
	obs.mu.Lock()
	failures := obs.failures
	obs.mu.Unlock()
	st := e.inv.Stats()
	t.Logf("%d slot checks while paused; Handle failed %d times, %d failed Redis attempts", checks, failures, st.Errors)
	if failures == 0 || st.Errors == 0 {
		t.Errorf("Handle failed %d times and Redis %d times while Redis was paused; want both > 0", failures, st.Errors)
	}
}

// TestPostgresRestarted restarts Postgres while rows are updated with raw SQL and read
// through the cache: the worker reconnects, resumes from its slot, and once it has
// caught up no cached row differs from the database.
func TestPostgresRestarted(t *testing.T) {
	t.Parallel()
	const (
		rows    = 300
		barrier = rows + 1
	)
	srv := integration.NewPostgres(t, integration.PostgresOptions{})
	pg := srv.NewDatabase(t)
	e := newEnvOn(t, pg, servers.Redis(t), rows+1)
	w, err := invalidator.NewWorker(e.Redis, invalidator.WorkerOptions{
		Postgres:    pg.RoleURL,
		Stream:      faultOptions(e.slot),
		Invalidator: invalidator.Options{Prefix: e.Prefix},
	})
	if err != nil {
		t.Fatal(err)
	}
	fixture.RunWorker(t, context.Background(), w)

	load, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var (
		wg              sync.WaitGroup
		commits, failed atomic.Int64
	)
	wg.Go(func() {
		for n := 0; load.Err() == nil; n++ {
			err := e.DB.Exec(`UPDATE widgets SET name = ? WHERE id = ?`, fmt.Sprint("v", n), 1+rand.N(rows)).Error
			if err != nil {
				failed.Add(1) // while Postgres restarts
				time.Sleep(10 * time.Millisecond)
				continue
			}
			commits.Add(1)
		}
	})
	wg.Go(func() {
		ids := make([]any, 20)
		for load.Err() == nil {
			for i := range ids {
				ids[i] = int64(1 + rand.N(rows))
			}
			if _, err := e.Repo.GetMany(load, ids...); err != nil {
				time.Sleep(10 * time.Millisecond) // while Postgres restarts
			}
		}
	})

	integration.Eventually(t, "commits before the restart", func() bool { return commits.Load() >= 100 })
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer rcancel()
	if err := srv.Restart(rctx); err != nil {
		t.Fatal(err)
	}
	atRestart := commits.Load()
	integration.Eventually(t, "commits after the restart", func() bool { return commits.Load() >= atRestart+200 })
	integration.Eventually(t, "the worker to stream again", w.Ready)
	stopLoad()
	wg.Wait()

	e.Barrier(t, barrier)
	stale, cached := e.Stale(t, rows)
	t.Logf("%d commits (%d failed during the restart); %d of %d rows cached at the end; %d reconnects",
		commits.Load(), failed.Load(), cached, rows, w.StreamStats().Reconnects)
	if len(stale) > 0 {
		t.Errorf("%d stale rows after the restart:\n%s", len(stale), strings.Join(stale[:min(len(stale), 20)], "\n"))
	}
	if w.StreamStats().Reconnects == 0 {
		t.Error("the worker did not reconnect after Postgres restarted")
	}
	if cached == 0 {
		t.Error("no row cached at the end; the staleness check checked nothing")
	}
}

// TestLargeTransaction: a transaction that changes more rows than one Redis round trip
// can delete within RedisTimeout is invalidated all the same, in batches each bounded
// by the timeout, rather than retried whole until it fails for good.
func TestLargeTransaction(t *testing.T) {
	t.Parallel()
	const rows = 30000
	e := newEnvOn(t, servers.Postgres(t).NewDatabase(t), servers.Redis(t), rows)
	inv, err := invalidator.New(e.Redis, invalidator.Options{Prefix: e.Prefix, RedisTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runStream(t, e.PG.RoleURL, faultOptions(e.slot), inv)
	e.Fill(t, 1, rows/2, rows)
	e.Exec(t, `UPDATE widgets SET name = 'changed'`)
	integration.Eventually(t, "the large transaction to be handled", func() bool { return inv.Stats().Transactions == 1 })
	if e.Cached(t, 1) || e.Cached(t, rows/2) || e.Cached(t, rows) {
		t.Error("rows changed by the large transaction are still cached after it was handled")
	}
	if st := inv.Stats(); st.Changes != rows || st.KeysDeleted != rows {
		t.Errorf("stats %+v, want %d changes and keys deleted", st, rows)
	}
}
