package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/readthrough"
)

// Part has a unique code and belongs to a box.
type Part struct {
	ID   int64  `gorm:"primaryKey"`
	Code string `gorm:"uniqueIndex"`
	Box  int64
}

// testLookups: unique and list lookups on a Redis Cluster. Each entry and its fence
// share a slot (a fenced fill is one script over both, which Cluster refuses across
// slots, and a racing fill is refused), entries spread over the masters, and the
// multi-gets of entries and of a list's members, pipelined per node, answer every
// value.
func testLookups(t *testing.T, rdb *redis.ClusterClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, repo := cachedModel[Part](t, rdb, "cl-lk", `INSERT INTO parts SELECT g, 'c' || g, g % 10 FROM generate_series(1, 200) g`,
		readthrough.ModelOptions{Unique: [][]string{{"Code"}}, Lists: [][]string{{"Box"}}})

	codes := make([]any, 50)
	for i := range codes {
		codes[i] = fmt.Sprintf("c%d", i*4+1)
	}
	for round := range 2 {
		for box := range int64(10) {
			rows, err := repo.ListBy("Box").Get(ctx, box)
			if err != nil || len(rows) != 20 {
				t.Fatalf("round %d: box %d has %d parts, %v; want 20", round, box, len(rows), err)
			}
		}
		rows, err := repo.By("Code").GetMany(ctx, codes...)
		if err != nil || len(rows) != len(codes) {
			t.Fatalf("round %d: GetMany by code: %d rows, %v", round, len(rows), err)
		}
	}
	if s := repo.Stats(); s.List.Hits != 10 || s.Unique.Hits != 50 || s.Unique.Stale+s.List.Stale != 0 {
		t.Fatalf("stats %+v, want every list and code a hit the second round", s)
	}

	perNode := map[string]int{}
	for box := range int64(10) {
		key, err := repo.ListBy("Box").Key(box)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := keys.ParseLookupKey(key); err != nil {
			t.Fatal(err)
		}
		if keys.HashSlot(key) != keys.HashSlot(key[:len(key)-1]+"f") {
			t.Fatalf("entry and fence of %s in different slots", key)
		}
		node, err := rdb.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		perNode[node.Options().Addr]++
	}
	if len(perNode) < 2 {
		t.Fatalf("list entries on %d masters, want them spread: %v", len(perNode), perNode)
	}

	// A row moved into box 3 while a fill of box 3 is between its load and its store,
	// invalidated as the worker would: the fill is refused, the next read sees it.
	if err := repo.ListBy("Box").Invalidate(ctx, int64(3)); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	key, _ := repo.ListBy("Box").Key(int64(3))
	rctx := testhooks.WithRead(ctx, &testhooks.Read{AfterLoad: func(k string) {
		if k != key {
			return
		}
		once.Do(func() {
			if err := db.Exec(`UPDATE parts SET box = 3 WHERE id = 1`).Error; err != nil {
				t.Error(err)
			}
			if err := repo.Invalidate(ctx, int64(1)); err != nil {
				t.Error(err)
			}
			if err := repo.ListBy("Box").Invalidate(ctx, int64(3)); err != nil {
				t.Error(err)
			}
		})
	}})
	if rows, err := repo.ListBy("Box").Get(rctx, int64(3)); err != nil || len(rows) != 20 {
		t.Fatalf("racing read: %d parts, %v; want the 20 it loaded", len(rows), err)
	}
	if rows, err := repo.ListBy("Box").Get(ctx, int64(3)); err != nil || len(rows) != 21 || rows[0].ID != 1 {
		t.Fatalf("after the move: %d parts, %v; want 21, part 1 first", len(rows), err)
	}
	if s := repo.Stats(); s.FillsRefused != 1 {
		t.Fatalf("stats %+v, want the racing fill refused", s)
	}
}
