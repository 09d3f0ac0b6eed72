// Quickstart: a cached GORM model in front of Postgres, with Redis.
//
//	make demo        (or: go run -C examples ./quickstart)
//
// It starts Postgres and Redis in containers through testcontainers (nothing to install
// but Docker), or uses PGCACHE_POSTGRES_URL and PGCACHE_REDIS_ADDR when they are set.
// It runs the invalidation worker in-process and shows misses turning into hits, a raw
// SQL UPDATE invalidated from Postgres' change stream within milliseconds, a negative
// entry, a stampede of concurrent misses making one query, and a write-back save
// flushed to Postgres; it ends with a summary.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/examples/internal/demo"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

// Product is the model the demo caches.
type Product struct {
	ID    int64 `gorm:"primaryKey"`
	Name  string
	Price int
}

// Cart is saved with write-back: Save returns once Redis holds the write durably, and
// a flusher applies it to Postgres in batches.
type Cart struct {
	ID    int64 `gorm:"primaryKey"`
	Items int
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log); err != nil {
		log.Error("quickstart failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	pgURL, redisAddr, stop, err := demo.Servers(ctx, log)
	if err != nil {
		return err
	}
	defer stop()

	db, err := gorm.Open(postgres.Open(pgURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	products, err := setup(ctx, log, db, rdb)
	if err != nil {
		return err
	}
	// The invalidation worker, in-process here (cmd/pgcache-worker runs it on its own).
	// A new slot means a gap: it first invalidates every cached product.
	stopWorker, err := demo.StartWorker(ctx, log, rdb, invalidator.WorkerOptions{
		Postgres:    pgURL,
		Stream:      cdc.Options{Slot: "quickstart", Publication: "quickstart", Tables: []string{"products"}, StatusInterval: time.Second},
		Invalidator: invalidator.Options{Prefix: "quickstart"},
	})
	if err != nil {
		return err
	}
	defer stopWorker()

	missLat, hitLat, err := readTwice(ctx, products)
	if err != nil {
		return err
	}
	lag, err := rawUpdate(ctx, db, rdb, products)
	if err != nil {
		return err
	}
	if err := negative(ctx, products); err != nil {
		return err
	}
	if err := stampede(ctx, products); err != nil {
		return err
	}
	fmt.Println("5. A write-back save returns once Redis holds it; a flusher applies it to Postgres.")
	if err := writeBack(ctx, db, rdb); err != nil {
		return err
	}
	summary(products.Stats(), missLat, hitLat, lag)
	return nil
}

// setup creates and fills the products table and registers the cached model.
func setup(ctx context.Context, log *slog.Logger, db *gorm.DB, rdb *redis.Client) (*readthrough.Repository[Product], error) {
	if err := db.Migrator().DropTable(&Product{}); err != nil {
		return nil, err
	}
	if err := db.AutoMigrate(&Product{}); err != nil {
		return nil, err
	}
	if err := db.Exec(`INSERT INTO products (id, name, price) SELECT g, 'product ' || g, g * 100 FROM generate_series(1, 1000) g`).Error; err != nil {
		return nil, err
	}
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "quickstart", Logger: log})
	if err != nil {
		return nil, err
	}
	return readthrough.Register[Product](cache, readthrough.ModelOptions{TTL: 10 * time.Minute})
}

// readTwice is step 1: it returns the latencies of the misses and of the hits.
func readTwice(ctx context.Context, products *readthrough.Repository[Product]) (missLat, hitLat []time.Duration, err error) {
	fmt.Println("1. Reading products 1..100 twice: the first pass misses and fills, the second hits.")
	for pass := range 2 {
		for _, id := range ids(1, 100) {
			start := time.Now()
			if _, _, err := products.Get(ctx, id); err != nil {
				return nil, nil, err
			}
			if pass == 0 {
				missLat = append(missLat, time.Since(start))
			} else {
				hitLat = append(hitLat, time.Since(start))
			}
		}
	}
	s := products.Stats()
	fmt.Printf("   misses %d, hits %d, database queries %d\n\n", s.Misses, s.Hits, s.Loads)
	return missLat, hitLat, nil
}

// rawUpdate is step 2: it returns the invalidation lag.
func rawUpdate(ctx context.Context, db *gorm.DB, rdb *redis.Client, products *readthrough.Repository[Product]) (time.Duration, error) {
	fmt.Println("2. Raw SQL changes product 7, outside the library; the worker sees the commit")
	fmt.Println("   in Postgres' change stream and deletes the cached row.")
	key, err := products.Key(int64(7))
	if err != nil {
		return 0, err
	}
	if err := db.Exec(`UPDATE products SET price = 1 WHERE id = 7`).Error; err != nil {
		return 0, err
	}
	committed := time.Now()
	for rdb.Exists(ctx, key).Val() == 1 {
		if time.Since(committed) > 10*time.Second {
			return 0, fmt.Errorf("product 7 still cached 10s after the commit")
		}
		time.Sleep(100 * time.Microsecond) // polling the demo's own observation
	}
	lag := time.Since(committed)
	p, _, err := products.Get(ctx, int64(7))
	if err != nil {
		return 0, err
	}
	fmt.Printf("   invalidated %v after the commit; product 7 now costs %d\n\n", lag.Round(10*time.Microsecond), p.Price)
	return lag, nil
}

// negative is step 3.
func negative(ctx context.Context, products *readthrough.Repository[Product]) error {
	fmt.Println("3. A missing row is cached as missing (a negative entry).")
	for range 2 {
		if _, ok, err := products.Get(ctx, int64(5000)); err != nil || ok {
			return fmt.Errorf("product 5000: found=%v err=%v", ok, err)
		}
	}
	fmt.Printf("   negative hits: %d\n\n", products.Stats().NegativeHits)
	return nil
}

// stampede is step 4.
func stampede(ctx context.Context, products *readthrough.Repository[Product]) error {
	fmt.Println("4. 200 concurrent readers miss the same row: one database query.")
	if err := products.Invalidate(ctx, int64(8)); err != nil {
		return err
	}
	before := products.Stats().Loads
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() { _, _, _ = products.Get(ctx, int64(8)) })
	}
	wg.Wait()
	fmt.Printf("   database queries: %d\n\n", products.Stats().Loads-before)
	return nil
}

func summary(s readthrough.Stats, missLat, hitLat []time.Duration, lag time.Duration) {
	reads := s.Hits + s.NegativeHits + s.Misses
	fmt.Println("Summary")
	fmt.Printf("   %-22s %.1f%%\n", "hit ratio, all reads", 100*float64(s.Hits+s.NegativeHits)/float64(reads))
	fmt.Printf("   %-22s %v\n", "hit latency p50", p50(hitLat))
	fmt.Printf("   %-22s %v\n", "miss latency p50", p50(missLat))
	fmt.Printf("   %-22s %v\n", "invalidation lag", lag.Round(10*time.Microsecond))
	fmt.Printf("   %-22s %+v\n", "stats", s)
}

func ids(from, to int64) []any {
	var out []any
	for id := from; id <= to; id++ {
		out = append(out, id)
	}
	return out
}

func p50(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(time.Microsecond)
}

func writeBack(ctx context.Context, db *gorm.DB, rdb *redis.Client) error {
	if err := db.Migrator().DropTable(&Cart{}); err != nil {
		return err
	}
	if err := db.AutoMigrate(&Cart{}); err != nil {
		return err
	}
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "quickstart"})
	if err != nil {
		return err
	}
	carts, err := readthrough.Register[Cart](cache, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	if err != nil {
		return err
	}
	start := time.Now()
	if err := carts.Save(ctx, &Cart{ID: 1, Items: 3}); err != nil {
		return err
	}
	saved := time.Since(start)
	c, _, err := carts.Get(ctx, int64(1))
	if err != nil {
		return err
	}
	var inDB int64
	db.Model(&Cart{}).Count(&inDB)
	fmt.Printf("   saved in %v; readers see %d items; rows in Postgres: %d\n", saved.Round(time.Microsecond), c.Items, inDB)

	flusher, err := writeback.NewFlusher(db, rdb, writeback.FlusherOptions{Prefix: "quickstart"})
	if err != nil {
		return err
	}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- flusher.Run(fctx) }()
	for flusher.Stats().Applied == 0 {
		select {
		case err := <-done:
			stop()
			return fmt.Errorf("flusher stopped: %w", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	stop()
	if err := <-done; err != nil {
		return err
	}
	var row Cart
	if err := db.First(&row, 1).Error; err != nil {
		return err
	}
	fmt.Printf("   after the flush Postgres holds cart 1 with %d items\n\n", row.Items)
	return nil
}
