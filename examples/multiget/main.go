// Multiget: many rows by primary key in one Redis round trip and one SQL query.
//
//	eval "$(scripts/env.sh)" && go run -C examples ./multiget
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/examples/internal/demo"
	"github.com/pgcache/pgcache/readthrough"
)

type Order struct {
	ID       int64 `gorm:"primaryKey"`
	Customer string
	Total    int
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log); err != nil {
		log.Error("multiget failed", "error", err)
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
	if err := db.AutoMigrate(&Order{}); err != nil {
		return err
	}
	if err := db.Exec(`INSERT INTO orders SELECT g, 'customer ' || (g % 17), g * 3 FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING`).Error; err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	// A multi-get sends one pipeline for many rows; give it more than the default
	// 100ms, so that a slow machine does not turn its fills into fallbacks.
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "multiget", RedisTimeout: time.Second})
	if err != nil {
		return err
	}
	orders, err := readthrough.Register[Order](cache, readthrough.ModelOptions{})
	if err != nil {
		return err
	}

	ids := make([]any, 0, 101)
	for id := int64(1); id <= 100; id++ {
		ids = append(ids, id)
	}
	ids = append(ids, int64(99999)) // no such order: left out of the result, cached as absent
	if err := orders.Invalidate(ctx, ids...); err != nil {
		return err
	}
	for _, pass := range []struct {
		name    string
		queries uint64 // cold: one IN query for all the misses; warm: none
	}{{"cold", 1}, {"warm", 0}} {
		start := time.Now()
		before := orders.Stats()
		rows, err := orders.GetMany(ctx, ids...)
		if err != nil {
			return err
		}
		s := orders.Stats()
		fmt.Printf("%s: %d orders in %v (hits %d, misses %d, SQL queries %d)\n", pass.name, len(rows),
			time.Since(start).Round(time.Microsecond), s.Hits-before.Hits, s.Misses-before.Misses, s.Loads-before.Loads)
		if len(rows) != 100 || s.Loads-before.Loads != pass.queries {
			return fmt.Errorf("%s: %d orders in %d SQL queries, want 100 in %d", pass.name, len(rows), s.Loads-before.Loads, pass.queries)
		}
	}
	return nil
}
