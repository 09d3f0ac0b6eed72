// Quickstart: a cached GORM model in front of Postgres, with Redis.
//
//	make demo        (or: go run ./examples/quickstart)
//
// It starts Postgres and Redis in containers through testcontainers (nothing to install
// but Docker), or uses PGCACHE_POSTGRES_URL and PGCACHE_REDIS_ADDR when they are set.
// It then shows misses turning into hits, a write invalidating a row, a negative entry,
// and the stale-fill race being refused, and ends with a summary.
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

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/readthrough"
)

// Product is the model the demo caches.
type Product struct {
	ID    int64 `gorm:"primaryKey"`
	Name  string
	Price int
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log); err != nil {
		log.Error("quickstart failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	pgURL, redisAddr, stop, err := servers(ctx, log)
	if err != nil {
		return err
	}
	defer stop()

	db, err := gorm.Open(postgres.Open(pgURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}
	if err := db.Migrator().DropTable(&Product{}); err != nil {
		return err
	}
	if err := db.AutoMigrate(&Product{}); err != nil {
		return err
	}
	if err := db.Exec(`INSERT INTO products (id, name, price) SELECT g, 'product ' || g, g * 100 FROM generate_series(1, 1000) g`).Error; err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()

	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "quickstart", Logger: log})
	if err != nil {
		return err
	}
	products, err := readthrough.Register[Product](cache, readthrough.ModelOptions{TTL: 10 * time.Minute})
	if err != nil {
		return err
	}
	if err := products.Invalidate(ctx, ids(1, 100)...); err != nil { // a clean start on a reused Redis
		return err
	}

	fmt.Println("1. Reading products 1..100 twice: the first pass misses and fills, the second hits.")
	var missLat, hitLat []time.Duration
	for pass := range 2 {
		for _, id := range ids(1, 100) {
			start := time.Now()
			if _, _, err := products.Get(ctx, id); err != nil {
				return err
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

	fmt.Println("2. A write commits, then invalidates: the next read sees it.")
	if err := db.Exec(`UPDATE products SET price = 1 WHERE id = 7`).Error; err != nil {
		return err
	}
	if err := products.Invalidate(ctx, int64(7)); err != nil {
		return err
	}
	p, _, err := products.Get(ctx, int64(7))
	if err != nil {
		return err
	}
	fmt.Printf("   product 7 now costs %d\n\n", p.Price)

	fmt.Println("3. A missing row is cached as missing (a negative entry).")
	for range 2 {
		if _, ok, err := products.Get(ctx, int64(5000)); err != nil || ok {
			return fmt.Errorf("product 5000: found=%v err=%v", ok, err)
		}
	}
	fmt.Printf("   negative hits: %d\n\n", products.Stats().NegativeHits)

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

	s = products.Stats()
	reads := s.Hits + s.NegativeHits + s.Misses
	fmt.Println("Summary")
	fmt.Printf("   %-22s %.1f%%\n", "hit ratio", 100*float64(s.Hits+s.NegativeHits)/float64(reads))
	fmt.Printf("   %-22s %v\n", "hit latency p50", p50(hitLat))
	fmt.Printf("   %-22s %v\n", "miss latency p50", p50(missLat))
	fmt.Printf("   %-22s %+v\n", "stats", s)
	return nil
}

// servers returns the servers named by the environment, or starts containers.
func servers(ctx context.Context, log *slog.Logger) (pgURL, redisAddr string, stop func(), err error) {
	pgURL, redisAddr = os.Getenv("PGCACHE_POSTGRES_URL"), os.Getenv("PGCACHE_REDIS_ADDR")
	if pgURL != "" && redisAddr != "" {
		return pgURL, redisAddr, func() {}, nil
	}
	log.Info("starting Postgres and Redis containers (set PGCACHE_POSTGRES_URL and PGCACHE_REDIS_ADDR to use your own)")
	pg, err := integration.StartPostgres(ctx, integration.PostgresOptions{})
	if err != nil {
		return "", "", nil, err
	}
	rd, err := integration.StartRedis(ctx, integration.RedisOptions{})
	if err != nil {
		_ = pg.Close(ctx)
		return "", "", nil, err
	}
	return pg.URL(), rd.Addr(), func() {
		ctx := context.WithoutCancel(ctx)
		_ = rd.Close(ctx)
		_ = pg.Close(ctx)
	}, nil
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
