package invalidator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/readthrough"
)

// Three tables of one database, split between two workers.
type (
	Alpha struct {
		ID   int64 `gorm:"primaryKey"`
		Name string
	}
	Beta  Alpha
	Gamma Alpha
)

func (Alpha) TableName() string { return "alphas" }
func (Beta) TableName() string  { return "betas" }
func (Gamma) TableName() string { return "gammas" }

// TestWorkersSplitTables runs two workers, each on a slot and a publication of its
// own over a disjoint set of tables (alphas and betas; gammas), as a deployment that
// outgrows one slot does. Raw SQL changes to every table, one transaction touching
// tables of both workers among them, are invalidated. The control stops the gammas'
// worker: a later change the other worker handled leaves the gamma row cached, so the
// test sees a table nobody streams; restarted on its slot, that worker catches up.
func TestWorkersSplitTables(t *testing.T) {
	t.Parallel()
	pg := servers.Postgres(t).NewDatabase(t)
	rd := servers.Redis(t)
	db := fixture.Open(t, pg.RoleURL)
	if err := db.AutoMigrate(&Alpha{}, &Beta{}, &Gamma{}); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"alphas", "betas", "gammas"} {
		if err := db.Exec(fmt.Sprintf(`INSERT INTO %s SELECT g, 'v0' FROM generate_series(1, 10) g`, table)).Error; err != nil {
			t.Fatal(err)
		}
	}
	rdb, prefix := rd.Client(t), rd.Prefix(t)
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: prefix, RedisTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	alphas := registerSplit[Alpha](t, cache)
	betas := registerSplit[Beta](t, cache)
	gammas := registerSplit[Gamma](t, cache)

	worker := func(name string, tables ...string) *invalidator.Worker {
		w, err := invalidator.NewWorker(rdb, invalidator.WorkerOptions{
			Postgres: pg.RoleURL,
			Stream: cdc.Options{Slot: "s_" + pg.Name + "_" + name, Publication: "pgcache_" + name, Tables: tables,
				StatusInterval: 100 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond},
			Invalidator: invalidator.Options{Prefix: prefix},
		})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	ctx := t.Context()
	fixture.RunWorker(t, ctx, worker("ab", "alphas", "betas"))
	gctx, stopGammas := context.WithCancel(ctx)
	gammaDone := make(chan error, 1)
	gw := worker("g", "gammas")
	go func() { gammaDone <- gw.Run(gctx) }()
	integration.Eventually(t, "the gammas' worker to be ready", gw.Ready)

	fill := func() {
		for id := int64(1); id <= 10; id++ {
			mustGet(t, alphas, id, "")
			mustGet(t, betas, id, "")
			mustGet(t, gammas, id, "")
		}
	}
	fill()
	exec := func(sql string) {
		t.Helper()
		if err := db.Exec(sql).Error; err != nil {
			t.Fatal(err)
		}
	}
	exec(`UPDATE alphas SET name = 'v1' WHERE id = 1`)
	exec(`UPDATE betas SET name = 'v1' WHERE id = 2`)
	exec(`UPDATE gammas SET name = 'v1' WHERE id = 3`)
	exec(`BEGIN; UPDATE alphas SET name = 'v2' WHERE id = 4; UPDATE gammas SET name = 'v2' WHERE id = 4; COMMIT`)
	integration.Eventually(t, "every changed row to be read new", func() bool {
		return get(t, alphas, 1) == "v1" && get(t, betas, 2) == "v1" && get(t, gammas, 3) == "v1" &&
			get(t, alphas, 4) == "v2" && get(t, gammas, 4) == "v2"
	})

	// Control: with the gammas' worker stopped, nobody streams gammas.
	stopGammas()
	if err := <-gammaDone; err != nil {
		t.Fatalf("gammas' worker: %v", err)
	}
	mustGet(t, gammas, 5, "v0")
	exec(`UPDATE gammas SET name = 'v3' WHERE id = 5`)
	exec(`UPDATE alphas SET name = 'v3' WHERE id = 5`) // committed after the gamma change
	mustGet(t, alphas, 5, "")
	integration.Eventually(t, "the alphas' worker to invalidate alpha 5", func() bool { return get(t, alphas, 5) == "v3" })
	if got := get(t, gammas, 5); got != "v0" {
		t.Fatalf("gamma 5 read %q with its worker stopped: the control expects the cached v0", got)
	}
	fixture.RunWorker(t, ctx, worker("g", "gammas"))
	integration.Eventually(t, "the restarted gammas' worker to catch up", func() bool { return get(t, gammas, 5) == "v3" })
}

func registerSplit[T any](t *testing.T, c *readthrough.Cache) *readthrough.Repository[T] {
	t.Helper()
	r, err := readthrough.Register[T](c, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// named is a model of the split test, whose rows have a name.
type named interface{ Alpha | Beta | Gamma }

// get reads the row's name through the cache.
func get[T named](t *testing.T, r *readthrough.Repository[T], id int64) string {
	t.Helper()
	row, ok, err := r.Get(t.Context(), id)
	if err != nil || !ok {
		t.Fatalf("%T %d: found %t, %v", row, id, ok, err)
	}
	return Alpha(row).Name
}

// mustGet reads the row, which must be named want unless want is "", so that it is
// cached.
func mustGet[T named](t *testing.T, r *readthrough.Repository[T], id int64, want string) {
	t.Helper()
	if got := get(t, r, id); want != "" && got != want {
		t.Fatalf("%s %d is %q, want %q", r.Table(), id, got, want)
	}
}
