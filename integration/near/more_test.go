package near_test

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/readthrough"
)

// TestNearGetMany: GetMany answers from the near tier what it holds, reads the rest
// from Redis in one round trip and keeps it; another process's write reaches it.
func TestNearGetMany(t *testing.T) {
	e := newEnv(t, nil)
	e.exec(t, `INSERT INTO widgets (id, name) SELECT g, 'v0' FROM generate_series(2, 10) g`)
	a := register[Widget](t, e.process(t), nearOn)
	b := register[Widget](t, e.process(t), nearOn)
	ctx := context.Background()
	ids := []any{int64(1), int64(2), int64(3), int64(4), int64(5), int64(6), int64(7), int64(8), int64(9), int64(10)}
	integration.Eventually(t, "GetMany answered in process", func() bool {
		before := a.Stats().NearHits
		rows, err := a.GetMany(ctx, ids...)
		if err != nil || len(rows) != len(ids) {
			t.Fatalf("GetMany: %d rows, %v", len(rows), err)
		}
		return a.Stats().NearHits-before == uint64(len(ids))
	})
	w := Widget{ID: 5, Name: "v1"}
	if err := b.Save(ctx, &w); err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "GetMany to return the other process's write", func() bool {
		rows, err := a.GetMany(ctx, ids...)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.ID == 5 {
				return r.Name == "v1"
			}
		}
		t.Fatal("row 5 missing")
		return false
	})
}

// TestNearSoftDelete: the near tier holds a soft-delete model's row as Postgres holds
// it and applies the reader's scope, as the Redis tier does.
func TestNearSoftDelete(t *testing.T) {
	type Note struct {
		ID        int64 `gorm:"primaryKey"`
		Body      string
		DeletedAt gorm.DeletedAt
	}
	e := newEnv(t, nil)
	if err := e.db.AutoMigrate(&Note{}); err != nil {
		t.Fatal(err)
	}
	e.exec(t, `INSERT INTO notes (id, body) VALUES (1, 'b')`)
	a := register[Note](t, e.process(t), nearOn)
	b := register[Note](t, e.process(t), nearOn)
	inNear(t, a, 1)
	if err := b.Delete(context.Background(), int64(1)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	integration.Eventually(t, "the soft delete seen", func() bool {
		_, ok, err := a.Get(ctx, int64(1))
		if err != nil {
			t.Fatal(err)
		}
		return !ok
	})
	unscoped := a.WithDB(e.open(t).Unscoped())
	integration.Eventually(t, "the soft-deleted row in the near tier", func() bool {
		before := a.Stats().NearHits
		if _, ok, _ := a.Get(ctx, int64(1)); ok {
			t.Fatal("the default scope read a soft-deleted row")
		}
		return a.Stats().NearHits > before
	})
	n, ok, err := unscoped.Get(ctx, int64(1))
	if err != nil || !ok || !n.DeletedAt.Valid {
		t.Fatalf("unscoped near read: %+v, %v, %v; want the row with its deleted_at", n, ok, err)
	}
}

// TestNearRefusedOnRing: a Ring client cannot have a near cache (Redis does not know a
// Ring's shards), and the error says so. Cluster clients can: integration/cluster,
// TestCluster/near_cache.
func TestNearRefusedOnRing(t *testing.T) {
	e := newEnv(t, nil)
	rdb := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": e.rd.Addr()}})
	t.Cleanup(func() { rdb.Close() })
	c, err := readthrough.New(e.db, rdb, readthrough.Options{Prefix: e.prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = readthrough.Register[Widget](c, nearOn)
	if !errors.Is(err, readthrough.ErrConfig) || !errors.Is(err, store.ErrTrackingUnsupported) {
		t.Fatalf("Register with a near cache on a Ring client = %v, want ErrConfig and store.ErrTrackingUnsupported", err)
	}
	t.Logf("refused: %v", err)
}
