package invalidator_test

import (
	"context"
	"sync/atomic"
	"testing"

	"gorm.io/gorm"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/invalidator"
)

// TestCommitVisibleBeforeInvalidation: a commit is in WAL, and so streamed to the
// worker, before the committing backend leaves the ProcArray; until then new snapshots
// do not see it. A synchronous standby that never answers ('ghost') holds an UPDATE's
// backend in that window for as long as the test likes: the worker has the commit, and
// a read that misses loads the old row. The worker must not invalidate the row until
// the commit is visible, or that read's fill, which nothing fences any more, keeps the
// old row cached for its TTL.
//
// The control skips the stream's wait for visibility (testhooks.CDC.SkipVisibility), as
// the stream did before, and must end with the old row cached, else the test cannot
// fail.
func TestCommitVisibleBeforeInvalidation(t *testing.T) {
	t.Parallel()
	srv := integration.NewPostgres(t, integration.PostgresOptions{})
	// A Redis of its own too: the widgets registry of its prefixes would look, to
	// tests of a lost registry on the shared one, like an application's elsewhere.
	rd := integration.NewRedis(t, integration.RedisOptions{})
	// Both runs change the server's settings, so they run one after the other.
	for _, run := range []struct {
		name string
		skip bool
	}{{"control", true}, {"waits", false}} {
		t.Run(run.name, func(t *testing.T) {
			stale := commitBeforeVisible(t, srv, rd, run.skip)
			switch {
			case run.skip && !stale:
				t.Error("control: with the wait for visibility skipped the cache followed Postgres all the same; the test cannot fail")
			case !run.skip && stale:
				t.Error(`the cache kept "v0" after the commit of "v1" became visible: the worker invalidated the row before the commit was visible, and a read filled the old row`)
			}
		})
	}
}

// commitBeforeVisible runs the scenario on a database of its own on srv and reports
// whether row 1 was left cached as "v0", its value before a commit the worker has handled.
func commitBeforeVisible(t *testing.T, srv *integration.Postgres, rd *integration.Redis, skipVisibility bool) (stale bool) {
	pg := srv.NewDatabase(t)
	e := newEnvOn(t, pg, rd, 2)
	admin := fixture.Open(t, pg.URL)
	e.Exec(t, `CREATE TABLE probe (id serial PRIMARY KEY)`) // not published

	var invisible atomic.Bool
	hooks := &testhooks.CDC{SkipVisibility: skipVisibility, Invisible: func(uint32) { invisible.Store(true) }}
	w, err := invalidator.NewWorker(e.Redis, invalidator.WorkerOptions{
		Postgres:    pg.RoleURL,
		Stream:      faultOptions(e.slot),
		Invalidator: invalidator.Options{Prefix: e.Prefix},
	})
	if err != nil {
		t.Fatal(err)
	}
	fixture.RunWorker(t, testhooks.WithCDC(context.Background(), hooks), w)
	e.Fill(t, 1)

	// From here every commit waits for a standby that does not exist. Registered after
	// the database's cleanup, the release runs before it (DROP DATABASE would wait too).
	syncStandby(t, admin, "ghost")
	released := false
	release := func() {
		if !released {
			released = true
			syncStandby(t, admin, "")
		}
	}
	t.Cleanup(release)
	// The checkpointer applies the setting when it has read it: commits of a table the
	// worker does not stream show when it has.
	var stopProbe atomic.Bool
	probed := make(chan error, 1)
	go func() {
		for !stopProbe.Load() {
			if err := e.DB.Exec(`INSERT INTO probe DEFAULT VALUES`).Error; err != nil {
				probed <- err
				return
			}
		}
		probed <- nil
	}()
	integration.Eventually(t, "a commit to wait for the synchronous standby", func() bool { return syncWaiters(t, admin) > 0 })

	before := w.StreamStats().Transactions
	wrote := make(chan error, 1)
	go func() { wrote <- e.DB.Exec(`UPDATE widgets SET name = 'v1' WHERE id = 1`).Error }()
	// The worker has the commit: either it deleted the row's key (the control) or it
	// found the commit invisible and waits.
	integration.Eventually(t, "the worker to receive the commit", func() bool {
		return invisible.Load() || !e.Cached(t, 1) && w.StreamStats().Transactions > before
	})
	select {
	case err := <-wrote:
		t.Fatalf("the UPDATE returned (%v) before the synchronous standby was given up; the test shows nothing", err)
	default:
	}

	// A read now loads the row as new snapshots see it: the commit is not visible yet.
	got, ok, err := e.Repo.Get(context.Background(), int64(1))
	if err != nil || !ok || got.Name != "v0" {
		t.Fatalf(`read during the commit: %+v, %v, %v; want "v0", the commit not yet visible`, got, ok, err)
	}

	stopProbe.Store(true)
	release()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if err := <-probed; err != nil {
		t.Fatal(err)
	}
	// Transactions are invalidated in commit order: once the barrier's key is gone, the
	// worker is done with the UPDATE.
	e.Barrier(t, 2)
	if skipVisibility && invisible.Load() {
		t.Error("the stream waited for visibility with the wait skipped")
	}
	if !skipVisibility && !invisible.Load() {
		t.Error("the stream never found the commit invisible; the test did not test the wait")
	}
	row, ok, cached, err := e.Repo.Peek(context.Background(), int64(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("row 1 in Redis: %+v (row %v, cached %v); %d transactions handled", row, ok, cached, w.StreamStats().Transactions)
	return cached && ok && row.Name == "v0"
}

// syncStandby sets synchronous_standby_names for the server, "" to reset it.
func syncStandby(t *testing.T, admin *gorm.DB, name string) {
	t.Helper()
	stmt := `ALTER SYSTEM RESET synchronous_standby_names`
	if name != "" {
		stmt = `ALTER SYSTEM SET synchronous_standby_names = '` + name + `'`
	}
	for _, q := range []string{stmt, `SELECT pg_reload_conf()`} {
		if err := admin.Exec(q).Error; err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// syncWaiters counts the backends waiting for a synchronous standby.
func syncWaiters(t *testing.T, admin *gorm.DB) int {
	t.Helper()
	var n int
	if err := admin.Raw(`SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'`).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}
