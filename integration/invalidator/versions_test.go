package invalidator_test

import (
	"testing"
	"time"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/readthrough"
)

// TestVersionAnnouncedLater: a schema version first announced after the worker has read
// the registry (a newer application deployed while the worker runs) is invalidated too.
// The worker deletes under the versions it knew while it reads the registry again, then
// under the versions that read added.
func TestVersionAnnouncedLater(t *testing.T) {
	t.Parallel()
	e := newEnvOn(t, servers.Postgres(t).NewDatabase(t), servers.Redis(t), 2)
	e.start(t)
	e.Fill(t, 1)
	e.Exec(t, `UPDATE widgets SET name = 'uno' WHERE id = 1`)
	integration.Eventually(t, "row 1 invalidated under the first version", func() bool { return !e.Cached(t, 1) })

	// Another application caches the table under a version of its own.
	cache, err := readthrough.New(e.DB, e.Redis, readthrough.Options{Prefix: e.Prefix, RedisTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := readthrough.Register[fixture.Widget](cache, readthrough.ModelOptions{Version: "v2"})
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := e.Repo.Key(int64(2))
	k2, _ := v2.Key(int64(2))
	if k1 == k2 {
		t.Fatalf("both versions give key %s", k1)
	}
	e.Fill(t, 2)
	if _, _, err := v2.Get(t.Context(), int64(2)); err != nil {
		t.Fatal(err)
	}
	if e.Redis.Exists(t.Context(), k2).Val() != 1 {
		t.Fatal("row 2 not cached under the second version")
	}
	e.Exec(t, `UPDATE widgets SET name = 'dos' WHERE id = 2`)
	integration.Eventually(t, "row 2 invalidated under both versions", func() bool {
		return e.Redis.Exists(t.Context(), k1, k2).Val() == 0
	})
	if w, _, err := v2.Get(t.Context(), int64(2)); err != nil || w.Name != "dos" {
		t.Fatalf("Get under the second version = %+v, %v", w, err)
	}
}

// TestRegistryLost: when the version registry loses its entries (a Redis restart
// without persistence, a Cluster node replaced) while rows stay cached under a version
// it listed, the worker keeps invalidating under that version.
func TestRegistryLost(t *testing.T) {
	t.Parallel()
	e := newEnvOn(t, servers.Postgres(t).NewDatabase(t), servers.Redis(t), 3)
	e.start(t)
	e.Fill(t, 1, 2)
	e.Barrier(t, 3) // the worker has read the registry, which lists the version
	if err := e.Redis.Del(t.Context(), e.Prefix+":models").Err(); err != nil {
		t.Fatal(err)
	}
	// A change the worker handles after reading the now empty registry.
	e.Exec(t, `UPDATE widgets SET name = 'after the loss' WHERE id = 1`)
	integration.Eventually(t, "row 1 invalidated", func() bool { return !e.Cached(t, 1) })
	// The next change comes after that read: only the versions the worker kept cover it.
	e.Exec(t, `UPDATE widgets SET name = 'later' WHERE id = 2`)
	integration.Eventually(t, "row 2 invalidated under the lost version", func() bool { return !e.Cached(t, 2) })
}
