package clustertest

import (
	"context"
	"os"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/readthrough"
)

var servers integration.Shared

func TestMain(m *testing.M) { os.Exit(servers.Run(m)) }

type Widget struct {
	ID   int64 `gorm:"primaryKey"`
	Name string
}

// TestCluster: reads, multi-gets, fenced fills and change-driven invalidation work on a
// Redis Cluster, where every row's value and lease keys must share a slot and rows spread
// over all three masters.
func TestCluster(t *testing.T) {
	t.Parallel()
	cl := integration.NewRedisCluster(t)
	rdb := cl.Client(t)
	pg := servers.Postgres(t).NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	db, err := gorm.Open(postgres.Open(pg.RoleURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.AutoMigrate(&Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(`INSERT INTO widgets SELECT g, 'w' || g FROM generate_series(1, 200) g`).Error; err != nil {
		t.Fatal(err)
	}
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "cl", RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := readthrough.Register[Widget](cache, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The worker first, so its gap flush comes before the fills.
	w, err := invalidator.NewWorker(rdb, invalidator.WorkerOptions{
		Postgres:    pg.RoleURL,
		Stream:      cdc.Options{Slot: "s_" + pg.Name, Publication: "pgcache", Tables: []string{"widgets"}, StatusInterval: 100 * time.Millisecond},
		Invalidator: invalidator.Options{Prefix: "cl"},
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	integration.Eventually(t, "worker ready", w.Ready)

	ids := make([]any, 200)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	for round := range 2 {
		rows, err := repo.GetMany(ctx, ids...)
		if err != nil || len(rows) != 200 {
			t.Fatalf("GetMany round %d: %d rows, %v", round, len(rows), err)
		}
	}
	if s := repo.Stats(); s.Hits != 200 || s.Fills != 200 || s.Loads != 1 {
		t.Fatalf("stats %+v, want 200 fills from one query, then 200 hits", s)
	}

	// Rows landed on every master, each row's two keys in one slot.
	perNode := map[string]int{}
	for _, id := range ids {
		key, _ := repo.Key(id)
		if _, _, err := keys.ParseKey(key); err != nil {
			t.Fatal(err)
		}
		if keys.HashSlot(key) != keys.HashSlot(key[:len(key)-1]+"f") {
			t.Fatalf("value and lease keys of %s in different slots", key)
		}
		node, err := rdb.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		perNode[node.Options().Addr]++
	}
	if len(perNode) != 3 {
		t.Fatalf("rows on %d masters, want 3: %v", len(perNode), perNode)
	}

	if err := db.Exec(`UPDATE widgets SET name = 'changed' WHERE id IN (1, 2, 3)`).Error; err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "changed rows invalidated", func() bool {
		for _, id := range []int64{1, 2, 3} {
			key, _ := repo.Key(id)
			if rdb.Exists(ctx, key).Val() != 0 {
				return false
			}
		}
		return true
	})
	if got, _, err := repo.Get(ctx, int64(2)); err != nil || got.Name != "changed" {
		t.Fatalf("Get after update = %+v, %v", got, err)
	}

	// TRUNCATE scans every master.
	if err := db.Exec(`TRUNCATE widgets`).Error; err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "table flushed on every master", func() bool {
		for _, id := range ids {
			key, _ := repo.Key(id)
			if rdb.Exists(ctx, key).Val() != 0 {
				return false
			}
		}
		return true
	})
}
