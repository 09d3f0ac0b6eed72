package invalidator_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/readthrough"
)

// TestFailoverLostDeletion makes a Sentinel failover lose a deletion the worker had
// acknowledged: the replica is cut off while the worker deletes a changed row's key on
// the master, and the master is killed before the replica could copy the deletion, so
// the promoted replica still holds the old row. The worker notices the new master (its
// run id) and flushes the table, and the new row is read.
//
// The control caches the same row under a second prefix whose worker does not check
// the servers (ServerCheckInterval < 0): after the failover its old row stays cached
// for good, which is what the check prevents.
func TestFailoverLostDeletion(t *testing.T) {
	t.Parallel()
	sen := integration.NewSentinel(t)
	pg := servers.Postgres(t).NewDatabase(t)
	db := fixture.Open(t, pg.RoleURL)
	if err := db.AutoMigrate(&fixture.Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(`INSERT INTO widgets VALUES (1, 'old')`).Error; err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	rdb := sen.Client(t)
	type side struct {
		name   string
		check  time.Duration
		repo   *readthrough.Repository[fixture.Widget]
		key    string
		worker *invalidator.Worker
	}
	sides := []*side{{name: "checked", check: 100 * time.Millisecond}, {name: "control", check: -1}}
	for _, s := range sides {
		prefix := "f" + s.name
		cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: prefix, RedisTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if s.repo, err = readthrough.Register[fixture.Widget](cache, readthrough.ModelOptions{}); err != nil {
			t.Fatal(err)
		}
		s.key, _ = s.repo.Key(int64(1))
		s.worker, err = invalidator.NewWorker(rdb, invalidator.WorkerOptions{
			Postgres: pg.RoleURL,
			Stream: cdc.Options{Slot: "s_" + pg.Name + "_" + s.name, Publication: "pgcache_" + s.name, Tables: []string{"widgets"},
				StatusInterval: 100 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond},
			Invalidator:         invalidator.Options{Prefix: prefix, RetryFor: 30 * time.Second},
			ServerCheckInterval: s.check,
		})
		if err != nil {
			t.Fatal(err)
		}
		fixture.RunWorker(t, ctx, s.worker)
	}

	// Both rows cached, on the master and on the replica.
	replica := redis.NewClient(&redis.Options{Addr: sen.Replica.Addr()})
	t.Cleanup(func() { _ = replica.Close() })
	for _, s := range sides {
		if w, ok, err := s.repo.Get(ctx, int64(1)); err != nil || !ok || w.Name != "old" {
			t.Fatalf("%s: %+v %t %v", s.name, w, ok, err)
		}
		integration.Eventually(t, s.name+": the cached row on the replica", func() bool { return replica.Exists(ctx, s.key).Val() == 1 })
	}

	// The replica stops copying (paused, its link dropped by the master, so that
	// nothing waits in its socket buffers); the worker deletes the changed row's keys
	// on the master.
	if err := sen.Replica.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	master := redis.NewClient(&redis.Options{Addr: sen.Master.Addr()})
	t.Cleanup(func() { _ = master.Close() })
	if err := master.ClientKillByFilter(ctx, "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	unpaused := false
	t.Cleanup(func() {
		if !unpaused {
			_ = sen.Replica.Unpause(context.Background())
		}
	})
	if err := db.Exec(`UPDATE widgets SET name = 'new' WHERE id = 1`).Error; err != nil {
		t.Fatal(err)
	}
	for _, s := range sides {
		integration.Eventually(t, s.name+": the key deleted on the master", func() bool { return rdb.Exists(ctx, s.key).Val() == 0 })
	}
	// The master dies with the deletions; the replica, which never got them, is promoted.
	if err := sen.Master.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sen.Replica.Unpause(ctx); err != nil {
		t.Fatal(err)
	}
	unpaused = true
	if err := sen.WaitPromoted(ctx); err != nil {
		t.Fatal(err)
	}
	if replica.Exists(ctx, sides[1].key).Val() != 1 {
		t.Fatal("the promoted replica lacks the control's old row: the failover lost no deletion, so this test shows nothing")
	}

	checked, control := sides[0], sides[1]
	integration.Eventually(t, "the checked worker to flush the table after the failover", func() bool {
		w, ok, err := checked.repo.Get(ctx, int64(1))
		return err == nil && ok && w.Name == "new"
	})
	if n := checked.worker.Stats().ServerChanges; n != 1 {
		t.Errorf("ServerChanges = %d, want 1", n)
	}
	if w, ok, err := control.repo.Get(ctx, int64(1)); err != nil || !ok || w.Name != "old" {
		t.Fatalf("control: %+v %t %v; want the old row, kept by the new master, which nothing deletes without the check", w, ok, err)
	}
}
